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
