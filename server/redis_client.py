"""The server's Redis client: retries with backoff across a blip or a restart, dead peers found
by the kernel, and nothing added per reply on the step path.
"""

from __future__ import annotations

import socket
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

# A command that meets a dropped connection (Redis restarting, a failover) is sent again
# after 0.1, 0.2 and 0.4 s on a new connection; longer outages reach the roles, which are
# restarted with their own backoff (server/supervise.py).
RETRIES = 3
CONNECT_TIMEOUT_S = 5.0
# A connection idle this long is PINGed before its next command: after a Redis restart the
# command goes out on a live connection instead of a dead one.
HEALTH_CHECK_INTERVAL_S = 30
# No per-reply socket timeout: redis-py would wrap every reply of a pipeline in a timeout
# context (and every send in wait_for). A peer that vanished without closing (no RST) is
# found by TCP instead: keepalive probes after 5 s idle, and unacknowledged data or probes
# for 15 s end the connection. Blocking reads (XREADGROUP BLOCK, pub/sub) are unaffected.
_KEEPALIVE: dict[str, int] = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3,
                              "TCP_USER_TIMEOUT": 15_000}


def open_redis(url: str) -> Redis:
    """A client of `url` (redis://, rediss:// or unix://) with the settings above."""
    options: dict[str, Any] = {}
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {
            getattr(socket, name): value for name, value in _KEEPALIVE.items()
            if hasattr(socket, name)}
    return Redis.from_url(
        url, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=HEALTH_CHECK_INTERVAL_S, **options)
