"""The Inngest protocol's server side on the HTTP port: what apps on the official Inngest
SDKs call (registration, events via server/events, the REST API) and app sync by URL."""

from server.api.inngest.gateway import InngestGateway
from server.api.inngest.sync import AppSync, SyncResult

__all__ = ["AppSync", "InngestGateway", "SyncResult"]
