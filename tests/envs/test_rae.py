"""Role-conditioned advantage estimation on the worked example of docs/games.md#rae, and its use
over a batch of episodes in completion order."""
from __future__ import annotations

import numpy as np

from jaxrl_self.algorithms.rae import rae_advantages
from jaxrl_self.envs.base import Episode
from jaxrl_self.recipes.spiral import role_advantages


def test_worked_example():
    returns = np.array([[1, -1], [1, -1], [-1, 1], [0.5, -1.5]])  # game 4: player 1's invalid move
    advantages, baselines = rae_advantages(returns, np.zeros(2), 0.95)
    np.testing.assert_allclose(advantages, [[1, -1], [0.95, -0.95], [-1.0975, 1.0975], [0.457375, -1.457375]], rtol=1e-6)
    np.testing.assert_allclose(baselines, [0.065494, -0.115494], atol=1e-6)


def test_matches_a_sequential_numpy_loop():
    rng = np.random.default_rng(0)
    returns, b = rng.choice([-2.0, -1.0, 1.0, 2.0], size=(20, 2)), np.array([0.3, -0.2])
    expected, baseline = [], b.copy()
    for r in returns:
        expected.append(r - baseline)  # read before the update
        baseline = 0.9 * baseline + 0.1 * r
    advantages, baselines = rae_advantages(returns, b, 0.9)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(baselines, baseline, rtol=1e-5)


def test_episodes_are_taken_in_the_order_they_ended():
    episodes = [Episode(returns=(1.0, -1.0), contexts=[], actions=[], end_turn=3),
                Episode(returns=(-1.0, 1.0), contexts=[], actions=[], end_turn=1)]
    advantages, baselines = role_advantages(episodes, [0.0, 0.0], 0.5)
    # game 1 ended first: it sees the initial baselines, game 0 the ones after game 1
    np.testing.assert_allclose(advantages, [[1.5, -1.5], [-1.0, 1.0]])
    np.testing.assert_allclose(baselines, [0.25, -0.25])
