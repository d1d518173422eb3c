"""Sandbox limits: every kill reason, network and environment isolation."""
import os

import pytest

from jaxrl_self.rewards import code_sandbox
from jaxrl_self.rewards.code_sandbox import (
    SandboxLimits,
    run_program,
    run_program_deterministic,
    run_tests,
)

FAST = SandboxLimits(timeout_s=1.0, memory_mb=256, max_output_bytes=1 << 16, max_file_bytes=1 << 20,
                     max_processes=16)
DOUBLE = "print(2 * int(input()))"


def test_correct_program_passes_and_wrong_fails():
    tests = [("2\n", "4"), ("21\n", "42\n")]
    assert run_tests(DOUBLE, tests, FAST) == (1.0, "ok")
    assert run_tests("print(3 * int(input()))", tests, FAST) == (0.0, "wrong_answer")
    assert run_tests("x = int(input())\nprint(4 if x == 2 else 0)", tests, FAST) == (0.5, "wrong_answer")
    with pytest.raises(ValueError):
        run_tests(DOUBLE, [], FAST)


@pytest.mark.parametrize("program, reason", [
    ("while True:\n    pass", "timeout"),
    ("import time\ntime.sleep(60)", "timeout"),
    ("blob = bytearray(2 * 1024**3)", "memory"),
    ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)", "file_size"),
    ("print('x' * 200000)", "output_limit"),
    ("raise SystemExit(3)", "runtime_error"),
])
def test_kill_reasons(program, reason):
    run = run_program(program, "", FAST)
    assert not run.ok
    assert run.reason == reason


def test_fork_bomb_is_limited():
    program = ("import os, time\ncount = 0\ntry:\n    for _ in range(1000):\n"
               "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
               "        count += 1\nexcept OSError:\n    pass\nprint(count)")
    run = run_program(program, "", FAST)
    assert run.ok, run
    assert int(run.output) < FAST.max_processes


def test_network_is_unreachable():
    program = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=0.5)\nprint('connected')"
    run = run_program(program, "", FAST)
    assert run.reason == "runtime_error"
    assert "connected" not in run.output


def test_socket_preamble_blocks_network_without_namespaces(monkeypatch):
    isolation = code_sandbox._detect_isolation()
    fallback = code_sandbox._Isolation(isolation.run_as_uid, False, isolation.python)
    monkeypatch.setattr(code_sandbox, "_detect_isolation", lambda: fallback)
    program = ("import socket\ntry:\n    socket.socket()\nexcept OSError as error:\n    print('blocked', error)")
    run = run_program(program, "", FAST)
    assert run.ok and run.output.startswith("blocked")


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("JAXRL_TEST_SECRET", "hunter2")
    run = run_program("import os\nprint(sorted(os.environ.items()))", "", FAST)
    assert run.ok
    assert "hunter2" not in run.output and "JAXRL_TEST_SECRET" not in run.output


def test_working_directory_is_fresh_and_writable():
    program = "import os\nprint(os.listdir('.'))\nopen('scratch', 'w').write('x')"
    assert run_program(program, "", FAST) == (True, "[]\n", "ok")
    assert run_program(program, "", FAST) == (True, "[]\n", "ok")


def test_determinism_check():
    assert run_program_deterministic("print(sum(range(10)))", "", 2, FAST) == (True, "45\n", "ok")
    nondeterministic = "import os\nprint(os.urandom(8).hex())"
    assert run_program_deterministic(nondeterministic, "", 2, FAST).reason == "nondeterministic"
    assert run_program_deterministic("raise ValueError", "", 2, FAST).reason == "runtime_error"


def test_other_processes_are_hidden_with_namespaces():
    run = run_program("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", "", FAST)
    assert run.ok
    visible = str(os.getpid()) in run.output.strip("[]\n").split(", ")
    assert visible != code_sandbox._detect_isolation().use_namespaces
