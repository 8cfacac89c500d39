"""Anthropic's Messages API (what Claude Code speaks), as an adapter over the serving core.

``protocol`` holds the wire types (each converts itself to a core request), ``bodies``
writes message bodies and the named SSE events, ``errors`` is this API's error table and
route class, ``routes`` has the handlers.
"""
