"""The throttle state a task carries across parks and retries (plain JSON, no Redis)."""

from __future__ import annotations

import json

from workers.runtime import ThrottleState


def test_a_reservation_handle_survives_the_trip_through_a_task_message() -> None:
    state = ThrottleState(deadline_at_s=100.0, reservation="r1/0badc0de12345678/900|1,5,|1,")
    state.slot_ms = 12.5
    again = ThrottleState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state


def test_a_task_parked_by_the_record_keeping_version_keeps_its_reservation_id() -> None:
    """Its bare id still names its lease and keeps its slot; settling it finishes nothing."""
    old = {"deadline_at_s": 100.0, "reservation_id": "abc", "slot_ms": 5.0, "parks": 1}
    state = ThrottleState.from_json(old)
    assert (state.reservation, state.slot_ms, state.parks) == ("abc", 5.0, 1)
    assert ThrottleState.from_json({"deadline_at_s": 1.0}).reservation is None


def test_a_429_whose_headers_show_room_is_no_rate_signal() -> None:
    """A 429 while the provider's own headers show room for the request (an injected
    fault, a capacity refusal) pauses the group without lowering its rate; one that
    shows the request did not fit, or says nothing, is a rate signal."""
    from throttle.limits import Algorithm, Dimension, LimitGroup
    from throttle.providers.observation import DimensionState, Observation
    from workers.runtime import room_left

    group = LimitGroup(
        "az",
        (
            Dimension("tokens", 30_000, 6.0, Algorithm.SLIDING),
            Dimension("requests", 20, 1.0, Algorithm.SLIDING),
        ),
    )
    costs = {"tokens": 520.0, "requests": 1.0}

    def said(tokens: float | None, requests: float | None) -> Observation:
        return Observation(
            0.0,
            {
                "tokens": DimensionState(30_000, tokens),
                "requests": DimensionState(20, requests),
            },
        )

    assert room_left(group, said(20_000, 15), costs)
    assert room_left(group, said(20_000, None), costs), "a dimension not reported is not known"
    assert not room_left(group, said(100, 15), costs), "the tokens did not fit"
    assert not room_left(group, said(20_000, 0), costs), "nor did the request"
    assert not room_left(group, said(None, None), costs), "headers without remaining"
    assert not room_left(group, None, costs), "no headers"
