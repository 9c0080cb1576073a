"""What a call is expected to cost before it is sent, and what its reported usage
teaches the estimator afterwards."""

from __future__ import annotations

from collections.abc import Mapping

from throttle.config import Config, GroupSettings
from throttle.limits import LimitGroup
from throttle.providers.client import ProviderResponse
from throttle.providers.profile import Profile
from throttle.providers.tokens import TokenEstimator
from workers.run_state import CompletionCall, ThrottleState


def plan_costs(
    config: Config,
    estimator: TokenEstimator,
    call: CompletionCall,
    settings: GroupSettings,
    group: LimitGroup,
    profile: Profile,
    state: ThrottleState,
) -> Mapping[str, float]:
    """The costs to reserve for ``call`` per group dimension (also kept in ``state``,
    with the provider's split, for the settle)."""
    estimate = estimator.estimate_messages(call.model, call.messages)
    reservation = profile.reserve(
        input_tokens=estimate, max_tokens=call.max_tokens, params=call.params
    )
    costs = config.costs_for(settings, group, reservation.costs)
    state.costs = dict(costs)
    state.provider_costs = dict(reservation.costs)
    state.input_tokens = reservation.input_tokens
    state.output_tokens = reservation.output_tokens
    return costs


def learn_usage(
    estimator: TokenEstimator, call: CompletionCall, response: ProviderResponse
) -> None:
    """Fold the usage a response reported into the estimator (prompt and output)."""
    usage = response.usage
    if usage is None:
        return
    estimator.observe_prompt(
        call.model,
        prompt_chars=TokenEstimator.prompt_chars(call.messages),
        prompt_tokens=usage.input_tokens,
        messages=len(call.messages),
    )
    estimator.observe_output(
        call.model, output_tokens=usage.output_tokens, max_tokens=call.max_tokens
    )
