"""What a provider's limit headers say about a limit group's own dimensions."""

from __future__ import annotations

from collections.abc import Mapping

from throttle.limits import LimitGroup
from throttle.providers.observation import Observation
from throttle.reservation import Observed


def observed_dimensions(group: LimitGroup, observation: Observation | None) -> dict[str, Observed]:
    """The provider's view of the group's own dimensions, by name.

    A header describes the bucket that binds (OpenAI reports TPD in the token headers
    when it binds); one whose implied window cannot be near the dimension's period, even
    allowing for the rounding of ``remaining``, is not about that dimension and is left
    out.
    """
    if observation is None:
        return {}
    heard: dict[str, Observed] = {}
    for dim in group.dimensions:
        state = observation.dimensions.get(dim.name)
        if state is None or (state.remaining is None and state.limit is None):
            continue
        bounds_s = state.implied_window_bounds_s
        near = bounds_s is not None and (
            bounds_s[1] <= 2.0 * dim.period_s and bounds_s[0] >= 0.5 * dim.period_s
        )
        if (
            bounds_s is not None
            and not near
            and (bounds_s[1] < 0.5 * dim.period_s or bounds_s[0] > 2.0 * dim.period_s)
        ):
            continue
        limit = state.limit
        if limit is not None and not dim.auto and limit < dim.capacity and not near:
            # A limit below the configured one is learned only from a header whose window
            # is known to be this dimension's: a full bucket's header (nothing used, so no
            # window) of a 100/s provider must not teach a 300/10s dimension "100 per 10 s".
            limit = None
        heard[dim.name] = Observed(state.remaining, limit, state.remaining_granularity)
    return heard


def room_left(
    group: LimitGroup, observation: Observation | None, costs: Mapping[str, float]
) -> bool:
    """Whether the provider's headers on a 429 show room for the refused request in
    every dimension they report (at least one): then the refusal was not about the
    rate these limits pace (an injected fault, a capacity 429, a limit we do not
    track), and the group pauses for the wait without lowering its rate. Without
    such headers a 429 counts as a rate signal."""
    heard = observed_dimensions(group, observation)
    known = {name: o.remaining for name, o in heard.items() if o.remaining is not None}
    return bool(known) and all(
        remaining >= costs.get(name, 0.0) for name, remaining in known.items()
    )
