"""Offline token estimation and its calibration from reported usage."""

from __future__ import annotations

import threading

import pytest

from throttle.errors import ConfigError
from throttle.providers.tokens import TokenEstimator


def test_uncalibrated_default_is_four_chars_per_token() -> None:
    estimator = TokenEstimator(message_overhead_tokens=4)
    assert estimator.estimate_text("m", "x" * 401) == 101
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "x" * 400},
        {"role": "user", "content": [{"text": "y" * 4}]},
    ]
    assert estimator.estimate_messages("m", messages) == 101 + 2 * 4


def test_calibration_converges_to_the_observed_ratio() -> None:
    estimator = TokenEstimator(alpha=0.3)
    for _ in range(40):
        # A model whose tokenizer gives 2.5 chars per token (code, say).
        estimator.observe_prompt("coder", prompt_chars=1000, prompt_tokens=400)
    assert estimator.chars_per_token("coder") == pytest.approx(2.5, rel=1e-3)
    assert estimator.estimate_text("coder", "x" * 1000) == 400
    # Other models are unaffected.
    assert estimator.chars_per_token("other") == 4.0
    assert estimator.stats("coder").prompt_samples == 40


def test_overhead_is_removed_before_calibrating() -> None:
    estimator = TokenEstimator(alpha=1.0, message_overhead_tokens=4)
    estimator.observe_prompt("m", prompt_chars=300, prompt_tokens=108, messages=2)
    assert estimator.chars_per_token("m") == pytest.approx(3.0)


def test_one_ewma_step() -> None:
    estimator = TokenEstimator(alpha=0.2)
    estimator.observe_prompt("m", prompt_chars=300, prompt_tokens=100)
    assert estimator.chars_per_token("m") == pytest.approx(4.0 + 0.2 * (3.0 - 4.0))


def test_outliers_are_clamped_and_garbage_ignored() -> None:
    estimator = TokenEstimator(alpha=1.0, min_chars_per_token=1.0, max_chars_per_token=12.0)
    estimator.observe_prompt("m", prompt_chars=10_000, prompt_tokens=1)
    assert estimator.chars_per_token("m") == 12.0
    estimator.observe_prompt("m", prompt_chars=0, prompt_tokens=100)
    estimator.observe_prompt("m", prompt_chars=100, prompt_tokens=0)
    estimator.observe_prompt("m", prompt_chars=100, prompt_tokens=-5)
    assert estimator.chars_per_token("m") == 12.0


def test_output_fraction() -> None:
    estimator = TokenEstimator(alpha=0.5)
    assert estimator.output_fraction("m") == 1.0
    assert estimator.estimate_output("m", 1000) == 1000
    estimator.observe_output("m", output_tokens=200, max_tokens=1000)
    assert estimator.output_fraction("m") == pytest.approx(0.6)
    estimator.observe_output("m", output_tokens=5000, max_tokens=1000)  # clamped to 1.0
    assert estimator.output_fraction("m") == pytest.approx(0.8)
    estimator.observe_output("m", output_tokens=5, max_tokens=0)  # ignored
    assert estimator.estimate_output("m", 1000) == 800


def test_thread_safety_counts_every_sample() -> None:
    estimator = TokenEstimator(alpha=0.1)

    def work() -> None:
        for _ in range(500):
            estimator.observe_prompt("m", prompt_chars=300, prompt_tokens=100)
            estimator.observe_output("m", output_tokens=1, max_tokens=2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = estimator.stats("m")
    assert (stats.prompt_samples, stats.output_samples) == (4000, 4000)
    assert stats.chars_per_token == pytest.approx(3.0)


def test_snapshot_round_trip() -> None:
    estimator = TokenEstimator(alpha=1.0)
    estimator.observe_prompt("m", prompt_chars=350, prompt_tokens=100)
    other = TokenEstimator()
    other.restore(estimator.snapshot())
    assert other.chars_per_token("m") == pytest.approx(3.5)
    garbage: dict[str, dict[str, object]] = {
        "bad": {"chars_per_token": "x"},
        "inf": {"chars_per_token": float("inf"), "output_fraction": 1},
    }
    other.restore(garbage)  # type: ignore[arg-type]
    assert "bad" not in other.snapshot() and "inf" not in other.snapshot()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0},
        {"alpha": 1.5},
        {"default_chars_per_token": 0.5},
        {"default_output_fraction": 0},
    ],
)
def test_bad_configuration(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TokenEstimator(**kwargs)  # type: ignore[arg-type]
