"""The serving core: one flow from an internal chat or text request to the engine and back.

``types`` holds the internal requests and reply events every wire protocol converts to and
from; ``core`` renders prompts, builds grammars, submits to the engine and parses replies;
``reply`` turns engine events into reply events; ``model`` is a served model (its engine,
chat template and tool dialect); ``record`` is what is known about one request, for the
request log and metrics.
"""
