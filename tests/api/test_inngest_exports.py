"""The public surface of server.api.inngest, pinned so it grows only on purpose."""

from __future__ import annotations

import server.api.inngest


def test_the_inngest_gateway_package_exports_exactly_its_public_names() -> None:
    assert sorted(server.api.inngest.__all__) == ["AppSync", "InngestGateway", "SyncResult"]
    for name in server.api.inngest.__all__:
        assert getattr(server.api.inngest, name) is not None
