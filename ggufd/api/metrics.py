"""Prometheus metrics and per-request log lines (filled in by the observability work)."""

from __future__ import annotations

from fastapi import FastAPI

from ggufd.settings import ServerSettings


def install_observability(app: FastAPI, settings: ServerSettings) -> None:
    """Add /metrics and the one-line-per-request log to the app."""
