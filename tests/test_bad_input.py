"""Bad configs, data files, workdirs and checkpoints: one clear line on stderr, exit code 2, no
traceback. Everything here fails before any compilation, so the CLI runs in-process."""
import json
import shutil

import pytest

from jaxrl_self import cli
from jaxrl_self.config import build_config
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir
from jaxrl_self.tasks.jsonl import JsonlTask
from tiny_job import REPO, TINY, reference_run

DEFAULT = str(REPO / "configs" / "default.py")


def _fails(capsys, argv, *expected):
    """Runs the CLI; asserts exit code 2 and a single "jaxrl-self: error:" line containing `expected`."""
    assert cli.main(argv) == 2
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
    (["--config.train.max_consecutive_nonfinite=0"], ["config.train.max_consecutive_nonfinite: must be >= 1"]),
    (["--config.rl.steps=60", "--config.train.debug_inject_nan_at_steps=(3,)"], ["config.train.debug_inject_nan_at_steps: must list RL steps",
                                                         "301..360"]),
    (["--config.mesh.num_devices=0", "--config.rl.prompts_per_step=3", "--config.rl.group_size=2"],
     ["prompts_per_step*group_size (6) must be divisible by the data-parallel size 8"]),
    (["--config.mesh.data=3"], ["config.mesh", "3"]),
    (["--config.sft.steps"], ["--config.sft.steps has no value"]),
    (["--no-such-flag"], ["unrecognised argument '--no-such-flag'"]),
])
def test_bad_config_on_the_command_line(capsys, tmp_path, overrides, expected):
    _fails(capsys, _train(tmp_path / "run", *overrides), *expected)


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
    path = _config_file(tmp_path, "del config.train")
    _fails(capsys, ["train", "--config", path], "config.train.max_consecutive_nonfinite is missing")


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


@pytest.mark.parametrize("line, expected", [
    ('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?" "answer": "#### 4"}\n', [":2: invalid JSON"]),
    ('{"question": "1+1?", "answer": "#### 2"}\n\n{"answer": "#### 4"}\n', [":3: field 'question' is missing"]),
    ('{"question": "1+1?", "answer": "2"}\n', [":1: field 'answer': GSM8K answer has no '#### <answer>' marker"]),
])
def test_bad_jsonl_data_file(capsys, tmp_path, monkeypatch, line, expected):
    """The default job's task is procedural; a JSONL task's DataError reaches the CLI the same way."""
    data = tmp_path / "train.jsonl"
    data.write_text(line)
    monkeypatch.setattr("jaxrl_self.train.context.build_task", lambda task_config, tokenizer=None: JsonlTask("t", {"train": data}))
    _fails(capsys, _train(tmp_path / "run", *TINY), str(data), *expected)
    assert not (tmp_path / "run" / "config.json").exists()  # the workdir stays free for the fixed command


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
