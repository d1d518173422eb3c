"""SCoRe: shaped rewards, stage logic, attempt-2 prompts, the loss's per-attempt KL, and a fixed-seed
run on 2-digit addition.

What the run shows robustly is that the two stages raise held-out accuracy; attempt 2 ending above
attempt 1 does not hold across seeds. Measured with these settings, seeds 0-3 (held-out greedy,
64 problems): attempt 2 - attempt 1 after stage II = +0.109, -0.375, 0.000, +0.016, and the best
attempt's accuracy went 0.516 -> 0.547, 0.516 -> 0.859, 0.547 -> 0.844, 0.703 -> 0.781. Stage II
mostly teaches attempt 1 to stop dropping the carry, which leaves little for attempt 2 to correct
(the collapse SCoRe's stage I is meant to prevent; with this tiny model it does not).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.methods import score
from jaxrl_self.tasks.arithmetic import make_tokenizer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "score.py"


def test_shaped_rewards_stage2_examples():
    r1, r2 = np.array([0, 1, 1, 0]), np.array([1, 0, 1, 0])
    first, second = score.shaped_rewards(r1, r2, stage=2, alpha=10.0)
    np.testing.assert_allclose(second, [11.0, -10.0, 1.0, 0.0])
    np.testing.assert_allclose(first, r1)


def test_stage1_rewards_only_the_second_attempt():
    first, second = score.shaped_rewards(np.array([0, 1, 1, 0]), np.array([1, 0, 1, 0]), stage=1, alpha=10.0)
    np.testing.assert_allclose(first, 0.0)
    np.testing.assert_allclose(second, [1, 0, 1, 0])


def test_stage_logic():
    assert [score.stage_of(step, stage1_steps=2) for step in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert score.kl_coefficients(1, beta1=0.01, beta2=0.1) == (0.1, 0.0)
    assert score.kl_coefficients(2, beta1=0.01, beta2=0.1) == (0.01, 0.01)


def test_attempt_metrics():
    metrics = score.attempt_metrics([0, 1, 1, 0], [1, 0, 1, 1])
    assert metrics == {"accuracy@t1": 0.5, "accuracy@t2": 0.75, "delta(t1,t2)": 0.25, "incorrect_to_correct": 0.5,
                       "correct_to_incorrect": 0.25}


def test_retry_tokenizer_and_second_attempt_prompts():
    tokenizer = score.retry_tokenizer(make_tokenizer())
    retry = tokenizer.token_to_id[score.RETRY]
    assert tokenizer.encode("1+2=<answer>3</answer><retry>")[-1] == retry
    prompt = np.array([[0, 1, 5, 6], [1, 7, 8, 9]])
    prompt_mask = prompt != 0
    completion = np.array([[11, 12, tokenizer.eos_id, 0], [13, 14, 15, 16]])
    completion_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    tokens, mask = score.second_attempt_prompts(prompt, prompt_mask, completion, completion_mask, retry, tokenizer.eos_id, 10)
    np.testing.assert_array_equal(tokens, [[0, 0, 0, 0, 1, 5, 6, 11, 12, retry], [0, 1, 7, 8, 9, 13, 14, 15, 16, retry]])
    np.testing.assert_array_equal(mask, tokens != 0)


def tiny_config():
    """2-digit addition (held-out problems differ from the training ones), a 2-layer 64-wide model."""
    config = load_config_file(CONFIG)
    config.task.update(dict(digits=2, max_prompt_len=8, test_size=64))
    config.model.update(dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=64))
    config.seed = 2
    config.sft.update(dict(steps=600, batch_size=32))
    config.rl.update(dict(steps=100, max_new_tokens=24, learning_rate=5e-4))
    config.method.stage1_steps = 40
    config.eval.num_examples = 64
    config.checkpoint.every = 1000
    config.log_every = 50
    validate(config)
    return config


def test_kl_coefficient_applies_per_attempt_row():
    """With zero advantages the loss is the KL term alone: two identical rows with coefficients
    (1, 1) give twice the loss of (1, 0)."""
    sc = score.SelfCorrection(tiny_config())
    tokens, mask = sc.encode(["1+2=", "1+2="])
    completion, completion_mask = jnp.array([[7, 8, 2, 0]] * 2), jnp.array([[1, 1, 1, 0]] * 2, bool)
    batch = {"prompt_tokens": tokens, "prompt_mask": mask, "completion_tokens": completion, "completion_mask": completion_mask,
             "advantages": jnp.zeros(2), "ref_logp": jnp.full((2, 4), -1.0), "attempt": jnp.array([1, 2])}
    loss_of = jax.jit(lambda params, coefs: score.score_loss(nnx.merge(sc.graphdef, params), {**batch, "kl_coef": coefs}, sc.config.rl)[0])
    loss = lambda coefs: float(loss_of(sc.init_params, jnp.array(coefs)))
    assert loss([1.0, 0.0]) > 0
    assert loss([1.0, 1.0]) == pytest.approx(2 * loss([1.0, 0.0]), rel=1e-5)


@pytest.fixture(scope="module")
def score_run(tmp_path_factory):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield score.run_method(tiny_config(), tmp_path_factory.mktemp("score"))
    jax.config.update("jax_compilation_cache_dir", None)


def test_score_stages_raise_held_out_accuracy(score_run):
    delta = score_run["eval/delta(t1,t2)"]
    assert abs(delta["after SFT"]) < 0.1  # the warm start copies attempt 1
    best = {when: max(score_run["eval/accuracy@t1"][when], score_run["eval/accuracy@t2"][when])
            for when in ("after SFT", "after stage II")}
    assert best["after stage II"] >= best["after SFT"] + 0.02, score_run  # held on seeds 0-3 (smallest: +0.031)
    flips = score_run["eval/incorrect_to_correct"]["after stage II"] - score_run["eval/correct_to_incorrect"]["after stage II"]
    assert delta["after stage II"] == pytest.approx(flips)  # the delta is made of the two kinds of flip
