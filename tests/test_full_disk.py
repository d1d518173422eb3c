"""A full disk (issue 30 pt 5): the tiny job on a small tmpfs stops with exit 2 and one line naming
the path and the reason, its last good checkpoint stays restorable, and the same command resumes
the run to the end once space is freed. And `eval` of a run on a read-only file system refuses
before it loads anything. Need root (mount); skipped otherwise."""
import os
import shutil
import subprocess

import pytest

from jaxrl_self import cli
from tiny_job import cache_dir, checkpoint_steps, load_state, reference_run, train

SIZE = 4 << 20  # bytes of the tmpfs
FREE = 600 << 10  # bytes left free for the run: its config, metrics and about two checkpoints


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of SIZE bytes at tmp_path/disk, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_eval_of_a_run_on_a_read_only_file_system_refuses_before_the_work(small_disk, tmp_path_factory, capsys):
    workdir = small_disk / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir, ignore=shutil.ignore_patterns("tensorboard", "plots"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    assert cli.main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxrl-self: error: cannot write the results to {workdir / 'eval.json'}") and err.count("\n") == 1, err
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


def test_full_disk_stops_with_one_line_and_resumes(small_disk, tmp_path_factory):
    cache = cache_dir(tmp_path_factory)
    filler = small_disk / "filler"
    stat = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - FREE))
    workdir = small_disk / "run"

    full = train(workdir, cache)
    lines = [line for line in full.stderr.splitlines() if line.startswith("jaxrl-self")]
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    assert len(lines) == 1 and lines[0].startswith("jaxrl-self: error: No space left on device: "), lines
    assert str(workdir) in lines[0]
    steps = checkpoint_steps(workdir / "checkpoints")
    assert steps, "no checkpoint was completed before the disk filled"
    assert load_state(workdir / "checkpoints", steps[-1])  # the last good checkpoint restores

    filler.unlink()
    resumed = train(workdir, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resum" in resumed.stderr or "resum" in resumed.stderr
