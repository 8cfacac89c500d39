"""OpenAI's API: chat completions, completions and embeddings, as an adapter over the core.

``protocol`` holds the wire types (each converts itself to a core request), ``bodies``
writes JSON bodies and SSE streams from the core's replies, ``routes`` has the handlers.
"""
