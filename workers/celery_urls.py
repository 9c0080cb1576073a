"""Celery's broker and result backend URLs in kombu's own forms.

The throttle's configuration names every Redis the same way (``throttle/redis_url.py``):
``redis+sentinel://h1:26379,h2:26379/<master>/<db>`` becomes kombu's
``sentinel://h1:26379/<db>;sentinel://h2:26379/<db>`` with the master's name in the
transport options. A single server's URL passes as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from throttle.errors import ConfigError
from throttle.redis_url import Topology, parse_redis_url


@dataclass(frozen=True)
class CeleryUrl:
    url: str
    #: Transport options the URL needs (kombu's key names).
    options: dict[str, Any] = field(default_factory=dict)
    sentinel: bool = False


def celery_url(url: str, what: str) -> CeleryUrl:
    if not url.lower().startswith(("redis", "rediss")):
        return CeleryUrl(url)  # amqp:// and the like: Celery's affair
    target = parse_redis_url(url, what=what)
    if target.topology is Topology.SINGLE:
        return CeleryUrl(url)
    if target.topology is Topology.CLUSTER:
        raise ConfigError(f"{what}: Celery cannot use a Redis Cluster")
    if target.ssl:
        raise ConfigError(f"{what}: TLS to a Sentinel master is not supported for Celery")
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    urls = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.hosts)
    options: dict[str, Any] = {"master_name": target.master}
    if target.sentinel_password:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return CeleryUrl(urls, options, sentinel=True)
