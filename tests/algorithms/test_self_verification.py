"""LaSeR's self-reward math on the worked example of docs/algorithms.md#laser-last-token-self-reward
(one prompt, G = 4), the RISE verification group, and the test-time metrics against brute force."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms.advantages import group_advantages
from jaxrl_self.algorithms.self_verification import (blend_self_advantages, class_balance_weights, self_reward_loss,
                                                     self_reward_scores)
from jaxrl_self.eval.self_verification import auroc, balanced_accuracy, best_of_n, self_weighted_vote

LABELS = jnp.array([1.0, 0.0, 1.0, 0.0])
LZ = jnp.array([-14.0, -21.5, -18.0, -23.5])
FINISHED = jnp.ones(4, bool)
BETA, C_REF, ALPHA = 0.1, -23.0, 0.1


def test_worked_example_scores_loss_and_gradient():
    np.testing.assert_allclose(self_reward_scores(LZ, beta_v=BETA, c_ref=C_REF), [0.9, 0.15, 0.5, -0.05], atol=1e-6)
    np.testing.assert_allclose(class_balance_weights(LABELS, FINISHED), [1, 1, 1, 1], atol=1e-6)
    loss, metrics = self_reward_loss(LZ, LABELS, FINISHED, beta_v=BETA, c_ref=C_REF)
    assert abs(float(loss) - 0.07125) < 1e-6 and abs(ALPHA * float(loss) - 0.007125) < 1e-7
    grad = jax.grad(lambda lz: ALPHA * self_reward_loss(lz, LABELS, FINISHED, beta_v=BETA, c_ref=C_REF)[0])(LZ)
    np.testing.assert_allclose(grad, [-0.0005, 0.00075, -0.0025, -0.00025], atol=1e-7)
    # verdicts r_s > 0.5: correct samples [True, False], wrong samples [False, False] -> (0.5 + 1) / 2
    assert abs(float(metrics["self_verify/accuracy"]) - 0.75) < 1e-6
    assert abs(float(metrics["self_verify/score_correct"]) - 0.7) < 1e-6


def test_worked_example_blended_advantages():
    advantages = group_advantages(LABELS[None])
    np.testing.assert_allclose(advantages, [[0.8660, -0.8660, 0.8660, -0.8660]], atol=1e-4)
    scores = self_reward_scores(LZ, beta_v=BETA, c_ref=C_REF)[None]
    blended = blend_self_advantages(advantages, scores, FINISHED[None], coef=0.1, min_std=0.1)
    np.testing.assert_allclose(blended, [[0.9073, -0.8387, 0.8075, -0.8761]], atol=1e-4)
    # a group whose self-scores barely differ keeps the verifier's advantages
    flat = blend_self_advantages(advantages, jnp.full((1, 4), 0.6), FINISHED[None], coef=0.1, min_std=0.1)
    np.testing.assert_allclose(flat, advantages, atol=1e-6)


def test_truncated_rows_get_no_loss_and_classes_are_balanced_over_the_batch():
    labels = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
    finished = jnp.array([True, True, True, True, False])
    # 4 finished: 3 correct (weight 4/6 each), 1 wrong (weight 4/2); the truncated row weighs 0
    np.testing.assert_allclose(class_balance_weights(labels, finished), [2 / 3, 2 / 3, 2 / 3, 2.0, 0.0], atol=1e-6)
    lz = jnp.array([-20.0, -15.0, -13.0, -22.0, -5.0])
    grad = jax.grad(lambda lz: self_reward_loss(lz, labels, finished, beta_v=BETA, c_ref=C_REF)[0])(lz)
    assert float(grad[4]) == 0.0
    only_correct = class_balance_weights(jnp.ones(3), jnp.ones(3, bool))  # no wrong sample: weights n/(2n_1)
    np.testing.assert_allclose(only_correct, [0.5, 0.5, 0.5], atol=1e-6)


def test_rise_verification_group_advantages():
    """Four verifications of a solution labelled -0.5: rewards [1, -0.5, 1, -1] -> GRPO advantages."""
    np.testing.assert_allclose(group_advantages(jnp.array([[1.0, -0.5, 1.0, -1.0]])),
                               [[0.8489, -0.6063, 0.8489, -1.0914]], atol=1e-4)


def test_auroc_equals_the_pairwise_count():
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(size=40), 1)  # many ties
    correct = rng.uniform(size=40) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(scores[correct], scores[~correct])]
    assert abs(auroc(scores, correct) - np.mean(pairs)) < 1e-12
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert np.isnan(auroc([0.1, 0.2], [True, True]))


def test_verdict_metrics_and_weighted_vote():
    assert balanced_accuracy([0.9, 0.15, 0.5, -0.05], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert best_of_n([[0.9, 0.15, 0.5, -0.05], [0.2, 0.7]], [[True, False, True, False], [True, False]]) == 0.5
    # W("579") = 0.9 + 0.5, W("578") = 0.15, W("512") = clip(-0.05) = 0
    assert self_weighted_vote(["579", "578", "579", "512"], [0.9, 0.15, 0.5, -0.05]) == "579"
    assert self_weighted_vote(["1", "2", "2"], [0.9, 0.3, 0.3]) == "1"  # plain majority would say "2"
    assert self_weighted_vote([None, None], [1.0, 1.0]) is None
