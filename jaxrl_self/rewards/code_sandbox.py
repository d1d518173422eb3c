"""Run model-written Python programs in a restricted subprocess.

Each run gets a fresh temporary working directory, an environment holding only ``PATH``,
``python3 -I -S`` (isolated mode, no site packages: standard library only), resource limits
(``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, no core files), a wall-clock
timeout that kills the whole process group, and a cap on the stdout that is read back.

Isolation, detected once per process and logged:

* When the caller is root, the program runs as ``nobody`` (root ignores ``RLIMIT_NPROC`` and
  could write anywhere). ``RLIMIT_NPROC`` counts every process of that user, so concurrent
  sandboxes share the ``max_processes`` budget. A non-root caller's limit is set to its current
  task count plus ``max_processes``.
* Where ``unshare -rn --pid --fork --kill-child --mount-proc`` works (and may mount a tmpfs),
  the program gets its own user, network (loopback only, down), mount and PID namespaces: no
  network, a ``/proc`` that shows only its own processes, every process it started dies with it,
  and the world-writable directories (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) are
  private, size-limited tmpfs mounts that vanish with it — the only place its writes outlive it is
  its own working directory, which is deleted after the run.
* Where it does not, network access is blocked by the launcher replacing the ``socket`` module's
  constructors (best effort: a determined program can still reach ``_socket``), processes that
  escaped the process group with ``setsid`` may outlive the run, a non-root caller's other
  processes are visible in ``/proc``, and the program can write to the world-writable
  directories (as ``nobody`` when the caller is root; as the caller otherwise, who it could then
  also signal).

This is a guard against accidents and reward hacking by a research model, not a security
boundary against a determined attacker (the program can still read world-readable files).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

logger = logging.getLogger(__name__)

REASONS = ("ok", "wrong_answer", "timeout", "memory", "file_size", "output_limit", "killed", "runtime_error",
           "nondeterministic")
_UNSHARE_COMMAND = ("unshare", "-rn", "--pid", "--fork", "--kill-child", "--mount-proc")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# Inside the namespaces: hide every world-writable directory behind a private tmpfs (the program's
# working directory, which may lie under /tmp, stays reachable through its cwd).
_PRIVATE_TMP = f"""\
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
for _target in {_WORLD_WRITABLE!r}:
    if os.path.isdir(_target) and _libc.mount(b"none", _target.encode(), b"tmpfs", 0, b"size=16m,mode=1777"):
        raise OSError(ctypes.get_errno(), "cannot mount a private tmpfs on " + _target)
del ctypes, os, _libc, _target
"""
# Runs inside the sandboxed interpreter: lower its own limits (soft = hard, so the program
# cannot raise them), optionally disable sockets, then run the program as __main__. Setting
# limits here rather than in a preexec_fn keeps Python code out of the forked child of a
# multithreaded (JAX) process.
_LAUNCHER = """\
import resource, sys
path, block_network, limits = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
for name, value in zip(("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE"), limits):
    limit, value = getattr(resource, name), int(value)
    hard = resource.getrlimit(limit)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))
if block_network:
    import socket
    def no_network(*args, **kwargs):
        raise OSError("network access is disabled in this sandbox")
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname"):
        setattr(socket, name, no_network)
    del socket, no_network
sys.argv = [path]
with open(path, encoding="utf-8") as program_file:
    source = program_file.read()
namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
if not block_network:  # in the namespaces
{private_tmp}
del resource, sys, path, block_network, limits, program_file
exec(compile(source, namespace["__file__"], "exec"), namespace)
""".replace("{private_tmp}", textwrap.indent(_PRIVATE_TMP, "    ").rstrip())


class ProgramRun(NamedTuple):
    """Result of ``run_program``: ``ok`` (exit 0 within limits), captured stdout, and a reason
    from ``REASONS`` ("ok" on success)."""
    ok: bool
    output: str
    reason: str


class SandboxResult(NamedTuple):
    """Result of ``run_tests``: fraction of tests passed in [0, 1] and the first failure reason
    ("ok" when all passed)."""
    pass_fraction: float
    reason: str


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. ``max_file_bytes`` also bounds stdout/stderr, which go to files.

    ``max_processes`` is an ``RLIMIT_NPROC`` budget: when running as ``nobody`` it is shared by
    all sandboxes running at the same time (each needs two: ``unshare`` and the interpreter).
    """
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    max_processes: int = 32


@dataclasses.dataclass(frozen=True)
class _Isolation:
    run_as_uid: int | None
    use_namespaces: bool
    python: str


