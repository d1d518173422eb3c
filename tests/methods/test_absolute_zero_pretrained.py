"""Absolute Zero from a pretrained model (`config.model.init_from`, `method.few_shot`): the worked
examples that start every prompt, the newline stop tokens, the config errors, and a short self-play
run of a tiny random Llama saved as a Hugging Face checkpoint with a BPE tokenizer trained here
(nothing downloaded; `configs/absolute_zero_smollm2.py` is the real-model config)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from jaxrl_self.config import ConfigError, load_config_file, validate
from jaxrl_self.recipes import absolute_zero as az
from jaxrl_self.recipes import absolute_zero_tasks as azt
from jaxrl_self.recipes import train_and_evaluate
from recipe_helpers import built

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FEW_SHOT = 2


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random LlamaForCausalLM and a byte-level BPE tokenizer trained on task prompts."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    rng = np.random.default_rng(0)
    corpus = [azt.solver_prompt(azt.random_task(kind, rng)) + "\n" for kind in azt.KINDS for _ in range(50)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(directory)
    config = transformers.LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=256, eos_token_id=tokenizer.token_to_id("<|endoftext|>"))
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return str(directory)


def pretrained_config(init_from: str):
    config = load_config_file(CONFIGS / "absolute_zero.py")
    config.model.init_from = init_from
    config.model.max_position_embeddings = 256
    config.task.max_prompt_len = 160
    config.sft.steps = 0
    config.rl.update(dict(steps=2, group_size=2, max_new_tokens=16, micro_batches=2))
    config.method.update(dict(proposals_per_kind=2, eval_tasks_per_kind=2, few_shot=FEW_SHOT))
    config.eval.every = 1000
    config.mesh.num_devices = 1
    validate(config)
    return config


def _solved(line: str) -> bool:
    """Whether a solver worked example `<solve><kind>...answer` is a correct solution (recomputed)."""
    if m := re.fullmatch(r"<solve><ded><prog>(.+)<in>(-?\d+)<out>(-?\d+)", line):
        return azt.reference_output(m[1], int(m[2])) == int(m[3])
    if m := re.fullmatch(r"<solve><abd><prog>(.+)<out>(-?\d+)<in>(-?\d+)", line):
        return azt.reference_output(m[1], int(m[3])) == int(m[2])
    m = re.fullmatch(r"<solve><ind>((?:<in>-?\d+<out>-?\d+)+)<prog>(.+)", line)
    pairs = re.findall(r"<in>(-?\d+)<out>(-?\d+)", m[1])
    return all(azt.reference_output(m[2], int(x)) == int(y) for x, y in pairs)


def test_worked_examples_start_every_prompt_and_are_not_held_out(hf_dir):
    play, _ = built(pretrained_config(hf_dir))
    task = play.eval_tasks[0]
    for role, prompt in (("solve", play.solver_prompt(task)), ("propose", play.proposer_prompt(task))):
        *examples, own = prompt.split("\n")
        assert own == (azt.solver_prompt(task) + azt.ANSWER_MARKERS[task.kind] if role == "solve" else azt.proposer_prompt(task))
        assert len(examples) == FEW_SHOT and all(e.startswith(f"<{role}><{task.kind}>") for e in examples)
    for kind in azt.KINDS:
        solutions = play.prefix["solve", kind].splitlines()
        assert len(solutions) == FEW_SHOT and all(_solved(line) for line in solutions), solutions
        for line in play.prefix["propose", kind].splitlines():
            split = line.index("<prog>", len(f"<propose><{kind}><prog>"))  # reference prompt | proposal
            program, _ = azt.parse_proposal(kind, line[split:])
            assert azt.check_program(program) == azt.OK and line[:split] not in play.held_out_prompts, line
        assert not {line[: line.rindex(">") + 1] for line in solutions} & play.held_out_prompts


def test_newline_stops_few_shot_completions(hf_dir):
    play, _ = built(pretrained_config(hf_dir))
    stops = az.line_end_ids(play.tokenizer)
    assert play.tokenizer.encode("\n")[0] in stops and all(len(play.tokenizer.decode([i]).strip("\n")) == 0 for i in stops)
    with pytest.raises(ConfigError, match="method.few_shot"):
        az.line_end_ids(azt.make_tokenizer())


def test_batch_must_split_into_micro_batches():
    config = load_config_file(CONFIGS / "absolute_zero.py")
    config.rl.micro_batches = 5  # 3*8*(1+8) = 216 rows
    with pytest.raises(ConfigError, match=r"rl.micro_batches.*216"):
        az.AbsoluteZero(config)


def test_self_play_from_a_pretrained_checkpoint(hf_dir, tmp_path):
    config = pretrained_config(hf_dir)
    summary = train_and_evaluate(config, tmp_path)
    assert {"eval/valid_rate", "eval/solver_accuracy", "eval/solver_sampled_accuracy"} <= set(summary)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "propose/valid_rate" in row]
    assert len(steps) == config.rl.steps
    assert all(np.isfinite(row["loss"]) for row in steps if "loss" in row)
