"""Version of the plait-sdk distribution, sent to the server at registration."""

__version__ = "0.1.0"
