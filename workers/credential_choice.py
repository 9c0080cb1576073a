"""Which credential a call runs on, in a group with several (``credentials``): each
has its own buckets, and a new task takes the one that would start it soonest."""

from __future__ import annotations

from throttle.config import Config, GroupSettings
from throttle.errors import InvalidRequestError
from throttle.ports import Limiter
from throttle.providers.tokens import TokenEstimator
from workers.estimates import plan_costs
from workers.run_state import CompletionCall, ThrottleState


def choose(
    config: Config,
    limiter: Limiter,
    estimator: TokenEstimator,
    call: CompletionCall,
    settings: GroupSettings,
    state: ThrottleState,
) -> str | None:
    """The credential ``call`` runs on. A group with several (``credentials``): the one
    the task holds already, or the one it names, or else the one whose buckets would
    start it soonest (the shortest fair queue first), kept in ``state`` for the rest of
    its life. Otherwise the task's own, if any (it only swaps the key; the buckets are
    the group's)."""
    if not settings.credentials:
        return call.credential
    chosen = state.credential or call.credential
    if chosen is not None:
        if chosen not in settings.credentials:
            raise InvalidRequestError(
                f"credential {chosen!r} is not one of group {settings.name!r}'s"
                f" ({', '.join(settings.credentials)})"
            )
        state.credential = chosen
        return chosen
    profile = config.providers[settings.provider].resolved_profile()
    first = config.limit_group(settings, call.tenant, settings.credentials[0])
    # every credential's group has the same dimensions: the costs are computed once
    costs = plan_costs(config, estimator, call, settings, first, profile, ThrottleState(0.0))
    state.credential = min(
        settings.credentials,
        key=lambda credential: limiter.start_wait_s(
            config.limit_group(settings, call.tenant, credential), costs
        ),
    )
    return state.credential
