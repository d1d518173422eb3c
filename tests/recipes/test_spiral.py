"""SPIRAL (jaxrl_self/recipes/spiral.py, docs/games.md) on a tiny model: training rows and their
masks, zero gradient from observation tokens, the per-token KL coefficients (decision_kl_coef),
the warm-start demonstrations, the Kuhn Poker policy read-out, config errors, and a bit-exact
resume with the RAE baselines restored."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.config import ConfigError, load_config_file, validate
from jaxrl_self.envs import play
from jaxrl_self.envs.base import random_legal_act
from jaxrl_self.envs.kuhn_poker import CALLS
from jaxrl_self.recipes import spiral, train_and_evaluate
from jaxrl_self.train import rl_step
from recipe_helpers import built
from tiny_job import assert_same_state, load_state, persistent_compilation_cache

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**method):
    """configs/kuhn_poker.py with a 1-layer 32-wide model, 4 games per step, 2 SFT and 4 RL steps."""
    config = load_config_file(CONFIGS / "kuhn_poker.py")
    config.model.update(dict(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=32, intermediate_size=64))
    config.sft.update(dict(steps=2, batch_size=4))
    config.rl.update(dict(steps=4))
    config.method.update(dict(games_per_step=4, eval_games=4, **method))
    config.eval.every = 1000
    config.checkpoint.every = 2
    config.log_every = 1
    config.mesh.num_devices = 1
    validate(config)
    return config


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module: the resume test's three runs compile once."""
    with persistent_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
        yield


@pytest.fixture(scope="module")
def kuhn():
    return built(tiny_config())


