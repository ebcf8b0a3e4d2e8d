"""The HTTP driver: functions served by apps on the official Inngest SDKs, called over HTTP."""

from server.drivers.http.driver import HttpDriver

__all__ = ["HttpDriver"]
