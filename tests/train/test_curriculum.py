"""SEC, the Self-Evolving Curriculum (jaxrl_self/train/curriculum.py, docs/curricula.md): the worked
example of docs/curricula.md to 1e-6, deterministic draws, the state's round trip through a
checkpoint, hinted resampling, and one short run of the RL recipe with SEC and hints."""
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import ConfigError, build_config
from jaxrl_self.recipes.rlvr import RLVR
from jaxrl_self.tasks.arithmetic import ArithmeticTask, MixedArithmeticTask
from jaxrl_self.tasks.encoding import encode_prompts
from jaxrl_self.tasks.iterator import CategoryIterator
from jaxrl_self.train import curriculum

import tiny_job

# docs/curricula.md's worked example: K = 3 arms (1-, 2-, 3-digit addition), G = 4, one problem per arm
STEP1 = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]], np.float32)
STEP2 = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
HALF_ROOT3 = np.sqrt(3.0) / 2  # 0.8660...


def softmax(x, temperature):
    e = np.exp(np.asarray(x, np.float64) / temperature)
    return e / e.sum()


@pytest.mark.parametrize("ddof, normalize_std, expected", [
    (0, True, [0.0, 1.0, HALF_ROOT3]),
    (1, True, [0.0, HALF_ROOT3, 0.75]),
    (0, False, [0.0, 0.5, 0.375]),  # Dr. GRPO: no std
])
def test_arm_rewards_of_the_worked_example(ddof, normalize_std, expected):
    np.testing.assert_allclose(curriculum.group_learnability(STEP1, ddof, normalize_std), expected, atol=1e-6)


def test_worked_example_two_steps():
    categories = jnp.arange(3)
    values = jnp.zeros(3)
    stats = curriculum.category_statistics(STEP1, STEP1, categories, 3, std_ddof=0)
    np.testing.assert_allclose(stats["groups"], [1, 1, 1])
    np.testing.assert_allclose(stats["zero_variance"], [1, 0, 0])
    np.testing.assert_allclose(stats["correct"], [4, 2, 1])
    values = curriculum.update(values, stats["learnability"], stats["groups"], 0.5)
    q1 = [0.0, 0.5, HALF_ROOT3 / 2]
    np.testing.assert_allclose(values, q1, atol=1e-6)
    np.testing.assert_allclose(values, [0.0, 0.5, 0.4330], atol=5e-5)  # as printed in the docs
    np.testing.assert_allclose(curriculum.policy(values, 1.0), softmax(q1, 1.0), atol=1e-6)
    np.testing.assert_allclose(curriculum.policy(values, 1.0), [0.2386, 0.3934, 0.3679], atol=5e-5)
    np.testing.assert_allclose(curriculum.policy(values, 0.2), softmax(q1, 0.2), atol=1e-6)
    np.testing.assert_allclose(curriculum.policy(values, 0.2), [0.0457, 0.5563, 0.3980], atol=5e-5)

    stats = curriculum.category_statistics(STEP2, STEP2, categories, 3, std_ddof=0)
    np.testing.assert_allclose(stats["learnability"], [0.0, HALF_ROOT3, 1.0], atol=1e-6)
    values = curriculum.update(values, stats["learnability"], stats["groups"], 0.5)
    q2 = [0.0, 0.25 + HALF_ROOT3 / 2, HALF_ROOT3 / 4 + 0.5]
    np.testing.assert_allclose(values, q2, atol=1e-6)
    np.testing.assert_allclose(values, [0.0, 0.6830, 0.7165], atol=5e-5)
    np.testing.assert_allclose(curriculum.policy(values, 1.0), softmax(q2, 1.0), atol=1e-6)
    np.testing.assert_allclose(curriculum.policy(values, 1.0), [0.1989, 0.3938, 0.4072], atol=5e-5)


def test_groups_of_one_category_average_and_arms_not_drawn_keep_their_value():
    rewards = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)  # two groups of category 2
    stats = jax.jit(curriculum.category_statistics, static_argnums=(3, 4))(rewards, rewards, jnp.array([2, 2, 0]), 4, 0)
    np.testing.assert_allclose(stats["groups"], [1, 0, 2, 0])
    values = curriculum.update(jnp.array([0.3, 0.7, 0.1, 0.9]), stats["learnability"], stats["groups"], 0.5)
    np.testing.assert_allclose(values, [0.5 * HALF_ROOT3 + 0.15, 0.7, 0.5 * 0.5 + 0.05, 0.9], atol=1e-6)


def test_draws_are_a_function_of_the_key():
    values, key = jnp.array([0.0, 0.5, 0.43]), jax.random.key(7)
    draw = jax.jit(curriculum.draw_categories, static_argnums=(1, 3))
    first = draw(values, 0.2, curriculum.category_key(key, 0), 64)
    assert first.dtype == jnp.int32 and first.shape == (64,)
    np.testing.assert_array_equal(first, curriculum.draw_categories(values, 0.2, curriculum.category_key(key, 0), 64))
    assert not np.array_equal(first, draw(values, 0.2, curriculum.category_key(key, 1), 64))
    many = np.asarray(draw(values, 0.2, key, 20_000))
    np.testing.assert_allclose(np.bincount(many, minlength=3) / many.size, softmax(values, 0.2), atol=0.015)


