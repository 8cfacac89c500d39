"""llama-server's native routes and llama_cpp.server's /extras, without a model."""
