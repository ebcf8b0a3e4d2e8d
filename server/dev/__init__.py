"""Embedded mode of `plait dev`: the private Redis that Plait starts and stops itself."""

from server.dev.redis import EmbeddedRedis

__all__ = ["EmbeddedRedis"]