def test_category_iterator_draws_each_category_and_resumes():
    categories = MixedArithmeticTask(digits=3).categories("train")[:300]
    iterator = CategoryIterator(categories, 3, seed=1)
    wanted = np.array([2, 0, 2, 1, 1, 2])
    first = iterator.next(wanted)
    np.testing.assert_array_equal(categories[first], wanted)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [iterator.next(wanted) for _ in range(40)]  # past the end of an epoch of each category
    restored = CategoryIterator(categories, 3, seed=1)
    restored.set_state(state)
    for batch in expected:
        np.testing.assert_array_equal(restored.next(wanted), batch)
    with pytest.raises(ValueError, match="seed"):
        CategoryIterator(categories, 3, seed=2).set_state(state)
    with pytest.raises(ValueError, match=r"categories \[3\] have no examples"):
        CategoryIterator(categories, 4, seed=1)


def test_sec_state_round_trips_through_a_checkpoint(tmp_path):
    """The SEC values and category streams saved in a checkpoint's metadata (the recipe's `extra`)
    continue with the same draws and values as the run that saved them."""
    categories = MixedArithmeticTask(digits=3).categories("train")
    key = jax.random.key(3)

    def step(extra, step_index):
        iterator = CategoryIterator(categories, 3, seed=1)
        if extra["iterator"]:
            iterator.set_state(extra["iterator"])
        step_key = jax.random.fold_in(key, step_index)
        wanted = np.asarray(curriculum.draw_categories(extra["sec_values"], 0.2, curriculum.category_key(step_key, 0), 8))
        indices = iterator.next(wanted)
        rewards = np.asarray(jax.random.bernoulli(step_key, 0.5, (8, 4)), np.float32)
        stats = curriculum.category_statistics(rewards, rewards, wanted, 3)
        values = curriculum.update(extra["sec_values"], stats["learnability"], stats["groups"], 0.5)
        return {"iterator": iterator.get_state(), "sec_values": [float(v) for v in values]}, indices

    extra = {"iterator": None, "sec_values": [0.0] * 3}
    for i in range(2):
        extra, _ = step(extra, i)
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save(2, {"w": jnp.zeros(2)}, {"phase": "rl", "extra": extra})
    checkpointer.close()
    uninterrupted = [step(extra, 2)]
    uninterrupted.append(step(uninterrupted[0][0], 3))

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    _, _, meta = checkpointer.restore_latest(lambda meta: {"w": jnp.zeros(2)})
    checkpointer.close()
    resumed = [step(meta["extra"], 2)]
    resumed.append(step(resumed[0][0], 3))
    for (extra_a, indices_a), (extra_b, indices_b) in zip(uninterrupted, resumed):
        assert extra_a == extra_b
        np.testing.assert_array_equal(indices_a, indices_b)
    np.testing.assert_array_equal(np.asarray(extra["sec_values"], np.float32).astype(float), extra["sec_values"])


def fake_context(hint_fraction=0.5, max_new_tokens=40):
    task = MixedArithmeticTask(digits=3)
    config = SimpleNamespace(curriculum=SimpleNamespace(hint_fraction=hint_fraction), rl=SimpleNamespace(group_size=2),
                             task=SimpleNamespace(max_reference_len=8))
    ctx = SimpleNamespace(config=config, tokenizer=task.tokenizer, prompt_len=16,
                          encode_prompts=lambda prompts, length: encode_prompts(task.tokenizer, prompts, length))
    recipe = RLVR.__new__(RLVR)  # only the prompt and hint helpers: no model
    recipe.examples = task.examples("train")
    recipe.method = SimpleNamespace(prompts=lambda examples: [e.prompt for e in examples],
                                    references=lambda examples: [e.reference for e in examples])
    recipe.hint_tokens = int(np.ceil(hint_fraction * max_new_tokens))
    recipe.prompt_len = ctx.prompt_len + recipe.hint_tokens
    return ctx, recipe


