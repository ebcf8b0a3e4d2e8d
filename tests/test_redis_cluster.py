"""server/redis_client.py on a real Redis Cluster (tests/cluster_support.py): the URL picks the
client, pipelined scripts reach the node of their slot, and the history writer drains the
streams of shards that live on different masters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis as redis_sync
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from server.history import migrate, open_database
from server.history.writer import HistoryWriter
from server.keys import Keys
from server.luascript import call_pipelined
from server.redis_client import drop_connections, is_cluster, open_cluster, open_redis
from tests.cluster_support import HOST, Cluster
from tests.e2e.harness import eventually

_ports = st.integers(min_value=1, max_value=65535)


@given(st.lists(_ports, min_size=1, max_size=6))
def test_a_cluster_url_lists_every_startup_node(ports: list[int]) -> None:
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    client = open_cluster(url)
    assert isinstance(client, RedisCluster)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == \
        list(dict.fromkeys(("127.0.0.1", p) for p in ports))


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000/3",
                                 "redis+cluster://:7000", "rediss+cluster://127.0.0.1:7000,/"])
def test_a_cluster_url_with_a_database_or_without_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url"):
        open_cluster(url)


def test_a_single_node_url_still_opens_a_plain_client() -> None:
    client = open_redis("redis://127.0.0.1:6379/2")
    assert type(client) is Redis and not is_cluster(client)
    assert is_cluster(open_redis("REDIS+CLUSTER://127.0.0.1:7000"))
    tls = open_redis("rediss+cluster://u:p%40ss@127.0.0.1:7000")
    assert is_cluster(tls)


@pytest.fixture
async def cluster_client(redis_cluster_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_cluster_url)
    yield client
    await client.aclose()


async def test_pipelined_scripts_of_every_shard_run_on_their_own_masters(
        cluster_client: Redis, redis_cluster: Cluster) -> None:
    keys = Keys(shards=16)
    script = AsyncScript(cluster_client, "redis.call('SET', KEYS[1], ARGV[1]) "
                                         "return redis.call('GET', KEYS[1])")
    calls = [(script, [sk.lease_seq], [f"v{sk.shard}"]) for sk in keys.all_shards()]
    # Twice: the first meets NOSCRIPT on every master and loads it there.
    for _ in range(2):
        replies = await call_pipelined(cluster_client, calls)
        assert replies == [f"v{n}".encode() for n in range(16)]
    masters = redis_cluster.masters()
    try:
        holding = [m for m in masters if m.dbsize() > 0]
    finally:
        for m in masters:
            m.close()
    assert len(holding) == 3  # 16 shards' slots spread over every master
    await drop_connections(cluster_client)
    assert await cluster_client.get(keys.shard(3).lease_seq) == b"v3"


async def test_the_history_writer_drains_shards_on_every_master(
        cluster_client: Redis, database_url: str) -> None:
    keys = Keys(shards=8)
    engine = await open_database(database_url)
    await migrate(engine)
    try:
        writer = HistoryWriter(cluster_client, engine, keys, "writer-1")
        assert await writer.drain_once() == 0
        for sk in keys.all_shards():
            await cluster_client.xadd(sk.history, {
                "k": "run", "run": f"run-{sk.shard}", "fn": "f", "app": "a", "event": "e",
                "ts": 1})
        applied = await eventually(writer.drain_once, lambda n: n > 0, what="entries applied")
        assert applied == 8
        for sk in keys.all_shards():
            assert await cluster_client.xlen(sk.history) == 0
    finally:
        await engine.dispose()


async def test_the_client_follows_a_manual_master_failover(
        cluster_client: Redis, redis_cluster: Cluster) -> None:
    """CLUSTER FAILOVER on a replica (it syncs first): the server's client answers MOVED by
    refreshing its slot map, for plain commands and pipelined scripts alike."""
    sk = Keys(shards=1).shard(0)
    await cluster_client.set(sk.lease_seq, 41)
    slot = cluster_client.keyslot(sk.lease_seq)
    owner = cluster_client.get_node_from_key(sk.lease_seq)
    assert owner is not None
    with redis_sync.Redis(host=owner.host, port=owner.port) as master:
        replica_info = master.info("replication")["slave0"]
    # The nodes bind loopback only (tests/cluster_support.py): the replica is on HOST too.
    with redis_sync.Redis(host=HOST, port=int(replica_info["port"])) as replica:
        replica.execute_command("CLUSTER", "FAILOVER")
        await eventually(lambda: _role(replica), lambda r: r == "master", 30,
                         f"the replica of slot {slot} promoted")
    assert await cluster_client.incr(sk.lease_seq) == 42
    script = AsyncScript(cluster_client, "return redis.call('INCR', KEYS[1])")
    assert await call_pipelined(cluster_client, [(script, [sk.lease_seq], [])]) == [43]


async def _role(client: redis_sync.Redis) -> str:
    return str(client.info("replication")["role"])
