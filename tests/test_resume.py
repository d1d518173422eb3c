"""A run killed at any moment (SIGKILL mid-step, mid-save, right after a save) or preempted
(SIGTERM) and started again ends with parameters bit-identical, and metrics identical, to an
uninterrupted run."""
import re
import signal
import subprocess
import time

from tiny_job import (REPO, assert_same_state, cache_dir, checkpoint_steps, child_env, load_state, metrics_rows,
                      reference_run, train, train_command)

FINAL_STEP = 8


def _sigterm_after_row(workdir, cache, step: int) -> subprocess.CompletedProcess:
    """Runs the tiny job and sends it SIGTERM once it has written a metrics row for `step`."""
    started = time.time()
    process = subprocess.Popen(train_command(workdir), cwd=REPO, env=child_env(cache), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        # rows from before the resume are cut (the file is replaced) before this run writes any
        if metrics.stat().st_mtime > started and f'"step": {step},' in metrics.read_text():
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_killed_and_preempted_run_matches_uninterrupted_run(tmp_path, tmp_path_factory):
    reference, cache = reference_run(tmp_path_factory), cache_dir(tmp_path_factory)
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"

    # SFT step 3: its update and metrics row are done, its checkpoint is not; the asynchronous save
    # of step 2 may still be in flight, so the run resumes from step 2 or from the start
    result = train(workdir, cache, kill_at="mid_step:3")
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert checkpoint_steps(checkpoints) in ([], [2])
    assert max(row["step"] for row in metrics_rows(workdir)) == 3  # a row past the checkpoint, to be cut

    # killed right after the SFT -> RL checkpoint at step 4 is committed
    result = train(workdir, cache, kill_at="after_save:4")
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert checkpoint_steps(checkpoints) == [2, 4]

    # resumes from step 4; killed while the checkpoint of step 6 is being written
    result = train(workdir, cache, kill_at="mid_save:6")
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert "resuming from the checkpoint at step 4" in result.stderr
    assert checkpoint_steps(checkpoints) == [2, 4]  # the half-written step 6 is not a checkpoint
    assert list(checkpoints.glob("6.orbax-checkpoint-tmp*")), sorted(p.name for p in checkpoints.iterdir())

    # resumes from step 4; preempted (SIGTERM) in the middle of RL: saves the current step and exits 75
    result = _sigterm_after_row(workdir, cache, step=5)
    assert result.returncode == 75, result.stderr[-2000:]
    message = re.search(r"jaxrl-self: received SIGTERM; saved a checkpoint at step (\d+) \(training step \d+ after 4 SFT steps\) "
                        r"in (\S+); resume with: (.*)",
                        result.stderr)
    assert message, result.stderr[-2000:]
    assert int(message.group(1)) in checkpoint_steps(checkpoints)
    assert message.group(3).startswith(f"jaxrl-self train --config {REPO / 'configs' / 'default.py'} --workdir {workdir} ")
    assert "Traceback" not in result.stderr

    result = train(workdir, cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from the checkpoint at step {message.group(1)}" in result.stderr

    assert metrics_rows(workdir) == metrics_rows(reference)
    assert_same_state(load_state(checkpoints, FINAL_STEP), load_state(reference / "checkpoints", FINAL_STEP))
    best_steps = checkpoint_steps(reference / "best_checkpoint")
    assert checkpoint_steps(workdir / "best_checkpoint") == best_steps
    assert_same_state(load_state(workdir / "best_checkpoint", best_steps[0]),
                      load_state(reference / "best_checkpoint", best_steps[0]))