def _count_user_tasks(uid: int) -> int:
    """Number of tasks (threads included) owned by ``uid``: what ``RLIMIT_NPROC`` counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


def _user_kwargs(run_as_uid: int | None) -> dict:
    """Popen arguments that switch to ``run_as_uid`` (done in C by ``subprocess``, no preexec_fn)."""
    if run_as_uid is None:
        return {}
    return {"user": run_as_uid, "group": run_as_uid, "extra_groups": []}


def _probe(command: list[str], run_as_uid: int | None) -> bool:
    try:
        completed = subprocess.run(command, env={"PATH": _SAFE_PATH}, cwd="/", capture_output=True,
                                   timeout=30, check=False, **_user_kwargs(run_as_uid))
    except (OSError, subprocess.SubprocessError):
        return False
    return completed.returncode == 0


@functools.cache
def _detect_isolation() -> _Isolation:
    """Pick the user, interpreter and namespace mode once per process and log the choice."""
    run_as_uid = None
    if os.getuid() == 0:
        try:
            run_as_uid = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            run_as_uid = 65534
    candidates = [sys.executable, shutil.which("python3", path=_SAFE_PATH)]
    python = next((c for c in candidates if c and _probe([c, "-I", "-S", "-c", "pass"], run_as_uid)),
                  None)
    if python is None:
        raise RuntimeError("no Python interpreter usable by the sandbox user was found")
    use_namespaces = (shutil.which("unshare") is not None
                      and _probe([*_UNSHARE_COMMAND, python, "-I", "-S", "-c", _PRIVATE_TMP], run_as_uid))
    logger.info("code sandbox: python=%s, run_as_uid=%s, network isolation=%s", python, run_as_uid,
                "namespaces (unshare)" if use_namespaces else "socket patch (best effort)")
    return _Isolation(run_as_uid, use_namespaces, python)


def _classify_failure(returncode: int, stderr_tail: str) -> str:
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if "MemoryError" in stderr_tail or returncode == -signal.SIGSEGV:
        return "memory"
    if returncode == -signal.SIGKILL:  # by itself (e.g. its process group) or the kernel's OOM killer
        return "killed"
    if "File too large" in stderr_tail or returncode == -signal.SIGXFSZ:
        return "file_size"
    return "runtime_error"


def _launch_command(isolation: _Isolation, program_path: str, limits: SandboxLimits) -> list[str]:
    nproc = limits.max_processes
    if isolation.run_as_uid is None:
        nproc += _count_user_tasks(os.getuid())
    limit_values = (math.ceil(limits.timeout_s) + 1, limits.memory_mb << 20, limits.max_file_bytes,
                    nproc, 0)
    prefix = list(_UNSHARE_COMMAND) if isolation.use_namespaces else []
    return [*prefix, isolation.python, "-I", "-S", "-c", _LAUNCHER, program_path,
            "0" if isolation.use_namespaces else "1", *map(str, limit_values)]


def run_program(program: str, stdin: str = "", limits: SandboxLimits = SandboxLimits()) -> ProgramRun:
    """Run ``program`` (Python source) once with ``stdin`` as its standard input.

    Returns:
      ``ProgramRun(ok, output, reason)``; ``output`` is stdout (at most
      ``limits.max_output_bytes``, decoded as UTF-8 with replacement).
    """
    isolation = _detect_isolation()
    with tempfile.TemporaryDirectory(prefix="jaxrl_sandbox_") as root:
        workdir = os.path.join(root, "work")
        os.mkdir(workdir)
        if isolation.run_as_uid is not None:
            os.chown(workdir, isolation.run_as_uid, isolation.run_as_uid)
        program_path = os.path.join(root, "main.py")
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(program)
        os.chmod(program_path, 0o644)
        os.chmod(root, 0o755)
        with open(os.path.join(root, "stdin"), "w+b") as stdin_file, \
                open(os.path.join(root, "stdout"), "w+b") as stdout_file, \
                open(os.path.join(root, "stderr"), "w+b") as stderr_file:
            stdin_file.write(stdin.encode("utf-8"))
            stdin_file.seek(0)
            process = subprocess.Popen(
                _launch_command(isolation, program_path, limits), cwd=workdir,
                env={"PATH": _SAFE_PATH}, stdin=stdin_file, stdout=stdout_file, stderr=stderr_file,
                start_new_session=True, **_user_kwargs(isolation.run_as_uid))
            try:
                returncode = process.wait(timeout=limits.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if timed_out:
                process.wait()
                return ProgramRun(False, "", "timeout")
            output_size = stdout_file.tell()
            stdout_file.seek(0)
            output = stdout_file.read(limits.max_output_bytes).decode("utf-8", errors="replace")
            stderr_file.seek(max(0, stderr_file.tell() - 4096))
            stderr_tail = stderr_file.read().decode("utf-8", errors="replace")
    # A program stopped by the file-size limit on its stdout is over the output limit too.
    if output_size > limits.max_output_bytes or output_size >= limits.max_file_bytes:
        return ProgramRun(False, output, "output_limit")
    if returncode != 0:
        return ProgramRun(False, output, _classify_failure(returncode, stderr_tail))
    return ProgramRun(True, output, "ok")


def run_program_deterministic(program: str, stdin: str = "", runs: int = 2,
                              limits: SandboxLimits = SandboxLimits()) -> ProgramRun:
    """Run ``program`` ``runs`` times; ok only if every run succeeds with identical output
    (Absolute Zero's determinism check). Reason "nondeterministic" when outputs differ."""
    first = run_program(program, stdin, limits)
    for _ in range(runs - 1):
        if not first.ok:
            return first
        again = run_program(program, stdin, limits)
        if not again.ok:
            return again
        if again.output != first.output:
            return ProgramRun(False, first.output, "nondeterministic")
    return first


def _normalize_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_tests(program: str, tests: Sequence[tuple[str, str]],
              limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``program`` on stdin/stdout tests.

    Args:
      program: Python source that reads its input from stdin and prints its answer.
      tests: ``(stdin_text, expected_stdout)`` pairs. Outputs are compared after stripping
        leading/trailing blank space and trailing spaces on each line. Every test is run (one
        process each), so a program that always hangs costs ``len(tests) * timeout_s``.
      limits: per-run limits.

    Returns:
      ``SandboxResult(pass_fraction, reason)``: reason is "ok" when all pass, else the first
      failing test's reason ("wrong_answer", "timeout", "memory", ...).
    """
    if not tests:
        raise ValueError("run_tests needs at least one (stdin, expected_stdout) test")
    passed, first_failure = 0, None
    for test_input, expected in tests:
        run = run_program(program, test_input, limits)
        reason = run.reason
        if run.ok and _normalize_output(run.output) != _normalize_output(expected):
            reason = "wrong_answer"
        if reason == "ok":
            passed += 1
        elif first_failure is None:
            first_failure = reason
    return SandboxResult(passed / len(tests), first_failure or "ok")
