"""Self-rewarding (recipes/self_rewarding.py): the judge prompt and its tokens, score parsing
(malformed judgements -> None), pair construction (ties and unscored responses skipped), the
evaluation-only verifier metrics of the pairs, the judge seed examples, and the judge step end to
end with a stub sampler; and (opt-in) one round from the warm start loaded as a pretrained model."""
import json
from pathlib import Path
from types import SimpleNamespace

import jax
import pytest

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.models.tokenizer import ExtendedTokenizer
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.recipes import self_rewarding as sr
from jaxrl_self.tasks.arithmetic import ArithmeticTask, make_tokenizer
from recipe_helpers import pretrained_config, warm_start_params, write_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_judge_prompt_and_extended_tokenizer_round_trip():
    base = make_tokenizer()
    tok = ExtendedTokenizer(base, (sr.JUDGE_TOKEN, sr.SCORE_TOKEN))
    prompt = sr.judge_prompt("347+285=", "<think>7+5=12</think><answer>632</answer>")
    assert prompt == "<judge>347+285=<think>7+5=12</think><answer>632</answer>"
    text = prompt + sr.judgement_text(5)
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.vocab_size == base.vocab_size + 2
    assert ids[0] == base.vocab_size and ids.count(base.vocab_size + 1) == 1  # "<judge>" and "Score:" are one token each
    assert tok.encode("347+285=") == base.encode("347+285=")  # task token ids unchanged
    assert tok.decode([base.bos_id, *base.encode("12"), base.eos_id]) == "12"


@pytest.mark.parametrize("text,score", [
    ("Score: 5", 5), ("Score:0", 0), (" Score: 3 \n", 3), ("the sum is 632 Score: 4", 4), ("Score: 3Score: 4", 4),
    ("Score: 6", None), ("Score: 12", None), ("Score:", None), ("Score: x", None), ("5", None), ("", None),
    ("Score: 4 1", None), ("Score: -1", None), ("score: 4", None),
])
def test_parse_score_including_malformed(text, score):
    assert sr.parse_score(text, max_score=5) == score


def test_preference_pairs_highest_vs_lowest_skipping_ties_and_unscored():
    scores = [[1.0, 5.0, None, 0.0], [3.0, 3.0], [None, 2.0], [2.0, None, 4.0, 4.0, 0.0, 0.0], [None, None], []]
    pairs, skipped = sr.preference_pairs(scores)
    # first highest and first lowest: prompt 3 -> chosen 2 (not 3), rejected 4 (not 5)
    assert pairs == [(0, 1, 3), (3, 2, 4)]
    assert skipped == {"ties": 1, "too_few": 3}


def test_verifier_pair_metrics_are_evaluation_only_counts():
    # 2 prompts x 3 responses; pairs (prompt, chosen, rejected)
    correct = [True, False, False, True, True, False]
    metrics = sr.verifier_pair_metrics([(0, 0, 1), (1, 2, 0)], correct, group=3)
    assert metrics == {"self_rewarding/chosen_correct": 0.5, "self_rewarding/rejected_correct": 0.5,
                       "self_rewarding/pairs_verifier_ordered": 0.5}
    assert set(sr.verifier_pair_metrics([], correct, group=3).values()) == {0.0}


def test_judge_seed_examples_are_labelled_by_the_verifier():
    task = ArithmeticTask(digits=2, demo_error_rate=0.5)
    examples = task.examples("train")[:40]
    prompts, targets = sr.judge_seed_examples(task, examples, max_score=5, seed=0)
    assert set(targets) == {"Score: 5", "Score: 0"}
    for example, prompt, target in zip(examples, prompts, targets):
        assert prompt.startswith(sr.JUDGE_TOKEN + example.prompt)
        response = prompt[len(sr.JUDGE_TOKEN + example.prompt):]
        assert (target == "Score: 5") == bool(task.score(response, example.reference)["correct"])


def test_judge_scores_parse_and_discard(monkeypatch):
    """`SelfRewarding.judge` with a stub generator: malformed judgements are discarded and counted,
    judge prompts longer than judge_prompt_len are not judged."""
    cfg = SimpleNamespace(max_score=5, judge_prompt_len=20, judge_samples=2)
    recipe = sr.SelfRewarding.__new__(sr.SelfRewarding)
    recipe.cfg, recipe.judge_sampler = cfg, None
    answers = {"<answer>7</answer>": ["Score: 5", "Score: 4"], "<answer>8</answer>": ["Score: 9", "Score: 0"],
               "<answer>9</answer>": ["oops", "Score:"]}

    def generate(sampler, params, prompts, key, batch_size, prompt_len=None):
        assert prompt_len == 20
        return [answers[p[len("<judge>3+4="):]] for p in prompts]

    ctx = SimpleNamespace(generate=generate, fits=lambda text, length: len(text) < 40,
                          config=SimpleNamespace(method=SimpleNamespace(batch_size=8)))
    responses = ["<answer>7</answer>", "<answer>8</answer>", "<answer>9</answer>", "<answer>" + "1" * 30 + "</answer>"]
    scores, malformed, too_long = recipe.judge(ctx, None, ["3+4="] * 4, responses, jax.random.key(0))
    assert scores == [4.5, 0.0, None, None] and malformed == 3 and too_long == 1


@pytest.mark.long  # configs/self_rewarding.py's warm start and one round, ~2 min on 2 cores: opt-in (docs/testing.md)
def test_one_round_from_a_pretrained_judge_raises_held_out_accuracy(tmp_path):
    """configs/self_rewarding.py's warm start (worked solutions and judged examples), written as a
    Hugging Face directory and loaded through `model.init_from`; its first round prefers correct
    responses and lifts held-out accuracy (docs/results.md: 0.635 -> 0.705, chosen correct 65%,
    rejected 2%)."""
    config = load_config_file(CONFIGS / "self_rewarding.py")
    config.method.iterations = 1
    config.mesh.num_devices = 1  # one device, as the CLI on CPU (tests/conftest.py)
    validate(config)
    pretrained = write_pretrained(config, warm_start_params(config), tmp_path / "pretrained")
    summary = train_and_evaluate(pretrained_config(config, pretrained), tmp_path / "run")
    accuracy = summary["eval/accuracy"]
    assert accuracy["iteration 1"] >= accuracy["after SFT"] + 0.03, summary
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (round_row,) = [row for row in rows if "self_rewarding/chosen_correct" in row]
    assert round_row["self_rewarding/chosen_correct"] > round_row["self_rewarding/rejected_correct"] + 0.2, round_row
