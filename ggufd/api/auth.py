"""API keys and CORS: who may call the API (filled in by the access work of issue 5)."""

from __future__ import annotations

from fastapi import FastAPI

from ggufd.settings import ServerSettings


def install_access(app: FastAPI, settings: ServerSettings) -> None:
    """Add the API-key check and CORS to the app, as the settings ask."""
