"""One validation path for every config: unknown keys in a config file are errors naming the file,
the key and the nearest valid key; `load_config_file` validates like the CLI; every shipped config
is clean. Nothing here compiles, so the CLI runs in-process."""
import pytest

from jaxrl_self import cli
from jaxrl_self.config import ConfigError, load_config_file, validate
from jaxrl_self.recipes import build_recipe
from tiny_job import REPO

DEFAULT = str(REPO / "configs" / "default.py")


def _config_file(tmp_path, *lines: str) -> str:
    """A config file whose get_config() changes configs/default.py with `lines` (they use `config`)."""
    path = tmp_path / "typo.py"
    body = "".join(f"    {line}\n" for line in lines)
    path.write_text("from jaxrl_self.config import load_config_file\n\n\n"
                    f"def get_config():\n    config = load_config_file({DEFAULT!r})\n{body}    return config\n")
    return str(path)


def test_unknown_key_in_a_config_file_names_the_file_the_key_and_the_nearest_one(tmp_path):
    path = _config_file(tmp_path, "config.rl.lerning_rate = 1e-5")
    with pytest.raises(ConfigError) as error:
        load_config_file(path)
    message = str(error.value)
    assert path in message and "'config.rl.lerning_rate'" in message and "did you mean 'config.rl.learning_rate'?" in message


def test_unknown_key_added_in_python_is_caught_by_validate():
    config = load_config_file(DEFAULT)
    config.falts = 3
    with pytest.raises(ConfigError, match=r"unknown config key 'config.falts' \(did you mean 'config.faults'\?\)"):
        validate(config)


def test_cli_refuses_a_config_file_typo_before_writing_anything(tmp_path, capsys):
    path = _config_file(tmp_path, "config.rl.lerning_rate = 1e-5")
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", path, "--workdir", str(workdir), "--config.rl.steps=1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxrl-self: error: config file "), lines
    assert "config.rl.lerning_rate" in lines[0] and "config.rl.learning_rate" in lines[0]
    assert not workdir.exists()


def test_load_config_file_validates_values(tmp_path):
    path = _config_file(tmp_path, "config.rl.algorithm = 'grpo'", "config.rl.group_size = 1")
    with pytest.raises(ConfigError, match="config.rl.group_size: group methods \\(grpo\\) need a group of >= 2"):
        load_config_file(path)


@pytest.mark.parametrize("name", sorted(path.name for path in (REPO / "configs").glob("*.py")))
def test_every_shipped_config_loads_and_validates(name):
    """Its keys and values, and its recipe's own checks (an option inherited from another config
    can contradict one the file changes: a KL option without a reference)."""
    config = load_config_file(REPO / "configs" / name)
    validate(config)
    build_recipe(config)


def test_a_recipe_declares_its_options_and_their_defaults(tmp_path, capsys):
    """configs/star.py sets only the recipe; its options come from SelfTraining.config_defaults, are
    type-checked, and a typo or another recipe's option is refused naming the nearest option."""
    from jaxrl_self.recipes import build_recipe

    config = load_config_file(REPO / "configs" / "star.py")
    assert "steps_growth" not in config.method
    build_recipe(config)
    assert config.method.steps_growth == 1.2 and config.method.iterations == 3  # recorded in config.json
    star = str(REPO / "configs" / "star.py")
    for overrides, message in (
            (["--config.method.iteratons=2"], "config.method.iteratons: not an option of the recipe star (did you mean "
                                              "'config.method.iterations'?"),
            (["--config.method.iterations=two"], "config.method.iterations: must be of type int, got 'two'"),
            (["--config.method.stage1_steps=3"], "config.method.stage1_steps: not an option of the recipe star")):
        assert cli.main(["train", "--config", star, "--workdir", str(tmp_path / "run"), *overrides]) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxrl-self: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "config.json").exists()
    config = load_config_file(DEFAULT)
    config.method.iterations = 3  # the RL recipe has no such option
    with pytest.raises(ConfigError, match="config.method.iterations: not an option of the recipe rl"):
        build_recipe(config)


def test_a_run_recorded_before_a_key_existed_resumes_and_reads_with_its_default(tmp_path):
    """config.json written by an older version lacks keys added since: the workdir is accepted for the
    same config, and the recorded config reads back with those keys at their defaults."""
    import json

    from jaxrl_self.config import config_to_json
    from jaxrl_self.train.run_dir import read_run_config
    from jaxrl_self.train.workdir import prepare_workdir

    config = load_config_file(DEFAULT)
    recorded = json.loads(config_to_json(config))
    del recorded["rl"]["sampler_slots"], recorded["rl"]["ppo"]
    recorded["rl"]["steps"] = 7  # a recorded value wins over the default
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    read = read_run_config(tmp_path)
    assert read.rl.sampler_slots == 0 and read.rl.ppo.gae_lambda == config.rl.ppo.gae_lambda and read.rl.steps == 7
    config.rl.steps = 7
    prepare_workdir(config, tmp_path)  # no "holds a run made with a different config"
    config.rl.top_k = 3
    with pytest.raises(ConfigError, match="differs at: config.rl.top_k"):
        prepare_workdir(config, tmp_path)
