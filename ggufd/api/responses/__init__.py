"""OpenAI's Responses API (what Codex speaks), as an adapter over the serving core.

``protocol`` holds the wire types (input items, tools, options) and their conversion,
``bodies`` writes response objects and the stream of response events, ``store`` keeps
stored responses for `previous_response_id` and `GET`, ``routes`` has the handlers.
"""
