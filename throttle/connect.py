"""The one place Redis clients are made, for every URL form of :mod:`throttle.redis_url`.

    client = connect(config.redis.url, timeout_s=2.0)   # redis.Redis or RedisCluster

A Sentinel URL gives a ``redis.Redis`` whose pool asks the Sentinels for the current
master on every new connection, so after a failover the next command reaches the new
master. A Cluster URL gives a ``RedisCluster``, which follows the slot map (a
failed-over master's slots move to its promoted replica) and retries a command that met
a dead node after refreshing the map.
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from throttle.errors import ConfigError
from throttle.redis_url import RedisTarget, Topology, parse_redis_url

#: What :func:`connect` returns; both run the same commands and scripts (one slot per
#: script on a Cluster: every key of a group carries its hash tag).
RedisClient: TypeAlias = "redis.Redis | RedisCluster"

# redis-py leaves these untyped.
_ClusterNode: Any = ClusterNode
_Sentinel: Any = Sentinel
_AsyncSentinel: Any = AsyncSentinel


def connect(
    url: str,
    *,
    timeout_s: float | None = None,
    max_connections: int | None = None,
    health_check_interval_s: int = 0,
    what: str = "redis.url",
) -> RedisClient:
    """A client for ``url`` (ConfigError naming ``what`` if it is not a Redis URL)."""
    target = parse_redis_url(url, what=what)
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": health_check_interval_s,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    if target.topology is Topology.SINGLE:
        return redis.Redis.from_url(url, **options)
    options.update(_auth(target))
    if target.topology is Topology.CLUSTER:
        nodes = [_ClusterNode(host, port) for host, port in target.hosts]
        return RedisCluster(startup_nodes=nodes, **options)
    master = _sentinel(target, options).master_for(target.master, db=target.db, **options)
    return cast(redis.Redis, master)


def connect_async(
    url: str, *, timeout_s: float | None = None, what: str = "celery.result_backend"
) -> aioredis.Redis:
    """An asyncio client for a single server or a Sentinel master (the result backend's
    forms; the callers of this one do not run on a Cluster: ConfigError)."""
    target = parse_redis_url(url, what=what)
    options: dict[str, Any] = {"socket_timeout": timeout_s}
    if target.topology is Topology.SINGLE:
        return aioredis.from_url(url, **options)
    if target.topology is Topology.CLUSTER:
        raise ConfigError(f"{what}: a Redis Cluster cannot be used here")
    sentinel = _AsyncSentinel(
        list(target.hosts), sentinel_kwargs=_sentinel_kwargs(target, timeout_s)
    )
    master = sentinel.master_for(target.master, db=target.db, **options, **_auth(target))
    return cast(aioredis.Redis, master)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _auth(target: RedisTarget) -> dict[str, Any]:
    auth: dict[str, Any] = {}
    if target.username:
        auth["username"] = target.username
    if target.password:
        auth["password"] = target.password
    if target.ssl:
        auth["ssl"] = True
    return auth


def _sentinel_kwargs(target: RedisTarget, timeout_s: float | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if target.sentinel_password:
        kwargs["password"] = target.sentinel_password
    if target.ssl:
        kwargs["ssl"] = True
    return kwargs


def _sentinel(target: RedisTarget, options: dict[str, Any]) -> Any:
    return _Sentinel(
        list(target.hosts),
        sentinel_kwargs=_sentinel_kwargs(target, options.get("socket_timeout")),
    )
