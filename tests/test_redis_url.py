"""Redis URLs: single server, Cluster and Sentinel forms, and what Celery gets."""

from __future__ import annotations

import pytest

from throttle.config import config_from_dict
from throttle.errors import ConfigError
from throttle.redis_url import Topology, parse_redis_url
from workers.celery_urls import celery_url
from workers.message import broker_db_for_release


def test_a_plain_url_is_left_to_redis_py() -> None:
    target = parse_redis_url("redis://:pw@10.0.0.5:6380/3")
    assert (target.topology, target.url, target.replicated) == (
        Topology.SINGLE,
        "redis://:pw@10.0.0.5:6380/3",
        False,
    )


def test_a_cluster_url_lists_seed_nodes() -> None:
    target = parse_redis_url("rediss+cluster://app:s%40cret@a:7000,b,[::1]:7002")
    assert target.topology is Topology.CLUSTER
    assert target.hosts == (("a", 7000), ("b", 6379), ("::1", 7002))
    assert (target.username, target.password, target.ssl, target.db) == ("app", "s@cret", True, 0)


def test_a_sentinel_url_names_its_master_and_database() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1,s2:26380/main/2?sentinel_password=x")
    assert target.topology is Topology.SENTINEL
    assert target.hosts == (("s1", 26379), ("s2", 26380))
    assert (target.master, target.db, target.password, target.sentinel_password) == (
        "main",
        2,
        "pw",
        "x",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "not a URL"),
        ("memcached://a:1", "unknown scheme"),
        ("redis+cluster://a:1/2", "database 0 only"),
        ("redis+cluster://", "no host"),
        ("redis+sentinel://a:26379", "name the master"),
        ("redis+sentinel://a:26379/main/x", "database must be a number"),
        ("redis+sentinel://a:99999/main", "bad port"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_redis_url(url)
    assert str(caught.value).startswith("redis.url")


def test_a_password_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url("nope:s3cret@host")
    assert "s3cret" not in str(caught.value)


def test_celery_gets_kombus_sentinel_form() -> None:
    url = celery_url("redis+sentinel://:pw@s1:26379,s2:26380/main/1", "celery.broker_url")
    assert url.url == "sentinel://:pw@s1:26379/1;sentinel://:pw@s2:26380/1"
    assert url.options == {"master_name": "main"} and url.sentinel
    assert celery_url("redis://h:1/1", "x").url == "redis://h:1/1"
    assert celery_url("amqp://guest@h//", "x").url == "amqp://guest@h//"


def test_the_broker_and_backend_cannot_live_on_a_cluster() -> None:
    cluster = "redis+cluster://a:7000,b:7001"
    with pytest.raises(ConfigError, match=r"celery.broker_url.*defaults to redis.url"):
        config_from_dict({"redis": {"url": cluster}})
    config = config_from_dict(
        {
            "redis": {"url": cluster},
            "celery": {
                "broker_url": "redis+sentinel://s:26379/main/1",
                "result_backend": "redis://h/2",
            },
        }
    )
    assert config.redis.url == cluster
    with pytest.raises(ConfigError, match=r"celery\.result_backend"):
        config_from_dict({"redis": {"url": "redis://h/0"}, "celery": {"result_backend": cluster}})


def test_a_release_pushes_in_redis_only_on_the_limiters_own_server() -> None:
    assert broker_db_for_release("redis://h:1/0", "redis://h:1/4") == 4
    assert broker_db_for_release("redis+cluster://h:1", "redis://h:1/1") is None
    sentinel = "redis+sentinel://s1,s2/main"
    assert broker_db_for_release(f"{sentinel}/0", "redis+sentinel://s2,s1/main/3") == 3
    assert broker_db_for_release(f"{sentinel}/0", "redis+sentinel://s1,s2/other/3") is None
    assert broker_db_for_release(f"{sentinel}/0", "redis://s1:6379/3") is None
