"""The workdir lock: a second process on a workdir that a run holds exits 2 naming the holder's PID
and host before it writes or computes anything; the lock file a SIGKILLed run leaves behind does not
block the resume; the processes of one multi-process run each lock their own file."""
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from jaxrl_self.config import ConfigError
from jaxrl_self.train.workdir import hold_workdir_lock, lock_path
from tiny_job import REPO, cache_dir, checkpoint_steps, child_env, reference_run, train, train_command

HOLDER = """import sys
from jaxrl_self.train.workdir import hold_workdir_lock
with hold_workdir_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""


def _hold(workdir) -> subprocess.Popen:
    """A child process holding `workdir`'s lock (as a running `train` does) until its stdin closes."""
    workdir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_second_run_on_a_held_workdir_exits_2_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    holder = _hold(workdir)
    try:
        result = subprocess.run(train_command(workdir), cwd=REPO, env=child_env(tmp_path / "cache"),
                                capture_output=True, text=True, timeout=300)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("jaxrl-self: error: the workdir") and "in use by another run" in error
    assert f"PID {holder.pid} on host {socket.gethostname()}" in error
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # no config, checkpoints or metrics written
    assert lock_path(workdir).read_text() == ""  # released by the holder's clean exit


def test_lock_in_process_names_the_holder_and_each_process_of_a_run_has_its_own(tmp_path):
    with hold_workdir_lock(tmp_path):
        assert str(os.getpid()) in lock_path(tmp_path).read_text()
        with pytest.raises(ConfigError, match=f"in use by another run \\(PID {os.getpid()} on host "):
            with hold_workdir_lock(tmp_path):
                pass
        with hold_workdir_lock(tmp_path, process_index=1):  # process 1 of the same multi-process run
            with pytest.raises(ConfigError, match="in use by another run"):
                with hold_workdir_lock(tmp_path, process_index=1):  # process 1 of a second run
                    pass
    with hold_workdir_lock(tmp_path):  # released at the end of the block
        pass


def test_lock_of_a_killed_run_does_not_block_a_resume(tmp_path, tmp_path_factory):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir)
    holder = _hold(workdir)
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    assert f'"pid": {holder.pid}' in lock_path(workdir).read_text()  # the stale lock file names the dead run
    result = train(workdir, cache_dir(tmp_path_factory))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the run already finished at step 8 (training step 4 after 4 SFT steps)" in result.stderr
    assert checkpoint_steps(workdir / "checkpoints") == [4, 6, 8]
    assert lock_path(workdir).read_text() == ""
