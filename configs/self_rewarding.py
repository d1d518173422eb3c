"""Self-rewarding (docs/algorithms.md#self-rewarding) on 2-digit addition (a short CPU run) whose SFT
demonstrations drop the final carry digit half of the time.

The warm start mixes the worked solutions with judged seed examples ("<judge>" + prompt + response
-> "Score: 5" if the verifier accepts the response, "Score: 0" otherwise); afterwards the model
scores its own samples (4 per prompt), and DPO trains on its (highest, lowest) pairs with the
previous iterate as reference. See jaxrl_self/recipes/self_rewarding.py.

    jaxrl-self train --config configs/self_rewarding.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.digits = 2
    config.rl.max_new_tokens = 32  # the longest 2-digit worked solution is 23 tokens + EOS
    config.sft.steps = 200
    config.method.update(dict(
        loop="self_rewarding",  # jaxrl_self/recipes/__init__.py
        iterations=2,  # M1 -> M2 -> M3
        num_problems=256,  # fresh training prompts per iteration
        samples_per_prompt=4,
        temperature=0.7,
        judge_fraction=0.3,  # share of the warm start's examples that are judged seed examples
        judge_prompt_len=64,  # tokens of "<judge>" + prompt + response, incl. BOS
        judge_new_tokens=6,  # "Score: 5" + EOS is 4 tokens
        judge_samples=1,  # judgements per response (greedy when 1; else sampled and averaged)
        judge_temperature=0.7,
        max_score=5,
        beta=0.1,
        train_steps=10,  # DPO steps per iteration, ~3 epochs of ~100 pairs (60 collapsed held-out accuracy: README)
        train_batch_size=32,
        learning_rate=1e-4,
        batch_size=256,  # prompts per sampler call
    ))
    return config
