"""The public surface of server.drivers.http, pinned so it grows only on purpose."""

from __future__ import annotations

import server.drivers.http


def test_the_http_driver_package_exports_exactly_its_public_names() -> None:
    assert sorted(server.drivers.http.__all__) == ["HttpDriver"]
    for name in server.drivers.http.__all__:
        assert getattr(server.drivers.http, name) is not None
