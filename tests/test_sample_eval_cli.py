"""`jaxrl-self eval` / `sample` argument checks (issue 38): a bad argument is one line on stderr and
exit 2, before any run is loaded; `--help` explains the metrics. Nothing here compiles, so the CLI
runs in-process (the checks against a trained run are in tests/test_chat_template.py)."""
import hashlib
import shutil

import pytest

from jaxrl_self import cli
from tiny_job import reference_run


@pytest.mark.parametrize("argv, message", [
    (["eval", "--num-samples", "2", "--k", "1", "4"], "--k 4: each k must be in [1, --num-samples=2]"),
    (["eval", "--k", "0"], "--k 0: each k must be in [1, --num-samples=1]"),
    (["eval", "--k"], "--k needs at least one value"),
    (["eval", "--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    (["eval", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["eval", "--temperature", "-1"], "--temperature must be finite and >= 0, got -1.0"),
    (["eval", "--temperature", "inf"], "--temperature must be finite and >= 0, got inf"),
    (["sample", "--prompt", "hi", "--temperature", "nan"], "--temperature must be finite and >= 0, got nan"),
    (["sample", "--prompt", "hi", "--num-samples", "-1"], "--num-samples must be >= 1, got -1"),
    (["sample", "--prompt", "hi", "--max-new-tokens", "-3"], "--max-new-tokens must be >= 1, got -3"),
    (["sample", "--prompt", "hi", "--prompt", "  "], "--prompt 2 is empty"),
    (["sample", "--prompt", "hi", "--num-samples", "0"], "--num-samples must be >= 1"),
    (["sample", "--prompt", "hi", "--max-new-tokens", "many"], "invalid int value: 'many'"),
    (["sample"], "--prompt"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    workdir = tmp_path / "no_run_here"  # never reached: arguments are checked first
    assert cli.main([argv[0], "--workdir", str(workdir), *argv[1:]]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("jaxrl-self: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    assert not workdir.exists()


def _tree(directory):
    """{relative path: sha256} of every file under `directory`."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, message", [
    (["sample", "--prompt", "1+x="], "--prompt 1 cannot be tokenized: character 'x'"),
    (["sample", "--prompt", "1+1=", "--prompt", "1+1+1+1+1+1+1+1="], "--prompt 2 is 17 tokens once rendered, more than the "
                                                                     "run's task.max_prompt_len = 16"),
    (["eval", "--output", "{workdir}/config.json/eval.json"], "cannot write the results to {workdir}/config.json/eval.json"),
])
def test_bad_arguments_against_a_trained_run(tmp_path, tmp_path_factory, capsys, argv, message):
    """Refused with one line and exit 2, the run directory (checkpoints included) unchanged."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir)
    before = _tree(workdir)
    argv = [a.format(workdir=workdir) for a in argv]
    assert cli.main([argv[0], "--workdir", str(workdir), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrl-self: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message.format(workdir=workdir) in err
    assert _tree(workdir) == before


def test_missing_run_directory_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["sample", "--workdir", str(tmp_path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and err.count("\n") == 1


def test_help_explains_the_metrics_and_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = capsys.readouterr().out
    for needle in ("pass@k", "mean@k", "maj@k", "--max-new-tokens", "chat template", "k <= n"):
        assert needle in text, needle
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    text = capsys.readouterr().out
    for needle in ("--max-new-tokens", "--raw", "chat template", "task.template"):
        assert needle in text, needle
