"""Erasure: every row of one user removed, a tombstone without personal data kept. Being built: issue 14."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """The `erase-user` command and the operator's internal route (service token only)."""
