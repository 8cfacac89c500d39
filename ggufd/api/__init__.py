"""HTTP side: FastAPI app, OpenAI routes, wire types, response bodies, errors.

Never imports llama_cpp.
"""
