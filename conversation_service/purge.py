"""Purge: hard-delete what has been soft-deleted for longer than RESTORE_WINDOW_DAYS (issue 14)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """The `flask --app conversation_service purge` command (and the in-process schedule, when set)."""
