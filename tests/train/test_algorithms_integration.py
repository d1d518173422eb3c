"""Every `config.rl.algorithm` end to end in the real RL loop (`train_and_evaluate`), from a briefly
SFT-warm-started tiny model on 1-digit addition, with its `configs/arithmetic_<algorithm>.py`
hyper-parameters: a short fixed-seed run must raise the mean training reward (mean over the last
10 of 30 steps above the mean over the first 10). The figures measured are in docs/results.md#figures-recorded-by-the-tests."""
from __future__ import annotations

import numpy as np
import pytest

ALGORITHMS = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "ppo")
STEPS, WINDOW = 30, 10


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_raises_mean_reward(algorithm, warm_params, tiny_config, run_rl_from, tmp_path):
    config = tiny_config(algorithm, f"arithmetic_{algorithm}.py")
    config.rl.update({"steps": STEPS, "learning_rate": 1e-3, "prompts_per_step": 16})
    if algorithm == "dapo":  # completions here are <= 13 tokens: shape the last 3 of 16
        config.rl.update({"overlong_max_len": 16, "overlong_cache_len": 3})
    rows = run_rl_from(warm_params, config, tmp_path)
    assert len(rows) == STEPS
    rewards = np.asarray([row["reward/mean"] for row in rows])
    first, last = rewards[:WINDOW].mean(), rewards[-WINDOW:].mean()
    assert last > first, f"{algorithm}: mean reward {first:.3f} over the first {WINDOW} steps, {last:.3f} over the last {WINDOW}"
    final = rows[-1]
    for name in ("loss", "grad_norm", "entropy", "ratio/mean", "ratio/min", "ratio/max", "clip_fraction/low",
                 "clip_fraction/high", "response_length/mean", "accuracy/train", "reward/format_ok"):
        assert np.isfinite(final[name]), name
    assert all(row["skipped_nonfinite"] == 0 for row in rows)
    if config.rl.kl_coef > 0:
        assert "kl" in final
    if algorithm == "dapo":
        assert "reward/overlong_penalty" in final
        assert max(row["dynamic_sampling/rounds"] for row in rows) > 1
        assert min(row["dynamic_sampling/valid_fraction"] for row in rows) > 0.5
    if algorithm == "ppo":
        assert np.isfinite(final["value_loss"]) and np.isfinite(final["value/mean"])
