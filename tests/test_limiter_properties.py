"""Property test: the Redis limiter and the reference model agree on any operation sequence.

Hypothesis draws a sequence of admissions (random costs, some with a max wait), cancels,
settles and pauses; each is applied to Redis, then replayed on the model at the
server's clock as Redis reported it. Every admission must get the same slot.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.connect import connect
from throttle.keys import KeyBuilder
from throttle.limiter import Observed, RedisLimiter
from throttle.limits import Algorithm, Dimension, LimitGroup
from throttle.model import LimiterModel

pytestmark = pytest.mark.integration

GROUP = LimitGroup(
    "prop",
    (
        Dimension.parse("requests", "20/s"),
        Dimension.parse("tokens", "2000/2s"),
        Dimension("rolling", 1500, 1.0, Algorithm.SLIDING),
    ),
    concurrency=3,
    headroom=0.02,
    cold_start=0.5,
)
#: The same with tokens as an ``auto`` limit: it starts at 500/2s and follows whatever
#: limit the headers report, higher or lower, and its multiplier may pass 1.
AUTO_GROUP = LimitGroup(
    "prop-auto",
    (
        Dimension.parse("requests", "20/s"),
        Dimension("tokens", 500, 2.0, auto=True),
        Dimension("rolling", 1500, 1.0, Algorithm.SLIDING),
    ),
    concurrency=3,
    headroom=0.02,
    cold_start=0.5,
)

admit_op = st.tuples(
    st.just("admit"),
    st.integers(0, 1),
    st.integers(0, 1960),
    st.integers(0, 1470),
    st.one_of(st.none(), st.integers(0, 400)),
)
cancel_op = st.tuples(st.just("cancel"), st.integers(0, 30))
observed = st.one_of(
    st.none(), st.tuples(st.integers(0, 2000), st.sampled_from([None, 1200, 2000, 4000]))
)
settle_op = st.tuples(st.just("settle"), st.integers(0, 30), st.integers(-1500, 1500), observed)
#: A pause; with a 1 it answers a provider 429 (AIMD decrease, once per epoch).
pause_op = st.tuples(
    st.just("pause"), st.integers(1, 300), st.one_of(st.none(), st.integers(0, 30))
)
operations = st.lists(st.one_of(admit_op, admit_op, cancel_op, settle_op, pause_op), max_size=25)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
@pytest.mark.parametrize("group", [GROUP, AUTO_GROUP], ids=["configured", "auto"])
def test_redis_and_model_agree(
    redis_url: str, group: LimitGroup, ops: list[tuple[object, ...]]
) -> None:
    client = connect(redis_url)
    limiter = RedisLimiter(client, keys=KeyBuilder(f"p{uuid.uuid4().hex[:8]}"))
    model = LimiterModel()
    admitted: list[str] = []
    admitted_at: dict[str, float] = {}
    try:
        for op in ops:
            kind = op[0]
            if kind == "admit":
                _, requests, tokens, rolling, max_wait_ms = op
                costs = {"requests": requests, "tokens": tokens, "rolling": rolling}
                max_wait_s = None if max_wait_ms is None else int(max_wait_ms) / 1000  # type: ignore[call-overload]
                got = limiter.admit(group, costs, max_wait_s=max_wait_s)  # type: ignore[arg-type]
                want = model.admit(
                    group,
                    costs,  # type: ignore[arg-type]
                    got.reservation,
                    now_ms=got.now_ms,
                    max_wait_ms=max_wait_ms,  # type: ignore[arg-type]
                )
                assert got.reserved == want.reserved
                assert got.wait_s * 1000 == pytest.approx(max(want.wait_ms, 0), abs=0.005)
                assert got.lease == want.lease
                if got.reserved:
                    admitted.append(got.reservation)
                    admitted_at[got.reservation] = got.now_ms
            elif kind == "cancel" and admitted:
                rid = admitted[int(op[1]) % len(admitted)]  # type: ignore[call-overload]
                at = limiter.cancel(group, rid)
                assert (at is not None) == model.cancel(group, rid, now_ms=at or 0.0)
            elif kind == "settle" and admitted:
                rid = admitted[int(op[1]) % len(admitted)]  # type: ignore[call-overload]
                deltas = {"tokens": float(op[2])}  # type: ignore[arg-type]
                seen = op[3]
                heard = {}
                if seen is not None:
                    remaining, limit = seen  # type: ignore[misc]
                    heard = {"tokens": Observed(float(remaining), limit, 0.0)}
                settled = limiter.settle(group, rid, deltas, heard)
                at = settled.now_ms if settled else 0.0
                model_heard = {k: (v.remaining, v.limit, v.granularity) for k, v in heard.items()}
                done = model.settle(group, rid, deltas, observed=model_heard, now_ms=at)
                assert (settled is not None) == done
                if settled is not None:
                    assert settled.multiplier == pytest.approx(model.multiplier(group))
            elif kind == "pause":
                duration_ms = int(op[1])  # type: ignore[call-overload]
                limited = op[2] is not None
                paused = limiter.pause(group, duration_ms / 1000, rate_limited=limited)
                want_until = model.pause(
                    group, duration_ms, rate_limited=limited, now_ms=paused.now_ms
                )
                assert paused.multiplier == pytest.approx(model.multiplier(group))
                assert paused.until_ms == pytest.approx(want_until, abs=0.002)
    finally:
        client.close()
