"""Plait server: event API → runner → queue → executor → drivers → state / history."""

__version__ = "0.1.0"
