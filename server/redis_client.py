"""The server's Redis client: retries with backoff across a blip or a restart, dead peers found
by the kernel, and nothing added per reply on the step path.

The URL picks the client: `redis://`, `rediss://` and `unix://` a single node;
`redis+cluster://host:port[,host:port...]` (or `rediss+cluster://`, TLS) a Redis Cluster,
discovered from any of the nodes listed. Every key one command or script touches shares a hash
tag (server/keys.py), so the cluster client routes each call (EVALSHA by its first key) to the
node serving that slot, and splits a pipeline by slot.
"""

from __future__ import annotations

import socket
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
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
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster(redis: Redis) -> bool:
    """Whether `redis` (as open_redis returned it) is a cluster client."""
    return isinstance(redis, RedisCluster)


def open_redis(url: str) -> Redis:
    """A client of `url` (see the module docstring) with the settings above.

    A cluster client is typed as `Redis`: the commands, pipelines, scripts and pub/sub the
    server uses have the same signatures on both (tests/test_redis_cluster.py runs them)."""
    options: dict[str, Any] = {}
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {
            getattr(socket, name): value for name, value in _KEEPALIVE.items()
            if hasattr(socket, name)}
    common: dict[str, Any] = dict(
        socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=HEALTH_CHECK_INTERVAL_S, **options)
    if is_cluster_url(url):
        return open_cluster(url, **common)
    return Redis.from_url(url, **common)


def open_probe(url: str, timeout_s: float) -> Redis:
    """A client for health probes: its own connections, no retries, `timeout_s` per reply."""
    if is_cluster_url(url):
        return open_cluster(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                            retry=Retry(ExponentialBackoff(), 0))
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


async def drop_connections(redis: Redis) -> None:
    """Closes the client's pooled connections (new ones are opened on the next command)."""
    if isinstance(redis, RedisCluster):
        for node in redis.get_nodes():
            await node.disconnect()
        return
    await redis.connection_pool.disconnect()


def open_cluster(url: str, **options: Any) -> Redis:
    """A RedisCluster of a `redis+cluster://[user:password@]host:port[,host:port...]` URL.
    The database number must be 0 (a cluster has only that one)."""
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    nodes = []
    for address in hosts.split(","):
        parts = urlsplit(f"//{address}")
        if not parts.hostname:
            raise ValueError(f"redis_url '{url}': '{address}' is not host:port")
        nodes.append(ClusterNode(parts.hostname, parts.port or 6379))
    if path.split("?", 1)[0] not in ("", "0"):
        raise ValueError(f"redis_url '{url}': a Redis Cluster has only database 0")
    if userinfo:
        user, _, password = userinfo.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    if scheme.lower() == "rediss+cluster":
        options["ssl"] = True
        query = parse_qs(urlsplit(url).query)
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in query:
                options[name] = query[name][-1]
    return cast(Redis, RedisCluster(startup_nodes=nodes, **options))
