"""The self-play loop (envs.base.play, RAE in completion order, per-turn advantages) with a tabular
softmax policy on Kuhn Poker: a fast reference for the environment, RAE and NashConv pipeline
(docs/games.md#a-tabular-check)."""
from __future__ import annotations

import numpy as np

from jaxrl_self.envs import KuhnPoker, Piece, boxed, play
from jaxrl_self.envs.kuhn_poker import DECISIONS
from jaxrl_self.eval.games import UNIFORM_KUHN, nash_conv
from jaxrl_self.recipes.spiral import role_advantages


def tabular_act(logits, rng, taken):
    """An `act` sampling from softmax(logits[information set]); records (game, player, set, action index)."""
    def act(requests):
        responses = []
        for r in requests:
            cards, history = r.state
            key = (r.player, cards[r.player], history)
            p = np.exp(logits[key] - logits[key].max())
            a = int(rng.choice(2, p=p / p.sum()))
            taken.append((r.game, r.player, key, a))
            responses.append(Piece(boxed(DECISIONS[history][1][a]), by_policy=True))
        return responses
    return act


def policy_of(logits):
    return {key: np.exp(v - v.max()) / np.exp(v - v.max()).sum() for key, v in logits.items()}


def self_play(steps: int, games: int = 64, lr: float = 0.3, alpha: float = 0.95, seed: int = 0):
    """REINFORCE on the tabular logits with RAE advantages (the gradient averaged over turns); returns
    (NashConv every 50 steps, the final baselines)."""
    env, rng = KuhnPoker(), np.random.default_rng(seed)
    logits = {key: np.zeros(2) for key in UNIFORM_KUHN}
    baselines, curve = np.zeros(2), []
    for step in range(steps):
        taken = []
        episodes = play(env, [env.reset(rng) for _ in range(games)], tabular_act(logits, rng, taken))
        advantages, baselines = role_advantages(episodes, baselines, alpha)
        policy = policy_of(logits)
        grads = {key: np.zeros(2) for key in logits}
        for game, player, key, a in taken:
            grads[key] += advantages[game, player] * (np.eye(2)[a] - policy[key])
        for key in logits:
            logits[key] += lr * grads[key] / len(taken)
        if step % 50 == 49:
            curve.append(nash_conv(policy_of(logits)))
    return curve, baselines


def test_tabular_self_play_approaches_nash():
    curve, baselines = self_play(400)
    assert curve[0] > curve[-1]
    assert curve[-1] <= 0.25, curve
    assert np.all(np.abs(baselines) < 1.0)