def random_episodes(recipe, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return play(recipe.env, [recipe.env.reset(rng) for _ in range(n)], random_legal_act(recipe.env, rng), fits=recipe.fits)


def test_training_rows_mask_every_observation_token(kuhn):
    recipe, ctx = kuhn
    episodes = random_episodes(recipe)
    advantages = np.arange(1.0, 13.0).reshape(6, 2)
    advantages[0, 1] = 0.0  # dropped: no loss
    batch = recipe.training_rows(episodes, advantages)
    decode = lambda ids: ctx.tokenizer.decode(ids, skip_special_tokens=False)
    for g, e in enumerate(episodes):
        for p in range(2):
            row = 2 * g + p
            pieces = e.contexts[p]
            assert decode(batch.prompt_tokens[row][batch.prompt_mask[row]]) == "<bos>" + pieces[0].text
            trained = decode(batch.completion_tokens[row][batch.completion_mask[row]])
            responses = "".join(piece.text + "<eos>" for piece in pieces if piece.by_policy)
            assert trained == ("" if (g, p) == (0, 1) else responses)
            observations = "".join(piece.text for piece in pieces[1:] if not piece.by_policy)
            assert decode(batch.completion_tokens[row][batch.env_mask[row]]) == observations
            assert not np.any(batch.env_mask[row] & batch.completion_mask[row])
    assert np.any(batch.env_mask)  # player 0's second turns


def test_observation_tokens_get_exactly_zero_gradient(kuhn, monkeypatch):
    """d loss / d logp[t] through the shared loss (`rl_step.policy_loss`) is 0 at every observation
    token and not at the response tokens; the observations are still read as context."""
    recipe, ctx = kuhn
    episodes = [e for e in random_episodes(recipe, n=30) if len(e.contexts[0]) == 4][:2]  # check, bet, then fold/call
    batch = recipe.training_rows(episodes, np.array([[1.0, -1.0], [-0.5, 0.5]], np.float32))
    model = nnx.merge(ctx.graphdef, ctx.init_params)
    shared = rl_step.completion_logprobs
    delta = jnp.zeros(batch.completion_tokens.shape)

    def loss_of(delta):
        def perturbed(*args, **kwargs):
            logp, entropy = shared(*args, **kwargs)
            return logp + delta, entropy
        monkeypatch.setattr(rl_step, "completion_logprobs", perturbed)
        loss, _ = rl_step.policy_loss(model, jax.tree.map(jnp.asarray, batch), ctx.config.rl, jnp.float32(4), jnp.float32(50))
        return loss

    grad = np.asarray(jax.jit(jax.grad(loss_of))(delta))
    assert np.all(grad[batch.env_mask] == 0.0)
    assert np.all(grad[batch.completion_mask] != 0.0)
    # the second response is conditioned on the observation before it
    logp = jax.jit(lambda b: shared(model, b.prompt_tokens, b.prompt_mask, b.completion_tokens, b.attended_mask())[0])
    changed = batch.replace(completion_tokens=np.where(batch.env_mask, ctx.tokenizer.encode("x")[0], batch.completion_tokens))
    second = batch.completion_mask & (np.cumsum(batch.env_mask, axis=1) > 0)
    assert np.any(second) and not np.allclose(np.asarray(logp(batch))[second], np.asarray(logp(changed))[second])


def test_decision_kl_coef_on_the_first_token_of_each_response():
    """method.decision_kl_coef (here 0): the training rows' kl_coef `[N, T]` is decision_kl_coef on
    the first token of each response, the move's own letter (B, P, C, F), rl.kl_coef (the config's,
    0.3) on the response's other tokens and 0 on observations and padding; -1 (the recipe's
    default) leaves kl_coef None: rl.kl_coef on every token."""
    recipe, ctx = built(tiny_config(decision_kl_coef=0.0))
    k = ctx.config.rl.kl_coef
    assert k > 0
    episodes = random_episodes(recipe, n=30)
    batch = recipe.training_rows(episodes, np.ones((30, 2), np.float32))
    expected = np.zeros(batch.completion_tokens.shape, np.float32)
    responses = 0
    for g, e in enumerate(episodes):
        for p in range(2):
            t = 0
            for piece in e.contexts[p][1:]:
                if piece.by_policy:
                    expected[2 * g + p, t], expected[2 * g + p, t + 1 : t + len(piece.tokens)] = 0.0, k
                    responses += 1
                t += len(piece.tokens)
    assert batch.kl_coef.dtype == np.float32
    np.testing.assert_array_equal(batch.kl_coef, expected)
    first = batch.completion_mask & (batch.kl_coef == 0.0)
    assert first.sum() == responses and responses > 2 * len(episodes)  # some rows hold two responses
    assert set(ctx.tokenizer.decode(batch.completion_tokens[first])) == set("BPCF")
    assert np.all(batch.kl_coef[batch.completion_mask & ~first] == np.float32(k))
    recipe.decision_kl_coef = None
    assert recipe.training_rows(episodes, np.ones((30, 2), np.float32)).kl_coef is None


def test_warm_start_demonstrations_are_legal_moves(kuhn):
    """Each demonstration is one turn of a random game: the acting context, which ends with the
    player's card, then a legal move called out ("Pass" for Check) and boxed, + EOS: the move's
    first token is predicted at the card's position (docs/games.md#kuhn-poker)."""
    recipe, ctx = kuhn
    batch = recipe.sft_batch(ctx, np.arange(16), 1)
    moves = set()
    for tokens, mask, target, target_mask in zip(batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"],
                                                 batch["completion_mask"]):
        context = ctx.tokenizer.decode(tokens[mask])
        answer = re.fullmatch(r"(\w+) \\boxed\{(\w+)\}<eos>", ctx.tokenizer.decode(target[target_mask], skip_special_tokens=False))
        assert answer, ctx.tokenizer.decode(target[target_mask])
        legal = re.findall(r"Legal: ([^.]*)\. Card: [JQK]$", context)
        assert legal, context[-40:]
        assert answer.group(1) == CALLS[f"[{answer.group(2)}]"] and f"[{answer.group(2)}]" in legal[-1].split()
        moves.add(answer.group(2))
    assert len(moves) >= 3


def test_kuhn_policy_read_out(kuhn):
    recipe, ctx = kuhn
    policy, mass = recipe.kuhn_policy(ctx.init_params)
    assert len(policy) == 12 and mass.shape == (12,)
    assert np.all((mass > 0) & (mass < 1))  # an untrained model spreads its mass
    for probs in policy.values():
        assert probs.sum() == pytest.approx(1.0)


def test_config_errors():
    with pytest.raises(ConfigError, match="config.method.game"):
        spiral.SPIRAL(tiny_config(game="chess"))
    config = tiny_config()
    config.rl.algorithm = "ppo"
    with pytest.raises(ConfigError, match="config.rl.algorithm"):
        spiral.SPIRAL(config)
    config = tiny_config()
    config.rl.micro_batches = 3
    with pytest.raises(ConfigError, match="not divisible"):
        spiral.SPIRAL(config)
    with pytest.raises(ConfigError, match="config.method.decision_kl_coef: must be >= 0"):
        spiral.SPIRAL(tiny_config(decision_kl_coef=-0.5))
    config = tiny_config(decision_kl_coef=0.0)
    config.rl.kl_coef = 0.0
    with pytest.raises(ConfigError, match="config.method.decision_kl_coef: the KL to the reference needs rl.kl_coef > 0"):
        spiral.SPIRAL(config)
    config = tiny_config()
    config.model.max_position_embeddings = 64
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        spiral.SPIRAL(config)


def metrics(workdir):
    """metrics.jsonl rows without wall times and evaluations (the stopped run evaluated its last step)."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "eval/"))} for row in rows]


def test_resume_restores_the_baselines_bit_exactly(tmp_path):
    """A run stopped after 2 training steps and continued to 4 equals a run of 4: same params,
    same per-step training metrics, whose baselines carry over (they are not 0 at the restart)."""
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    train_and_evaluate(tiny_config(), fresh)
    short = tiny_config()
    short.rl.steps = 2
    train_and_evaluate(short, resumed)
    train_and_evaluate(tiny_config(), resumed)
    last = 2 + 4
    assert_same_state(load_state(resumed / "checkpoints", last), load_state(fresh / "checkpoints", last))
    rows = metrics(resumed)
    assert rows == metrics(fresh)
    restart = [r for r in rows if r["step"] == 4 and "baseline/seat0" in r][0]
    assert restart["baseline/seat0"] != 0.0
