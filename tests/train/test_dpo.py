"""The jitted DPO step (train/dpo.py): pair log-probs, the loss at the reference, padding rows,
and that a few steps raise the chosen-over-rejected margin."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms.losses import sequence_logprob
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.tasks.arithmetic import make_tokenizer
from jaxrl_self.train.dpo import encode_preference_pairs, make_dpo_step, make_pair_scorer
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
PROMPTS = ["3+4=", "5+8=", "9+9=", "1+2="]
CHOSEN = ["<answer>7</answer>", "<answer>13</answer>", "<answer>18</answer>", "<answer>3</answer>"]
REJECTED = ["<answer>8</answer>", "<answer>3</answer>", "<answer>8</answer>", "<answer>4</answer>"]


@pytest.fixture(scope="module")
def setup():
    tokenizer = make_tokenizer()
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                         intermediate_size=64, max_position_embeddings=32)
    graphdef, params = init_model(config, seed=0)
    batch = encode_preference_pairs(tokenizer, PROMPTS, CHOSEN, REJECTED, prompt_len=6, completion_len=8)
    return tokenizer, graphdef, params, batch


def test_encoding_shapes_and_eos(setup):
    tokenizer, _, _, batch = setup
    assert batch["prompt_tokens"].shape == (4, 6) and batch["chosen_tokens"].shape == (4, 8)
    assert batch["rejected_mask"].shape == (4, 8)
    # "<answer>13</answer>" is 4 tokens + EOS
    assert batch["chosen_mask"][1].sum() == 5 and batch["chosen_tokens"][1, 4] == tokenizer.eos_id
    assert (batch["prompt_tokens"][:, -1] == tokenizer.encode("=")[0]).all()  # left-padded prompts


def test_pair_logprobs_match_separate_forwards(setup):
    _, graphdef, params, batch = setup
    chosen, rejected = make_pair_scorer(graphdef)(params, batch)
    from flax import nnx

    model = nnx.merge(graphdef, params)
    for tokens, mask, got in (("chosen_tokens", "chosen_mask", chosen), ("rejected_tokens", "rejected_mask", rejected)):
        logp, _ = completion_logprobs(model, batch["prompt_tokens"], batch["prompt_mask"], batch[tokens], batch[mask])
        np.testing.assert_allclose(got, sequence_logprob(logp, batch[mask].astype(jnp.float32)), rtol=1e-5, atol=1e-5)


def test_dpo_steps_raise_the_margin_and_ignore_padding_rows(setup):
    _, graphdef, params, batch = setup
    optimizer = make_optimizer(1e-2, total_steps=10)
    step = make_dpo_step(graphdef, optimizer, beta=0.5)
    state = init_train_state(params, optimizer, seed=0, with_reference=True)
    # a padding row (pair_mask False) must not change anything, whatever it holds
    masked = {**batch, "pair_mask": np.array([True, True, True, False])}
    garbage = {k: v.copy() for k, v in masked.items()}
    garbage["chosen_tokens"][3], garbage["rejected_tokens"][3] = batch["rejected_tokens"][0], batch["chosen_tokens"][1]
    _, metrics_masked = step(state, masked)
    _, metrics_garbage = step(state, garbage)
    assert float(metrics_garbage["dpo/loss"]) == pytest.approx(float(metrics_masked["dpo/loss"]), rel=1e-6)
    assert float(metrics_garbage["grad_norm"]) == pytest.approx(float(metrics_masked["grad_norm"]), rel=1e-5)
    state, metrics = step(state, {**batch, "pair_mask": np.ones(4, bool)})
    assert math.isclose(float(metrics["dpo/loss"]), math.log(2), rel_tol=1e-5)  # policy == reference: u = 0
    assert float(metrics["dpo/reward_margin"]) == pytest.approx(0.0, abs=1e-6)
    for _ in range(8):
        state, metrics = step(state, {**batch, "pair_mask": np.ones(4, bool)})
    assert float(metrics["dpo/reward_margin"]) > 0.5 and float(metrics["dpo/accuracy"]) == 1.0
    assert float(metrics["dpo/loss"]) < math.log(2) - 0.1
    # the reference stayed frozen
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.ref_params, params))
