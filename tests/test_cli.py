"""`jaxrl-self train` end to end on a shortened default job: the run directory it leaves, and the
NaN/Inf guard (skipped steps counted; too many in a row stop the run with a checkpoint)."""
import json

from jaxrl_self.config import build_config, config_to_json
from tiny_job import (REPO, RL_STEPS, SFT_STEPS, TINY, assert_same_state, cache_dir, checkpoint_steps, load_state,
                      metrics_rows, reference_console, reference_run, train)


def test_default_job_run_directory(tmp_path_factory):
    workdir = reference_run(tmp_path_factory)
    rows = metrics_rows(workdir)
    steps = [row["step"] for row in rows]
    assert steps == [1, 2, 3, 4, SFT_STEPS, 5, 6, 7, 8]  # step 4's second row: the held-out eval after SFT
    assert all("sft/loss" in row and row["skipped_nonfinite"] == 0 for row in rows[:SFT_STEPS])
    assert "eval/accuracy" in rows[SFT_STEPS] and "eval/format_ok" in rows[SFT_STEPS]
    rl_rows = rows[SFT_STEPS + 1:]
    assert len(rl_rows) == RL_STEPS
    for row in rl_rows:
        assert {"reward/mean", "accuracy/train", "loss", "kl", "grad_norm", "skipped_nonfinite"} <= set(row)
        assert row["skipped_nonfinite_total"] == 0
    assert ["eval/accuracy" in row for row in rl_rows] == [False, True, False, True]  # eval.every = 2

    assert checkpoint_steps(workdir / "checkpoints") == [4, 6, 8]  # the last checkpoint.max_to_keep = 3
    assert len(checkpoint_steps(workdir / "best_checkpoint")) == 1
    expected_config = build_config(REPO / "configs" / "default.py", TINY)
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config_to_json(expected_config))
    report = (workdir / "report.md").read_text()
    assert "## Summary" in report and "after SFT" in report and "after RL" in report
    plots = sorted(p.name for p in (workdir / "plots").glob("*.png"))
    assert {"sft_loss.png", "reward.png", "accuracy.png", "reward_and_accuracy.png"} <= set(plots)
    for plot in plots:
        assert f"plots/{plot}" in report
    assert list((workdir / "tensorboard").iterdir())


def test_default_job_console(tmp_path_factory):
    """The console names every held-out evaluation when it happens, counts training steps from 1
    in the training phase, and ends with the report and the TensorBoard command."""
    stdout, stderr = reference_console(tmp_path_factory)
    assert f"held-out evaluation after the SFT warm start ({SFT_STEPS} steps): eval/accuracy=" in stderr
    assert f"RL (grpo) step 2/{RL_STEPS}: held-out evaluation: eval/accuracy=" in stderr  # eval.every = 2, logged only
    assert f"RL (grpo) step {RL_STEPS}/{RL_STEPS}: held-out evaluation (after RL): eval/accuracy=" in stderr
    assert "resuming" not in stderr
    workdir = reference_run(tmp_path_factory)
    assert f"tensorboard --logdir {workdir / 'tensorboard'}" in stdout and str(workdir / "report.md") in stdout


def test_eval_and_sample_read_the_latest_or_the_best_checkpoint(tmp_path_factory, capsys):
    """`jaxrl-self eval` reproduces the run's own held-out accuracy at the last step (latest) and at
    its best step (best); `jaxrl-self sample` prints one tab-separated line per completion."""
    from jaxrl_self.cli import main

    workdir = reference_run(tmp_path_factory)
    evals = [row["eval/accuracy"] for row in metrics_rows(workdir) if "eval/accuracy" in row]
    for which, expected in (("latest", evals[-1]), ("best", max(evals))):
        output = tmp_path_factory.mktemp("eval") / "eval.json"
        assert main(["eval", "--workdir", str(workdir), "--checkpoint", which, "--output", str(output)]) == 0
        results = json.loads(output.read_text())
        assert results["accuracy"] == expected and results["checkpoint"] == which
    assert main(["eval", "--workdir", str(workdir), "--num-samples", "3", "--k", "1", "3", "--output", str(output)]) == 0
    summary = json.loads(output.read_text())["summary"]
    assert summary["pass@1"] <= summary["pass@3"]
    capsys.readouterr()
    assert main(["sample", "--workdir", str(workdir), "--prompt", "12+7=", "--prompt", "3+4=", "--num-samples", "2",
                 "--temperature", "1.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["12+7=", "12+7=", "3+4=", "3+4="]


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(tmp_path, tmp_path_factory):
    """NaN loss injected at RL steps 5, 7 and 8 (test hook) with max_consecutive_nonfinite = 2: step 5 is
    skipped and counted, step 6 trains, steps 7 and 8 in a row stop the run at step 8 with a checkpoint."""
    workdir = tmp_path / "run"
    result = train(workdir, cache_dir(tmp_path_factory), "--config.faults.max_consecutive_nonfinite=2", nan_at="5,7,8")
    assert result.returncode == 3, result.stderr[-3000:]
    assert ("jaxrl-self: stopped at step 8 (training step 4 after 4 SFT steps): 2 steps in a row had a non-finite "
            "loss or gradient (3 skipped in all); saved a checkpoint there") in result.stderr
    assert "Traceback" not in result.stderr
    rows = {row["step"]: row for row in metrics_rows(workdir) if "skipped_nonfinite" in row}
    assert [(rows[s]["skipped_nonfinite"], rows[s]["skipped_nonfinite_total"]) for s in (5, 6, 7, 8)] == [
        (1.0, 1), (0.0, 1), (1.0, 2), (1.0, 3)]
    assert rows[5]["loss"] == "nan"
    assert checkpoint_steps(workdir / "checkpoints") == [4, 6, 8]
    at_6, at_8 = load_state(workdir / "checkpoints", 6), load_state(workdir / "checkpoints", 8)
    assert int(at_6["['step']"]) == int(at_8["['step']"]) == 1  # one RL update applied: step 6's
    assert_same_state(at_6, at_8)  # the skipped updates changed neither parameters nor optimizer state
    assert not (workdir / "report.md").exists()
