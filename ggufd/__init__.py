"""ggufd: a local OpenAI-compatible inference server for GGUF models.

A drop-in replacement for ``python -m llama_cpp.server`` built on llama.cpp, with
continuous batching over parallel sequences. Run it with ``ggufd`` or ``python -m ggufd``.
"""

__version__ = "0.1.0"
