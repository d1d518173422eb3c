"""Label-free reward recipes on hand-written completions (docs/algorithms.md, TTRL to Co-Reward): worked examples,
row selection, configuration errors, and that the references never reach "reward"."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.config import ConfigError, load_config_file
from jaxrl_self.methods import build_reward_method
from jaxrl_self.models.tokenizer import pad_batch
from jaxrl_self.rewards.host import encode_references
from jaxrl_self.rewards.self_rewards import negative_entropy, self_certainty
from jaxrl_self.tasks.arithmetic import ArithmeticTask
from jaxrl_self.train.rl_step import make_reward_scorer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
T = 24


def make_method(name, group_size=4, prompts_per_step=2, micro_batches=1, **method):
    config = load_config_file(CONFIGS / "default.py")
    config.rl.update(reward=name, group_size=group_size, prompts_per_step=prompts_per_step, micro_batches=micro_batches,
                     max_new_tokens=T)
    config.method.update(method)
    task = ArithmeticTask(digits=1)
    return config, build_reward_method(config, task, task.tokenizer)


def rollout(answers, seed=0):
    """A batch whose completion i is "<answer>{answers[i]}</answer>" (no tags for None), plus sampler statistics."""
    tokenizer = ArithmeticTask(digits=1).tokenizer
    texts = ["<think>1+1=2</think>" + ("" if a is None else f"<answer>{a}</answer>") for a in answers]
    tokens, mask = pad_batch([tokenizer.encode(t) + [tokenizer.eos_id] for t in texts], T, tokenizer.pad_id, side="right")
    rng = np.random.default_rng(seed)
    return {"completion_tokens": tokens, "completion_mask": mask,
            "sampler_entropy": rng.uniform(0, 2, (len(answers), T)).astype(np.float32),
            "sampler_mean_logp_vocab": rng.uniform(-9, -3, (len(answers), T)).astype(np.float32)}


def score(method, batch, references):
    return jax.jit(method.reward_fn)(batch, encode_references(references, 8))


def test_ttrl_worked_example():
    # docs/algorithms.md#ttrl-majority-vote: answers [3, 3, 5, None] -> label 3, maj_ratio 0.5, r = [1, 1, 0, 0]
    _, method = make_method("ttrl")
    rewards = score(method, rollout([3, 3, 5, None, 7, 8, 8, 7]), ["3"] * 4 + ["8"] * 4)
    np.testing.assert_array_equal(rewards["reward"], [1, 1, 0, 0, 1, 0, 0, 1])  # tie 7/8: the earliest (7) wins
    np.testing.assert_allclose(rewards["majority_ratio"], [0.5] * 8)
    np.testing.assert_array_equal(rewards["correct"], [1, 1, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(rewards["label_accuracy"], [1] * 4 + [0] * 4)
    np.testing.assert_array_equal(rewards["reward_accuracy"], [1] * 4 + [0] * 4)


def test_ttrl_without_any_answer_rewards_nothing():
    _, method = make_method("ttrl")
    rewards = score(method, rollout([None] * 4 + [1] * 4), ["1"] * 8)
    np.testing.assert_array_equal(rewards["reward"], [0] * 4 + [1] * 4)
    np.testing.assert_allclose(rewards["majority_ratio"], [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(rewards["label_accuracy"], [0] * 4 + [1] * 4)


def test_ttrl_select_rows_keeps_a_random_subset_of_each_group():
    _, method = make_method("ttrl", group_size=8, prompts_per_step=3, ttrl_train_samples=3)
    batch = {"row": jnp.arange(24), "completion_mask": jnp.ones((24, 5))}
    picked = np.asarray(jax.jit(method.select_rows)(batch, {}, jax.random.key(1))["row"])
    assert picked.shape == (9,)
    groups = picked.reshape(3, 3)
    for g, rows in enumerate(groups):
        assert len(set(rows)) == 3 and all(g * 8 <= r < (g + 1) * 8 for r in rows)
    other = np.asarray(jax.jit(method.select_rows)(batch, {}, jax.random.key(2))["row"])
    assert not np.array_equal(picked, other)
    _, keep_all = make_method("ttrl", group_size=8, prompts_per_step=3)
    assert keep_all.select_rows(batch, {}, jax.random.key(1)) is batch


def test_co_reward_uses_the_other_views_majority():
    _, method = make_method("co_reward")
    # groups: [original q0, original q1, rephrased q0, rephrased q1]
    answers = [7, 7, 8, None] + [5, 5, 5, 5] + [8, 8, 8, 7] + [None] * 4
    rewards = score(method, rollout(answers), ["8"] * 4 + ["5"] * 4 + ["8"] * 4 + ["5"] * 4)
    np.testing.assert_array_equal(rewards["reward"], [0, 0, 1, 0] + [0] * 4 + [0, 0, 0, 1] + [0] * 4)
    np.testing.assert_array_equal(rewards["label_accuracy"], [1] * 4 + [0] * 4 + [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(rewards["view_agreement"], [0] * 16)
    np.testing.assert_allclose(rewards["majority_ratio"], [0.75] * 4 + [0] * 4 + [0.5] * 4 + [1] * 4)


def test_co_reward_prompts_are_originals_then_rephrasings():
    _, method = make_method("co_reward")
    examples = ArithmeticTask(digits=2).examples("train")[:3]
    assert method.prompts(examples) == [e.prompt for e in examples] + [e.rephrasing for e in examples]
    assert method.references(examples) == [e.reference for e in examples] * 2
    with pytest.raises(ValueError, match="rephrasing"):
        method.prompts([examples[0].__class__("1+2=", "3")])


def test_intuitor_and_rent_read_the_sampler_statistics():
    batch = rollout([1, 2, 3, 4])
    mask = batch["completion_mask"]
    _, intuitor = make_method("intuitor")
    np.testing.assert_allclose(score(intuitor, batch, ["1"] * 4)["reward"],
                               self_certainty(batch["sampler_mean_logp_vocab"], mask, intuitor.vocab_size), rtol=1e-6)
    _, rent = make_method("rent")
    np.testing.assert_allclose(score(rent, batch, ["1"] * 4)["reward"], negative_entropy(batch["sampler_entropy"], mask),
                               rtol=1e-6)


def test_only_intuitor_and_rent_ask_the_sampler_for_statistics():
    """The RL recipe samples with `token_statistics` only for methods whose reward reads them."""
    asks = {name: make_method(name)[1].needs_token_statistics for name in ("ttrl", "intuitor", "rent", "co_reward", "verifier")}
    assert asks == {"ttrl": False, "intuitor": True, "rent": True, "co_reward": False, "verifier": False}


@pytest.mark.parametrize("name", ["ttrl", "intuitor", "rent", "co_reward"])
def test_references_never_reach_the_reward(name):
    config, method = make_method(name)
    scorer = make_reward_scorer(config.rl, method)
    batch = rollout([3, 3, 5, None, 4, 4, 4, 1] * (2 if name == "co_reward" else 1))
    n = batch["completion_tokens"].shape[0]
    gold = encode_references(["3"] * 4 + ["4"] * 4 + ["3"] * 4 + ["4"] * 4, 8)[:n]
    scrambled = encode_references([str(9 - i % 7) for i in range(n)], 8)
    true_rewards, _ = scorer(batch, gold)
    scrambled_rewards, _ = scorer(batch, scrambled)
    np.testing.assert_array_equal(true_rewards["reward"], scrambled_rewards["reward"])
    assert not np.array_equal(true_rewards["correct"], scrambled_rewards["correct"])  # the monitor did see them


def test_configuration_errors_name_the_key():
    with pytest.raises(ConfigError, match="method.ttrl_train_samples"):
        make_method("ttrl", group_size=4, ttrl_train_samples=5)
    with pytest.raises(ConfigError, match="method.ttrl_train_samples"):  # 1 * 3 rows do not split into 2 micro-batches
        make_method("ttrl", group_size=4, prompts_per_step=1, ttrl_train_samples=3, micro_batches=2)
    with pytest.raises(ConfigError, match="method.answer_max_tokens"):
        make_method("rent", answer_max_tokens=T + 1)
    with pytest.raises(ConfigError, match="rl.reward"):
        make_method("no_such_method")

