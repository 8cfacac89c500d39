"""llama.cpp's llama-server native routes (/completion, /tokenize, /infill, /props, ...)
and llama_cpp.server's /extras, as adapters over the serving core.

``protocol`` holds the wire types with llama-server's field names and defaults,
``bodies`` writes its completion bodies and SSE lines, ``errors`` its error shape,
``routes`` the handlers.
"""
