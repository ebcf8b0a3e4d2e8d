"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas, each a
`redis-server --cluster-enabled yes` in a temporary directory, joined with
`redis-cli --cluster create`, torn down with its processes.

The fixture in tests/conftest.py starts one per test session (`redis_cluster`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

HOST = "127.0.0.1"
MASTERS = 3
REPLICAS_PER_MASTER = 1
_START_S = 30.0


@dataclass
class Cluster:
    """The nodes of a running cluster; `url` is what `plait start --redis-url` takes."""

    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports)

    def masters(self) -> list[redis_sync.Redis]:
        """A client of each node that is a master now (after a failover, a former replica)."""
        out = []
        for port in self.ports:
            client = redis_sync.Redis(host=HOST, port=port, socket_timeout=5)
            try:
                if client.info("replication")["role"] == "master":
                    out.append(client)
                    continue
            except redis_sync.ConnectionError:
                pass
            client.close()
        return out

    def flush(self) -> None:
        """Empties every master (replicas follow) and drops their cached scripts."""
        for client in self.masters():
            with client:
                client.flushall()
                client.script_flush()


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _free_ports(n: int) -> list[int]:
    """n loopback ports free now whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _wait(condition: object, what: str, timeout_s: float = _START_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except (redis_sync.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: {what} not reached within {timeout_s:.0f}s")
        time.sleep(0.05)


def _state_ok(port: int) -> bool:
    with redis_sync.Redis(host=HOST, port=port, socket_timeout=2) as client:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text


def _replicas_synced(cluster: Cluster) -> bool:
    """Every master has its replica, and every replica finished its first sync (a replica
    still in its handshake cannot take over: CLUSTER FAILOVER would time out)."""
    masters = replicas = 0
    for port in cluster.ports:
        with redis_sync.Redis(host=HOST, port=port, socket_timeout=2) as client:
            info = client.info("replication")
        if info["role"] == "master":
            masters += 1
            if info["connected_slaves"] != REPLICAS_PER_MASTER \
                    or info["slave0"].get("state") != "online":
                return False
        elif info.get("master_link_status") == "up" \
                and not info.get("master_sync_in_progress"):
            replicas += 1
    return masters == MASTERS and replicas == MASTERS * REPLICAS_PER_MASTER


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[Cluster]:
    """Starts 3 masters + 3 replicas under `directory`, yields once `cluster_state:ok` on
    every node and each master has its replica, then stops them all."""
    cluster = Cluster(_free_ports(MASTERS * (1 + REPLICAS_PER_MASTER)))
    try:
        for port in cluster.ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True)
            cluster.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", HOST,
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000", "--appendonly", "yes",
                 "--dir", str(node_dir), "--save", "", "--protected-mode", "no",
                 "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in cluster.ports:
            _wait(lambda p=port: redis_sync.Redis(host=HOST, port=p).ping(), f"node {port} up")
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"{HOST}:{p}" for p in cluster.ports),
             "--cluster-replicas", str(REPLICAS_PER_MASTER), "--cluster-yes"],
            check=True, capture_output=True, timeout=_START_S)
        for port in cluster.ports:
            _wait(lambda p=port: _state_ok(p), f"cluster_state:ok on {port}")
        _wait(lambda: _replicas_synced(cluster), "replicas synced")
        yield cluster
    finally:
        for process in cluster.processes:
            process.terminate()
        for process in cluster.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
