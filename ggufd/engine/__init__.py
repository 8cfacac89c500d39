"""Inference side: worker process, scheduler, llama.cpp runner, sampling.

Never imports fastapi or pydantic.
"""