def test_a_hint_is_the_start_of_the_worked_solution_in_the_prompt():
    """Hinted prompts end with the first half of the solution's tokens; the hint is part of the
    prompt, so it is never a completion token and never in the loss."""
    ctx, recipe = fake_context()
    example = recipe.examples[2]  # 3-digit
    solution = ctx.tokenizer.encode(example.solution)
    assert recipe.hint(ctx, example) == ctx.tokenizer.decode(solution[: len(solution) // 2])
    tokens, mask, _ = recipe.prompts_of(ctx, [2, 2], hinted=np.array([True, False]))
    assert tokens.shape == (2, 16 + 20)
    prompt = ctx.tokenizer.encode(example.prompt)
    hinted = tokens[0][mask[0]].tolist()
    assert hinted[1:] == prompt + solution[: len(solution) // 2]
    assert tokens[1][mask[1]].tolist()[1:] == prompt


def test_all_fail_groups_are_replaced_by_their_hinted_samples():
    ctx, recipe = fake_context()
    g = 2
    batch = {"prompt_tokens": np.zeros((6, 3), np.int32), "completion_tokens": np.zeros((6, 4), np.int32),
             "example": np.repeat([5, 6, 7], g)}
    rewards = {"reward": np.array([0, 0, 1, 0, 0, 0], np.float32), "correct": np.array([0, 0, 1, 0, 0, 0], np.float32)}
    calls = []

    def sample_groups(indices, round_index, hinted=None):
        calls.append((list(indices), round_index, list(hinted)))
        new = {"prompt_tokens": np.ones((6, 3), np.int32), "completion_tokens": np.ones((6, 4), np.int32),
               "example": np.repeat(indices, g)}
        new_rewards = {"reward": np.array([1, 1, 1, 1, 1, 0], np.float32), "correct": np.array([1, 1, 1, 1, 1, 0], np.float32)}
        return (new, new_rewards), new_rewards["reward"], {}

    valid = np.array([False, True, False])
    batch, rewards, valid, metrics = recipe.with_hints(sample_groups, batch, rewards, valid, 4, True, g)
    assert calls == [([5, 6, 7], 4, [True, False, True])]
    assert "example" not in batch
    np.testing.assert_array_equal(batch["prompt_tokens"][:, 0], [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(rewards["reward"], [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(valid, [False, True, True])  # group 0 solved every time: no signal
    assert metrics == {"hints/groups": 2 / 3, "hints/solved": 1.0}


@pytest.mark.parametrize("override, message", [
    ("curriculum.name=bandit", "config.curriculum.name: must be one of"),
    ("curriculum.step_size=0.0", "config.curriculum.step_size: must be in (0, 1]"),
    ("curriculum.temperature=-1.0", "config.curriculum.temperature: must be > 0"),
    ("curriculum.hint_fraction=1.0", "config.curriculum.hint_fraction: must be in (0, 1)"),
    ("method.loop=star", "config.method.loop: curriculum.name = 'sec' is for the RL recipe"),
    ("rl.algorithm=ppo rl.group_size=1", "config.rl.group_size: curriculum.name = 'sec' needs a group of >= 2"),
    ("task.self_check=True", "config.task.self_check: task 'arithmetic_mixed' does not read it"),
    ("curriculum.hint_all_fail=True curriculum.hint_fraction=0.9", "exceeds model.max_position_embeddings = 128"),
    ("curriculum.hint_all_fail=True rl.reward=ttrl", "config.rl.reward: curriculum.hint_all_fail needs the verifier's"),
])
def test_bad_curriculum_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as error:
        build_config(tiny_job.REPO / "configs" / "arithmetic_sec.py", [f"--config.{o}" for o in override.split()])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_sec_needs_a_task_of_several_categories():
    task = ArithmeticTask(digits=2)
    config = SimpleNamespace(curriculum=SimpleNamespace(name="sec", hint_all_fail=False), method=SimpleNamespace(test_time=False),
                             task=SimpleNamespace(name="arithmetic"), seed=0)
    recipe = RLVR.__new__(RLVR)
    recipe.examples = task.examples("train")
    with pytest.raises(ConfigError, match="needs a task of several problem categories; task 'arithmetic' has one"):
        recipe.setup_curriculum(SimpleNamespace(config=config, task=task, prompt_len=16))


def test_sec_run_logs_its_categories_and_checkpoints_its_values(tmp_path):
    """Three RL steps of a tiny 1-2-digit run with SEC and hints: per-category metrics, the SEC values
    in the checkpoint equal to the logged ones, and the hints' metrics."""
    workdir = tmp_path / "run"
    result = tiny_job.train(workdir, tmp_path / "cache", "--config.task.name=arithmetic_mixed", "--config.task.digits=2",
                            "--config.curriculum.name=sec", "--config.curriculum.hint_all_fail=True",
                            "--config.rl.steps=3", "--config.sft.steps=2", "--config.eval.every=3",
                            "--config.rl.max_new_tokens=24")  # a 2-digit worked solution is 19 tokens
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in tiny_job.metrics_rows(workdir) if "curriculum/zero_variance" in row]
    assert len(rows) == 3
    for row in rows:
        assert row["curriculum/1-digit/share"] + row["curriculum/2-digit/share"] == pytest.approx(1.0)
        assert sum(row[f"curriculum/{k}-digit/probability"] for k in (1, 2)) == pytest.approx(1.0)
        assert 0 <= row["hints/groups"] <= 1
    last = tiny_job.metrics_rows(workdir)[-1]
    assert {"eval/1-digit/accuracy", "eval/2-digit/accuracy"} <= set(last)
    step = tiny_job.checkpoint_steps(workdir / "checkpoints")[-1]
    meta = json.loads((workdir / "checkpoints" / str(step) / "meta" / "metadata").read_text())
    assert meta["extra"]["sec_values"] == [last[f"curriculum/{k}-digit/value"] for k in (1, 2)]
    assert len(meta["extra"]["iterator"]["positions"]) == 2
