"""A prefork worker for procrastinate: one supervisor, N forked worker processes."""

from __future__ import annotations

__version__ = "0.1.0"
