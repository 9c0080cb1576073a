"""Where a Redis lives, read from one URL: a single server, a Cluster or a Sentinel set.

Three forms (``rediss`` instead of ``redis`` for TLS):

- ``redis://[user:password@]host:port/db`` (or ``unix://``): one server, as redis-py reads it.
- ``redis+cluster://[user:password@]host:port,host:port[/0]``: a Redis Cluster; the
  hosts are seed nodes (any reachable one will do), the database is always 0.
- ``redis+sentinel://[user:password@]host:port,host:port/master[/db]``: the master
  named ``master`` as the Sentinels at those hosts report it; the password is the
  master's, ``?sentinel_password=...`` the Sentinels' own if they require one.

Pure parsing; the clients are made by :mod:`throttle.connect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qs, unquote, urlsplit

from throttle.errors import ConfigError


class Topology(Enum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


_SINGLE_SCHEMES = {"redis", "rediss", "unix"}
_SCHEMES = {
    "redis+cluster": (Topology.CLUSTER, False),
    "rediss+cluster": (Topology.CLUSTER, True),
    "redis+sentinel": (Topology.SENTINEL, False),
    "rediss+sentinel": (Topology.SENTINEL, True),
}

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a URL names. For a single server only ``url`` matters (redis-py reads it)."""

    topology: Topology
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    #: Sentinel: the name of the monitored master, and the Sentinels' own password.
    master: str = ""
    sentinel_password: str | None = None

    @property
    def replicated(self) -> bool:
        """A Cluster or a Sentinel set: a master can fail over to a replica."""
        return self.topology is not Topology.SINGLE


def parse_redis_url(url: str, *, what: str = "redis.url") -> RedisTarget:
    """Read ``url``; ConfigError naming ``what`` if it is none of the three forms."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"{what}: {_redacted(url)!r} is not a URL (redis://host:port/db)")
    scheme = scheme.lower()
    if scheme in _SINGLE_SCHEMES:
        return RedisTarget(Topology.SINGLE, url)
    if scheme not in _SCHEMES:
        known = ", ".join(sorted(_SINGLE_SCHEMES | set(_SCHEMES)))
        raise ConfigError(f"{what}: unknown scheme {scheme!r}; known: {known}")
    topology, ssl = _SCHEMES[scheme]
    parts = urlsplit(f"x://{rest}")
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(credentials)
    default_port = DEFAULT_SENTINEL_PORT if topology is Topology.SENTINEL else DEFAULT_PORT
    hosts = tuple(_host(h, default_port, what) for h in hostlist.split(",") if h)
    if not hosts:
        raise ConfigError(f"{what}: no host in {_redacted(url)!r}")
    path = [unquote(p) for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    if topology is Topology.CLUSTER:
        if len(path) > 1 or (path and path[0] != "0"):
            raise ConfigError(f"{what}: a Redis Cluster has database 0 only")
        return RedisTarget(topology, url, hosts, 0, username, password, ssl)
    if not path or len(path) > 2:
        raise ConfigError(
            f"{what}: name the master, redis+sentinel://host:port,host:port/<master>[/<db>]"
        )
    db = _db(path[1] if len(path) == 2 else "0", what)
    sentinel_password = query.get("sentinel_password", [None])[0]
    return RedisTarget(
        topology, url, hosts, db, username, password, ssl, path[0], sentinel_password
    )


def _credentials(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, sep, password = text.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None)


def _host(text: str, default_port: int, what: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, after = text[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ConfigError(f"{what}: empty host in {text!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: bad port in {text!r}")
    return host, int(port)


def _db(text: str, what: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"{what}: database must be a number, got {text!r}")
    return int(text)


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    credentials, at, hosts = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}"


def check_deployment_urls(redis_url: str, broker_url: str, result_backend: str) -> None:
    """The limiter's URL may be any of the three forms; Celery's broker and result
    backend a single server or a Sentinel master (kombu has no Cluster transport, and
    its queues are multi-key operations). Other brokers (amqp://...) are Celery's affair."""
    parse_redis_url(redis_url, what="redis.url")
    for what, url in (("celery.broker_url", broker_url), ("celery.result_backend", result_backend)):
        if not url.lower().startswith(("redis", "rediss")):
            continue
        if parse_redis_url(url, what=what).topology is Topology.CLUSTER:
            default = " (it defaults to redis.url: set it)" if url == redis_url else ""
            raise ConfigError(
                f"{what}: Celery cannot keep its queues or results on a Redis Cluster{default};"
                " use a single server (redis://) or a Sentinel master (redis+sentinel://)"
            )
