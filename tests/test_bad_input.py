"""Bad configs, data files, workdirs and checkpoints: one clear line on stderr, exit code 2, no
traceback, within seconds and before any training (`warm_start` fails the test if reached).
Everything here fails before any compilation, so the CLI runs in-process."""
import json
import shutil
import time

import pytest

from jaxrl_self import cli
from jaxrl_self.config import build_config
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir
from jaxrl_self.tasks.arithmetic import make_tokenizer
from jaxrl_self.tasks.jsonl import JsonlTask
from tiny_job import REPO, TINY, reference_run

DEFAULT = str(REPO / "configs" / "default.py")
REFUSAL_S = 10  # the longest a refusal may take


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every bad input is refused before the warm start begins."""
    def warm_start(*args, **kwargs):
        raise AssertionError("the run reached the SFT warm start")
    monkeypatch.setattr("jaxrl_self.train.loop.warm_start", warm_start)


def _fails(capsys, argv, *expected):
    """Runs the CLI; asserts exit code 2 within REFUSAL_S and a single "jaxrl-self: error:" line containing `expected`."""
    started = time.monotonic()
    assert cli.main(argv) == 2
    elapsed = time.monotonic() - started
    assert elapsed < REFUSAL_S
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("jaxrl-self")]
    assert len(lines) == 1 and lines[0].startswith("jaxrl-self: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _train(workdir, *overrides):
    return ["train", "--config", DEFAULT, "--workdir", str(workdir), *overrides]


@pytest.mark.parametrize("overrides, expected", [
    (["--config.rl.grup_size=4"], ["unknown config key 'config.rl.grup_size'", "group_size"]),
    (["--config.nosuch.key=1"], ["unknown config key 'config.nosuch'"]),
    (["--config.sft.steps=many"], ["config.sft.steps must be of type int", "'many'"]),
    (["--config.rl.kl_coef=[1]"], ["config.rl.kl_coef must be of type float"]),
    (["--config.rl.temperature=-1.0"], ["config.rl.temperature: must be >= 0"]),
    (["--config.checkpoint.every=0"], ["config.checkpoint.every: must be >= 1"]),
    (["--config.rl.group_size=1"], ["config.rl.group_size: group methods (grpo) need a group of >= 2"]),
    (["--config.task.max_prompt_len=100"], ["exceeds the model's context model.max_position_embeddings = 128"]),
    (["--config.faults.max_consecutive_nonfinite=0"], ["config.faults.max_consecutive_nonfinite: must be >= 1"]),
    (["--config.train.max_consecutive_nonfinite=3"], ["--config.train.max_consecutive_nonfinite moved: use config.faults."]),
    (["--config.rl.gamma=0.9"], ["--config.rl.gamma moved: use config.rl.ppo.gamma"]),
    (["--config.task.max_target=50"], ["config.task.max_target: task 'arithmetic' does not read it (an option of countdown)"]),
    (["--config.train.debug_inject_nan_at_steps=(3,)"], ["moved: use the environment variable JAXRL_SELF_TEST_NAN_AT"]),
    (["--config.mesh.num_devices=0", "--config.rl.prompts_per_step=3", "--config.rl.group_size=2"],
     ["prompts_per_step*group_size (6) must be divisible by the data-parallel size 8"]),
    (["--config.mesh.data=3"], ["config.mesh", "3"]),
    (["--config.sft.steps"], ["--config.sft.steps has no value"]),
    (["--no-such-flag"], ["unrecognised argument '--no-such-flag'"]),
])
def test_bad_config_on_the_command_line(capsys, tmp_path, overrides, expected):
    _fails(capsys, _train(tmp_path / "run", *overrides), *expected)


@pytest.mark.parametrize("override, expected", [
    ("rl.learning_rate=1e999", "config.rl.learning_rate: must be a finite number, got inf"),
    ("sft.learning_rate=0.0", "config.sft.learning_rate: must be > 0, got 0.0"),
    ("rl.kl_coef=-1e999", "config.rl.kl_coef: must be a finite number, got -inf"),
    ("rl.loss_aggregation=token_maen", "config.rl.loss_aggregation: must be one of ('', 'token_mean'"),
    ("task.test_size=0", "config.task.test_size: must be >= 1, got 0"),
    ("seed=-1", "config.seed: must be in [0, 4294967295], got -1"),
    (f"seed={2**70}", f"config.seed: must be in [0, 4294967295], got {2**70}"),
    ("task.seed=-5", "config.task.seed: must be in [0, 4294967295], got -5"),
    ("task.digits=30", "config.task.digits: must be in [1, 18], got 30"),
    ("task.ops=^", "config.task.ops: must be a non-empty string of the operations '+-', got '^'"),
    ("task.ops=''", "config.task.ops: must be a non-empty string"),
    ("task.demo_error_rate=1.5", "config.task.demo_error_rate: must be in [0, 1], got 1.5"),
    ("rl.eps_low=1.0", "config.rl.eps_low: must be in [0, 1)"),
    ("rl.eps_high=-0.1", "config.rl.eps_high: must be >= 0, got -0.1"),
    ("rl.std_ddof=2", "config.rl.std_ddof: must be 0 (population std) or 1 (unbiased std), got 2"),
    ("rl.advantage_eps=0.0", "config.rl.advantage_eps: must be > 0, got 0.0"),
    ("rl.entropy_coef=-0.01", "config.rl.entropy_coef: must be >= 0"),
    ("rl.top_k=-1", "config.rl.top_k: must be >= 0, got -1"),
    ("rl.sampler_slots=-2", "config.rl.sampler_slots: must be >= 0, got -2"),
    ("rl.sampler_windows=0", "config.rl.sampler_windows: must be >= 1, got 0"),
    ("rl.top_p=0.0", "config.rl.top_p: must be in (0, 1], got 0.0"),
    ("rl.overlong_max_len=-4", "config.rl.overlong_max_len: must be >= 0, got -4"),
    ("rl.overlong_max_len=8", "config.rl.overlong_cache_len: must be in (0, rl.overlong_max_len=8]"),
    ("rl.micro_batches=0", "config.rl.micro_batches: must be >= 1, got 0"),
    ("rl.epochs=0", "config.rl.epochs: must be >= 1, got 0"),
    ("model.rope_theta=0.0", "config.model.rope_theta: must be > 0, got 0.0"),
    ("model.max_position_embeddings=0", "config.model.max_position_embeddings: must be >= 1, got 0"),
    ("eval.batch_size=0", "config.eval.batch_size: must be >= 1, got 0"),
    ("eval.num_examples=0", "config.eval.num_examples: must be >= 1, got 0"),
    ("task.max_reference_len=1", "task 'arithmetic', train example 1: the reference answer '14' is 2 bytes, more than "
                                 "config.task.max_reference_len = 1"),
    ("task.max_prompt_len=4", "task 'arithmetic', train example 0: the prompt is 5 tokens (with BOS), more than "
                              "config.task.max_prompt_len = 4"),
])
def test_value_outside_its_domain(capsys, tmp_path, override, expected):
    """The tiny job with one value out of its domain: refused, naming the key, before anything is written."""
    _fails(capsys, _train(tmp_path / "run", *TINY, f"--config.{override}"), expected)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("algorithm, group_size", [("ppo", 0), ("ppo", -2), ("rloo", 0)])
def test_group_size_below_one(capsys, tmp_path, algorithm, group_size):
    _fails(capsys, _train(tmp_path / "run", *TINY, f"--config.rl.algorithm={algorithm}", f"--config.rl.group_size={group_size}"),
           "config.rl.group_size: ", f"got {group_size}")


def test_missing_config_file(capsys, tmp_path):
    _fails(capsys, ["train", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "run")],
           "config file not found", "nope.py")


def test_config_file_that_does_not_load(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n")
    _fails(capsys, ["train", "--config", str(bad)], "failed to load", "SyntaxError")


def _config_file(tmp_path, body: str):
    """A config file whose get_config() changes the default config with `body` (uses `config`)."""
    path = tmp_path / "custom.py"
    path.write_text(f"import importlib.util\nimport ml_collections\n"
                    f"spec = importlib.util.spec_from_file_location('d', {DEFAULT!r})\n"
                    "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n\n"
                    f"def get_config():\n    config = module.get_config()\n    {body}\n    return config\n")
    return str(path)


def test_config_file_with_a_wrong_type(capsys, tmp_path):
    path = _config_file(tmp_path, "config.sft = ml_collections.ConfigDict({**config.sft.to_dict(), 'steps': '300'})")
    _fails(capsys, ["train", "--config", path, "--workdir", str(tmp_path / "run")],
           "config.sft.steps: must be of type int, got '300' (str)")


def test_config_file_whose_get_config_fails(capsys, tmp_path):
    path = _config_file(tmp_path, "config.sft.steps = '300'")  # ConfigDict refuses the type change
    _fails(capsys, ["train", "--config", path], "get_config() in", "failed: TypeError")


def test_config_file_missing_a_key(capsys, tmp_path):
    path = _config_file(tmp_path, "del config.faults")
    _fails(capsys, ["train", "--config", path], "config.faults.max_consecutive_nonfinite is missing")


def test_config_file_with_a_key_that_moved(capsys, tmp_path):
    path = _config_file(tmp_path, "config.rl.value_coef = 0.5")
    _fails(capsys, ["train", "--config", path], f"config file {path}", "config.rl.value_coef moved: use config.rl.ppo.value_coef")


def test_unwritable_workdir(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails(capsys, _train(blocker / "run", *TINY), f"the workdir {blocker / 'run'} cannot be created or written")


def test_workdir_holding_a_different_config(capsys, tmp_path):
    workdir = tmp_path / "run"
    assert cli.main(_train(workdir, *TINY, "--config.seed=1", "--config.rl.steps=-1")) == 2  # writes nothing
    assert not workdir.exists()
    capsys.readouterr()
    config = build_config(DEFAULT, [*TINY, "--config.seed=1"])
    claim_workdir(config, prepare_workdir(config, workdir))  # the workdir of a run with seed 1
    _fails(capsys, _train(workdir, *TINY), "holds a run made with a different config (differs at: config.seed)")


def test_unreadable_config_json_in_workdir(capsys, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"seed": ')
    _fails(capsys, _train(workdir, *TINY), f"cannot read {workdir / 'config.json'}")


GOOD_LINE = '{"question": "1+1=", "answer": "#### 2"}\n'


@pytest.mark.parametrize("text, expected", [
    (GOOD_LINE + '{"question": "2+2?" "answer": "#### 4"}\n', [":2: invalid JSON"]),
    (GOOD_LINE + '\n{"answer": "#### 4"}\n', [":3: field 'question' is missing"]),
    ('{"question": "1+1=", "answer": "2"}\n', [":1: field 'answer': GSM8K answer has no '#### <answer>' marker"]),
    ("", [": no examples (the file is empty or has only blank lines)"]),
    ("\n  \n\t\n", [": no examples (the file is empty or has only blank lines)"]),
    (GOOD_LINE + '{"question": "1+1=", "answer": "#### 123456789"}\n',
     [":2: the reference answer '123456789' is 9 bytes, more than config.task.max_reference_len = 8"]),
    (GOOD_LINE * 2 + '\n{"question": "1+2+3+4+5+6+7+8=", "answer": "#### 36"}\n',
     [":4: the prompt is 17 tokens (with BOS), more than config.task.max_prompt_len = 16"]),
    (GOOD_LINE + '{"question": "one+1=", "answer": "#### 2"}\n', [":2: the prompt cannot be tokenized: character 'o'"]),
])
def test_bad_jsonl_data_file(capsys, tmp_path, monkeypatch, text, expected):
    """A JSONL task over the arithmetic tokenizer (the default job's task is procedural) goes through
    the real checks of `build_task`: the message names the file and line."""
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(GOOD_LINE)
    test.write_text(text)

    def make_task(task_config, tokenizer):
        task = JsonlTask("t", {"train": train, "test": test})
        task.tokenizer = make_tokenizer()
        return task

    monkeypatch.setattr("jaxrl_self.tasks.registry._make_task", make_task)
    _fails(capsys, _train(tmp_path / "run", *TINY, "--config.task.max_reference_len=8"), str(test), *expected)
    assert not (tmp_path / "run" / "config.json").exists()  # the workdir stays free for the fixed command


def test_truncated_gguf_model(capsys, tmp_path):
    """A GGUF file cut short (a failed download) as config.model.init_from."""
    import gguf
    import numpy as np

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.write_bytes(path.read_bytes()[:1000])
    config = _config_file(tmp_path, f"config.model.init_from = {str(path)!r}")
    _fails(capsys, ["train", "--config", config, "--workdir", str(tmp_path / "run"), *TINY], f"{path}: not a readable GGUF file")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_failed_start_leaves_the_workdir_free_for_the_fixed_command(capsys, tmp_path):
    """A bad model path fails after the workdir check and records no config: the corrected command
    (here: without the bad path) is accepted on the same workdir rather than refused as another run's."""
    workdir, config_file = tmp_path / "run", tmp_path / "pretrained.py"
    config_file.write_text("from jaxrl_self.config import load_config_file\n\n\ndef get_config():\n"
                           f"    config = load_config_file({DEFAULT!r})\n"
                           f"    config.model.init_from = {str(tmp_path / 'no_such_model.gguf')!r}\n    return config\n")
    _fails(capsys, ["train", "--config", str(config_file), "--workdir", str(workdir), *TINY], "no_such_model.gguf")
    assert workdir.is_dir() and not (workdir / "config.json").exists()
    fixed = build_config(DEFAULT, TINY)
    claim_workdir(fixed, prepare_workdir(fixed, workdir))  # what the fixed command's start does before training
    assert (workdir / "config.json").exists()


def test_checkpoint_from_another_model_names_the_tensor(capsys, tmp_path, tmp_path_factory):
    """config.json edited to a wider model (so the workdir check passes): the restore must refuse,
    naming the tensor, and must not fall back to an older checkpoint or start afresh."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["intermediate_size"] = 96
    (workdir / "config.json").write_text(json.dumps(config))
    before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    _fails(capsys, _train(workdir, *TINY, "--config.model.intermediate_size=96"),
           "the checkpoint at step 8", "tensor 'params.layers.0.mlp.down_proj' with shape (64, 32) float32",
           "needs (96, 32) float32")
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_convert_from_a_missing_checkpoint_is_one_clear_message(tmp_path, capsys):
    from jaxrl_self.cli import main

    assert main(["convert", "--from", "hf", "--to", "orbax", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrl-self: error:") and "config.json" in err and "Traceback" not in err
