"""SPIRAL self-play (docs/games.md) on textbook Kuhn Poker with a tiny char-level model from scratch.

Warm start: 300 SFT steps on uniformly random legal moves (with 150, 1.4-2.2% of the answers
sampled in RL were malformed, since the KL to the warm start holds its format; with 300, 0.3-0.6%).
The observation ends with the player's card and the answer calls the move out first, a letter of
its own per move ("Bet \\boxed{Bet}", "Pass \\boxed{Check}"), so the move is chosen at the card's
own position by a token no other move shares (docs/games.md#results: with the card earlier in the
context, or Check and Call both starting with "C", the tiny model ended betting and calling with
every card). Then self-play at temperature 0.7 with chip payoffs and RAE baselines, one
REINFORCE-style update (clipped surrogate, token sums over a constant) per 32 games, 250 steps at a
constant learning rate 2e-4, with a k3 KL penalty to the warm start of 0.3 on every answer token:
on each answer's first token, the move's letter (method.decision_kl_coef), it keeps the move
probabilities off 0 and 1, so that self-play leaves the bet/call-everything point that a card-blind
warm start runs into; on the format tokens (rl.kl_coef) it keeps the decision from moving into the
box (with 0.1 there, seed 0 learned "Pas \\boxed{Bet}" and bet with every card from step 150).
Measured (docs/games.md#results): NashConv 0.21-0.26 and at most 0.7% invalid moves in the
evaluation for seeds 0-4, both targets (<= 0.35 and < 1%) on every seed; 130 s on a quiet 2-core
machine; at 200 steps seed 3's answers were briefly malformed, hence 250. Reported after SFT and
after RL: the exact NashConv of the policy's answer probabilities, its exact win rate against a
random player, the invalid-move rate and per-seat response lengths of sampled self-play games.

    jaxrl-self train --config configs/kuhn_poker.py --workdir /tmp/kuhn
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("default.py"))
    config.task.max_prompt_len = 120  # the first observation (rules, role, card), tokens incl. BOS
    config.model.update(dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=232))
    config.sft.update(dict(steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=10))
    config.rl.update(dict(algorithm="dr_grpo", steps=250, max_new_tokens=20, temperature=0.7, learning_rate=2e-4,
                          kl_coef=0.3, lr_schedule="constant"))  # the KL to the warm start on the answers' format tokens
    config.eval.update(dict(every=50))
    config.checkpoint.every = 50
    config.method.loop = "spiral"  # jaxrl_self/recipes/spiral.py (SPIRAL.config_defaults lists its options)
    config.method.game = "kuhn_poker"
    config.method.games_per_step = 32
    config.method.transcript_len = 88
    config.method.eval_games = 64
    config.method.decision_kl_coef = 0.3  # the KL on each answer's first token, the move's letter (docs/games.md#results)
    return config
