"""Offline token estimation that calibrates itself from the usage providers report.

No tokenizer, no downloads: a prompt of ``c`` characters is estimated at
``ceil(c / chars_per_token) + overhead`` tokens. ``chars_per_token`` starts at 4.0 (the
figure OpenAI and Anthropic quote for English) and follows each model's reported
``prompt_tokens`` through an exponentially weighted moving average of
``prompt chars / prompt tokens``, so code, CJK text or another tokenizer pull it to
where it belongs after a few calls.

The estimator also tracks, per model, the fraction of ``max_tokens`` that completions
actually use; a caller may size reservations from it where the provider charges actual
output (Anthropic) or use it to suggest tighter ``max_tokens`` where it does not.

Thread-safe; one instance per worker process is enough. State is tiny and plain
(:meth:`TokenEstimator.snapshot` / :meth:`TokenEstimator.restore`) should a caller want
to share it through Redis.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from throttle.errors import ConfigError
from throttle.providers.request import Message, message_text

#: Characters per token before any calibration (English prose, GPT and Claude).
DEFAULT_CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class ModelStats:
    """Calibrated figures for one model."""

    chars_per_token: float
    output_fraction: float
    prompt_samples: int = 0
    output_samples: int = 0


class TokenEstimator:
    """Per-model chars-per-token and output-fraction estimates, learned by EWMA.

    Parameters:
        default_chars_per_token: starting ratio for a model never observed.
        alpha: EWMA weight of a new observation (0 < alpha <= 1).
        min_chars_per_token, max_chars_per_token: the ratio is clamped to this range,
            so one odd sample (a prompt of emoji) cannot wreck the estimate.
        message_overhead_tokens: tokens added per message for role and framing.
        default_output_fraction: starting estimate of ``output / max_tokens``; 1.0 is
            the safe value (assume the whole budget is used).

    >>> estimator = TokenEstimator()
    >>> estimator.estimate_text("gpt-4o", "x" * 400)
    100
    >>> estimator.observe_prompt("gpt-4o", prompt_chars=300, prompt_tokens=100)
    >>> round(estimator.chars_per_token("gpt-4o"), 2)
    3.8
    """

    def __init__(
        self,
        *,
        default_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
        alpha: float = 0.2,
        min_chars_per_token: float = 1.0,
        max_chars_per_token: float = 12.0,
        message_overhead_tokens: int = 4,
        default_output_fraction: float = 1.0,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"token estimator alpha must be in (0, 1]: {alpha!r}")
        if not 0.0 < min_chars_per_token <= default_chars_per_token <= max_chars_per_token:
            raise ConfigError(
                "token estimator needs 0 < min_chars_per_token <= default_chars_per_token"
                " <= max_chars_per_token"
            )
        if not 0.0 < default_output_fraction <= 1.0:
            raise ConfigError("default_output_fraction must be in (0, 1]")
        if message_overhead_tokens < 0:
            raise ConfigError("message_overhead_tokens must be >= 0")
        self._default_cpt = default_chars_per_token
        self._alpha = alpha
        self._min_cpt = min_chars_per_token
        self._max_cpt = max_chars_per_token
        self._overhead = message_overhead_tokens
        self._default_fraction = default_output_fraction
        self._lock = threading.Lock()
        self._stats: dict[str, ModelStats] = {}

    def _get(self, model: str) -> ModelStats:
        return self._stats.get(model) or ModelStats(self._default_cpt, self._default_fraction)

    def stats(self, model: str) -> ModelStats:
        with self._lock:
            return self._get(model)

    def chars_per_token(self, model: str) -> float:
        return self.stats(model).chars_per_token

    def output_fraction(self, model: str) -> float:
        """Learned ``output_tokens / max_tokens`` (EWMA), ``default_output_fraction`` unseen."""
        return self.stats(model).output_fraction

    def estimate_text(self, model: str, text: str) -> int:
        """Tokens in ``text`` alone (no message overhead)."""
        return math.ceil(len(text) / self.chars_per_token(model))

    @staticmethod
    def prompt_chars(messages: Sequence[Message]) -> int:
        """Characters of every message's text: what :meth:`observe_prompt` expects."""
        return sum(len(message_text(m)) for m in messages)

    def estimate_messages(self, model: str, messages: Sequence[Message]) -> int:
        """Prompt tokens for a chat request: text estimate plus per-message overhead."""
        chars = self.prompt_chars(messages)
        return math.ceil(chars / self.chars_per_token(model)) + self._overhead * len(messages)

    def estimate_output(self, model: str, max_tokens: int) -> int:
        """Expected output tokens: ``ceil(output_fraction x max_tokens)``."""
        return math.ceil(self.output_fraction(model) * max_tokens)

    def observe_prompt(
        self, model: str, *, prompt_chars: int, prompt_tokens: int, messages: int = 0
    ) -> None:
        """Fold in one reported ``prompt_tokens`` for a prompt of ``prompt_chars``.

        ``messages`` (the message count) removes the per-message overhead first, so
        the ratio describes text only. Unusable samples are ignored.
        """
        text_tokens = prompt_tokens - self._overhead * messages
        if prompt_chars <= 0 or text_tokens <= 0:
            return
        ratio = min(self._max_cpt, max(self._min_cpt, prompt_chars / text_tokens))
        with self._lock:
            current = self._get(model)
            cpt = current.chars_per_token + self._alpha * (ratio - current.chars_per_token)
            self._stats[model] = ModelStats(
                cpt, current.output_fraction, current.prompt_samples + 1, current.output_samples
            )

    def observe_output(self, model: str, *, output_tokens: int, max_tokens: int) -> None:
        """Fold in one completion's ``output_tokens`` out of a ``max_tokens`` budget."""
        if max_tokens <= 0 or output_tokens < 0:
            return
        fraction = min(1.0, output_tokens / max_tokens)
        with self._lock:
            current = self._get(model)
            value = current.output_fraction + self._alpha * (fraction - current.output_fraction)
            self._stats[model] = ModelStats(
                current.chars_per_token,
                value,
                current.prompt_samples,
                current.output_samples + 1,
            )

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Plain data of every calibrated model."""
        with self._lock:
            return {
                model: {
                    "chars_per_token": s.chars_per_token,
                    "output_fraction": s.output_fraction,
                    "prompt_samples": s.prompt_samples,
                    "output_samples": s.output_samples,
                }
                for model, s in self._stats.items()
            }

    def restore(self, snapshot: Mapping[str, Mapping[str, float]]) -> None:
        """Load a :meth:`snapshot`; values out of range are clamped, garbage skipped."""
        with self._lock:
            for model, values in snapshot.items():
                try:
                    cpt = float(values["chars_per_token"])
                    fraction = float(values["output_fraction"])
                except (KeyError, TypeError, ValueError):
                    continue
                if not (math.isfinite(cpt) and math.isfinite(fraction)):
                    continue
                self._stats[model] = ModelStats(
                    min(self._max_cpt, max(self._min_cpt, cpt)),
                    min(1.0, max(0.0, fraction)),
                    int(values.get("prompt_samples", 0)),
                    int(values.get("output_samples", 0)),
                )
