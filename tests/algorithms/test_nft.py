"""NFT and negative-sample reinforcement (docs/algorithms.md#nft-and-negative-sample-reinforcement):
the worked gradients, the on-policy equivalences with Dr. GRPO, GRPO and rejection-sampling
fine-tuning, config validation and a two-step training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms import advantages, losses
from jaxrl_self.algorithms.aggregation import aggregate
from jaxrl_self.config import ConfigError, build_config

import tiny_job

pytestmark = pytest.mark.usefixtures("fast_compile")  # small programs, each compiled once

GROUP_REWARDS = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
N, T, V, T_CONST = 12, 5, 7, 6


def nft_per_token(logp, old_logp, adv, mask, weighting="dr_grpo", neg_weight=1.0, neg_floor=1.0):
    return losses.nft_loss(logp, old_logp, adv, mask, weighting=weighting, neg_weight=neg_weight,
                           neg_floor=neg_floor, mean_clamp=0.02)[0]


def nft_advantages(rewards):
    return advantages.group_advantages(advantages.binary_rewards(rewards), normalize_std=False).reshape(-1)


def test_worked_on_policy_gradients():
    """r = [1, 0, 0, 0], r_q = 0.25, one token each: d loss / d logp at R = 1 for each weighting."""
    adv = nft_advantages(GROUP_REWARDS[:1])
    np.testing.assert_allclose(adv, [0.75, -0.25, -0.25, -0.25])
    old = jnp.full((4, 1), -1.3)
    grads = jax.jit(lambda lp: [jax.grad(lambda x: jnp.sum(nft_per_token(x, old, adv, jnp.ones((4, 1)), w)))(lp)[:, 0]
                                for w in losses.NFT_WEIGHTINGS])(old)
    root3 = np.sqrt(3.0)
    expected = {"unit": [-1.0, 1 / 3, 1 / 3, 1 / 3], "dr_grpo": [-0.75, 0.25, 0.25, 0.25],  # Dr. GRPO's -A
                "grpo": [-root3, root3 / 3, root3 / 3, root3 / 3]}                        # -A of GRPO, ddof 0
    for weighting, grad in zip(losses.NFT_WEIGHTINGS, grads):
        np.testing.assert_allclose(grad, expected[weighting], atol=1e-6, err_msg=weighting)


def test_worked_off_policy_gradients():
    """Same group, weighting "unit", rows at R = 1.2 (positive), 1.2, 0.8 and 5 (negatives)."""
    adv = nft_advantages(GROUP_REWARDS[:1])
    old = jnp.full((4, 1), -1.3)
    logp = old + np.log([[1.2], [1.2], [0.8], [5.0]])

    def loss(lp, neg_floor):
        return jnp.sum(nft_per_token(lp, old, adv, jnp.ones((4, 1)), "unit", neg_floor=neg_floor))

    (value, grad), (value_no_floor, grad_no_floor) = jax.jit(
        lambda lp: [jax.value_and_grad(loss)(lp, floor) for floor in (1.0, 1e-3)])(logp)
    # positive: -omega; R = 1.2: floored r_q R / (1 - r_q) = 0.3 / 0.75, unfloored r_q R / (1 - r_q R) = 0.3 / 0.7;
    # R = 0.8: the floor does not act, 0.2 / 0.8; R = 5: 1 - r_q R < 0, the floor keeps the loss finite
    np.testing.assert_allclose(grad[:, 0], [-1.0, 0.3 / 0.75, 0.2 / 0.8, 1.25 / 0.75], atol=1e-6)
    np.testing.assert_allclose(grad_no_floor[:3, 0], [-1.0, 0.3 / 0.7, 0.2 / 0.8], atol=1e-6)
    assert np.isfinite([value, value_no_floor]).all()


def random_batch(seed=0):
    """Random logits `[N, T, V]`, tokens `[N, T]` and a ragged mask `[N, T]` (N = 3 groups of 4)."""
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(N, T, V)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, V, size=(N, T)), jnp.int32)
    lengths = rng.integers(1, T + 1, size=N)
    mask = jnp.asarray(np.arange(T)[None, :] < lengths[:, None], jnp.float32)
    return logits, tokens, mask


def on_policy(per_token_fn, mode, tokens, mask):
    """The loss of logits `aggregate(per_token_fn(logp, stop_gradient(logp)))`: ratio 1."""
    def loss(logits):
        logp = losses.token_logprobs(logits, tokens)
        return aggregate(per_token_fn(logp, jax.lax.stop_gradient(logp)), mask, mode, t_const=T_CONST)
    return loss


def gradients(logits, *loss_fns):
    """The gradients w.r.t. logits of each loss, in one compiled program."""
    return jax.jit(lambda z: [jax.grad(fn)(z) for fn in loss_fns])(logits)


def surrogate(adv, mask):
    return lambda lp, old: losses.clipped_surrogate(lp, old, adv, eps_low=0.2, eps_high=0.2, mask=mask)[0]


def test_on_policy_gradient_equals_dr_grpo_and_grpo():
    """Weighting "dr_grpo" against Dr. GRPO, "grpo" against GRPO with the population std, each with
    its own aggregation; the third group has no signal (all wrong)."""
    logits, tokens, mask = random_batch()
    nft_adv = nft_advantages(GROUP_REWARDS)
    dr_grpo_adv = advantages.group_advantages(GROUP_REWARDS, normalize_std=False).reshape(-1)
    grpo_adv = advantages.group_advantages(GROUP_REWARDS, std_ddof=0, eps=1e-12).reshape(-1)
    dr_mode, grpo_mode = "seq_mean_token_sum_norm", "seq_mean_token_mean"
    nft_dr, dr_grpo, nft_grpo, grpo = gradients(
        logits,
        on_policy(lambda lp, old: nft_per_token(lp, old, nft_adv, mask, "dr_grpo"), dr_mode, tokens, mask),
        on_policy(surrogate(dr_grpo_adv, mask), dr_mode, tokens, mask),
        on_policy(lambda lp, old: nft_per_token(lp, old, nft_adv, mask, "grpo"), grpo_mode, tokens, mask),
        on_policy(surrogate(grpo_adv, mask), grpo_mode, tokens, mask))
    assert float(jnp.max(jnp.abs(dr_grpo))) > 1e-3 and float(jnp.max(jnp.abs(grpo))) > 1e-3
    np.testing.assert_allclose(nft_dr, dr_grpo, atol=1e-6)
    np.testing.assert_allclose(nft_grpo, grpo, atol=1e-6)


def test_negative_weight_zero_is_rejection_sampling_fine_tuning():
    """NSR with neg_weight 0, and NFT with neg_weight 0 and weighting "unit": the gradient of the NLL
    of the correct completions averaged over the batch's sequences (the others add 0); NFT leaves
    out groups without signal (the all-correct second group here has none)."""
    logits, tokens, mask = random_batch(1)
    rewards = GROUP_REWARDS.reshape(-1).copy()
    rewards[4:8] = 1.0
    correct = mask * advantages.binary_rewards(rewards)[:, None]
    with_signal = jnp.repeat(jnp.asarray([1.0, 0.0, 0.0]), 4)[:, None]
    mode = "seq_mean_token_sum_norm"

    def rft(weights):
        return lambda z: aggregate(-losses.token_logprobs(z, tokens), weights, mode, t_const=T_CONST, num_sequences=N)

    nsr_adv = advantages.signed_advantages(rewards, pos_weight=1.0, neg_weight=0.0)
    nft_adv = nft_advantages(rewards.reshape(3, 4))
    nsr, rft_all, nft, rft_with_signal = gradients(
        logits,
        on_policy(surrogate(nsr_adv, mask), mode, tokens, mask), rft(correct),
        on_policy(lambda lp, old: nft_per_token(lp, old, nft_adv, mask, "unit", neg_weight=0.0), mode, tokens, mask),
        rft(correct * with_signal))
    np.testing.assert_allclose(nsr, rft_all, atol=1e-6)
    np.testing.assert_allclose(nft, rft_with_signal, atol=1e-6)


def test_signed_advantages_and_negatives_only():
    rewards = jnp.asarray([1.0, 0.0, 0.1, 1.0])  # 0.1: countdown's format-only reward, a negative
    np.testing.assert_allclose(advantages.signed_advantages(rewards, pos_weight=0.1, neg_weight=1.0), [0.1, -1, -1, 0.1])
    np.testing.assert_allclose(advantages.signed_advantages(rewards, pos_weight=0.0, neg_weight=1.0), [0, -1, -1, 0])


@pytest.mark.parametrize("override, message", [
    ("--config.rl.nft.weighting=std", "config.rl.nft.weighting: must be one of"),
    ("--config.rl.nft.neg_floor=0.0", "config.rl.nft.neg_floor: must be in (0, 1]"),
    ("--config.rl.nft.mean_clamp=0.5", "config.rl.nft.mean_clamp: must be in [0, 0.5)"),
    ("--config.rl.nsr.neg_weight=-1.0", "config.rl.nsr.neg_weight: must be >= 0"),
])
def test_bad_values_are_refused_with_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        build_config(tiny_job.REPO / "configs/default.py", [override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_two_training_steps_with_nft(tmp_path_factory):
    cache = tmp_path_factory.mktemp("nft_cache")
    workdir = tmp_path_factory.mktemp("nft") / "run"
    result = tiny_job.train(workdir, cache, "--config.rl.algorithm=nft", "--config.sft.steps=2", "--config.rl.steps=2",
                            "--config.eval.every=2", "--config.checkpoint.every=4")
    assert result.returncode == 0, result.stderr[-3000:]
    rl_rows = [row for row in tiny_job.metrics_rows(workdir) if "policy_loss" in row]
    assert len(rl_rows) == 2 and all(np.isfinite(float(row["loss"])) for row in rl_rows)
