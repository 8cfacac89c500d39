"""Ollama's API (`/api/*`, and `HEAD /` / `GET /`), as an adapter over the serving core.

``protocol`` holds the wire types (each converts itself to a core request), ``bodies``
writes the JSON bodies and NDJSON streams, ``models`` the model cards (tags, show, ps)
and the Ollama names, ``errors`` the error shape, ``routes`` the handlers.
"""
