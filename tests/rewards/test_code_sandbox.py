"""Sandbox: scoring, kill reasons, the memory budget, and a suite of hostile programs.

The hostile suite runs each attack for real, all at once, in a runner process that imports a copy
of the sandbox module: as root and as an unprivileged user (``nobody`` when the test runs as root,
else the test's own user), for each namespace mechanism usable here. Every attack must end with
reward 0 and its reason within the timeout, leave no process and no file on the host, and miss
the victim sandbox running beside it. The same attacks run without containment (the "rlimits"
mechanism) do escape, which shows they are real.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

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
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def test_correct_program_passes_and_wrong_fails():
    tests = [("2\n", "4"), ("21\n", "42\n")]
    assert run_tests(DOUBLE, tests, FAST) == (1.0, "ok")
    assert run_tests("print(3 * int(input()))", tests, FAST) == (0.0, "wrong_answer")
    assert run_tests("x = int(input())\nprint(4 if x == 2 else 0)", tests, FAST) == (0.5, "wrong_answer")
    with pytest.raises(ValueError):
        run_tests(DOUBLE, [], FAST)


def test_mechanism_is_reported():
    reported = code_sandbox.mechanism()
    assert reported.isolation == code_sandbox._detect_isolation().mechanism
    assert reported.isolation in code_sandbox.MECHANISMS
    assert reported.memory in ("cgroup2", "cgroup1", "budget")


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("JAXRL_TEST_SECRET", "hunter2")
    run = run_program("import os\nprint(sorted(os.environ.items()))", "", FAST)
    assert run.ok
    assert "hunter2" not in run.output and "JAXRL_TEST_SECRET" not in run.output


def test_working_directory_is_fresh_and_writable():
    program = "import os\nprint(os.listdir('.'))\nopen('scratch', 'w').write('x')"
    assert run_program(program, "", FAST) == (True, "[]\n", "ok")
    assert run_program(program, "", FAST) == (True, "[]\n", "ok")


def test_large_input_and_output_pass_through_the_pipes():
    text = "".join(f"{i}\n" for i in range(20000))  # 109 kB: more than a pipe holds
    program = "import sys\nsys.stdout.write(sys.stdin.read())"
    assert run_program(program, text, SandboxLimits(max_output_bytes=1 << 20)) == (True, text, "ok")


def test_determinism_check():
    assert run_program_deterministic("print(sum(range(10)))", "", 2, FAST) == (True, "45\n", "ok")
    nondeterministic = "import os\nprint(os.urandom(8).hex())"
    assert run_program_deterministic(nondeterministic, "", 2, FAST).reason == "nondeterministic"
    assert run_program_deterministic("raise ValueError", "", 2, FAST).reason == "runtime_error"


def test_memory_budget_admits_runs_while_their_bounds_fit(monkeypatch):
    monkeypatch.setenv("JAXRL_SANDBOX_MEMORY_BUDGET_MB", "100")
    assert code_sandbox.memory_budget_mb() == 100
    assert code_sandbox.memory_bound_mb(FAST) == 16 * (256 + 64 * 2) + 2

    def overlapped(bounds):
        inside, most = 0, 0
        lock = threading.Lock()

        def hold(bound):
            nonlocal inside, most
            with code_sandbox._memory_reservation(bound):
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.05)
                with lock:
                    inside -= 1

        threads = [threading.Thread(target=hold, args=(bound,)) for bound in bounds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return most

    assert overlapped([40, 40]) == 2
    assert overlapped([60, 60, 60]) == 1
    assert overlapped([500]) == 1  # larger than the budget: runs alone
    assert code_sandbox._reserved_mb == 0


def run_concurrently(jobs, limits):
    """{name: (program, stdin)} -> {name: ProgramRun}, all started at once."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(run_program, program, stdin, limits) for name, (program, stdin) in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.fixture
def without_containment(monkeypatch):
    isolation = code_sandbox._probe_isolation("rlimits")
    monkeypatch.setattr(code_sandbox, "_detect_isolation", lambda: isolation)
    return isolation


def test_limits_without_containment(without_containment):
    """The "rlimits" fallback still enforces every limit (and blocks the socket module)."""
    programs = {
        "while True:\n    pass": "timeout",
        "blob = bytearray(2 * 1024**3)": "memory",
        "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)": "file_size",
        "print('x' * 200000)": "output_limit",
        "raise SystemExit(3)": "runtime_error",
        "import socket\nsocket.socket()": "runtime_error",
        DOUBLE: "ok",
    }
    results = run_concurrently({p: (p, "4\n") for p in programs}, FAST)
    assert {p: r.reason for p, r in results.items()} == programs


# ---------------------------------------------------------------------------------------------
# Hostile programs. Each one prints what its attack would win (the expected output, worth reward
# 1) only if the attack worked, and raises when the kernel refuses it.

SUITE_LIMITS = dict(timeout_s=3.0, memory_mb=64, max_output_bytes=1 << 16, max_file_bytes=1 << 20, max_processes=10)
UMOUNT = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def umount(target):
    if libc.umount2(target.encode(), 2):  # MNT_DETACH
        raise OSError(ctypes.get_errno(), "umount " + target)
"""
# Starts a process that leaves the process group and would outlive the run if it could.
STRAY = """\
import os
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", ["{stray}", "30"])
"""
# The victim: a normal run whose input (its answer) and directory the attackers look for.
VICTIM = """\
import os, time
secret = input()
open("secret_{marker}", "w").write(secret)
time.sleep(1.2)  # while the attackers run
print("PLANTED" if any(name.startswith("planted_") for name in os.listdir(".")) else "victim ok")
"""
# Looks for the victim's files everywhere it can see, for up to 1 s.
FIND_VICTIM = """\
import glob, os, time
def find_victim():
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        found = [path for pattern in ("/tmp/*/secret_{marker}", "/tmp/*/*/secret_{marker}",
                                      "/proc/*/cwd/secret_{marker}", "/proc/*/root/tmp/work/secret_{marker}")
                 for path in glob.glob(pattern) if not os.path.samefile(os.path.dirname(path), ".")]
        for top in ("/tmp", "/dev", "/var", "/run", "/home"):
            for directory, _, files in os.walk(top):
                if "secret_{marker}" in files and not os.path.samefile(directory, "."):
                    found.append(os.path.join(directory, "secret_{marker}"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise FileNotFoundError("no other sandbox found")
"""


# What the kernel answers each attack that ends with "runtime_error" (the last line of its stderr).
REFUSALS = {
    "umount_then_write_host_tmp": "[Errno 1] umount /tmp",  # EPERM: no capability
    "umount_proc_then_read_host_proc": "[Errno 1] umount /proc",
    "connect_host_unix_socket": "FileNotFoundError",  # not in the sandbox's file system
    "connect_host_abstract_socket": "ConnectionRefusedError",  # another network namespace
    "read_other_sandbox": "no other sandbox found",
    "write_other_sandbox": "no other sandbox found",
    "memfds_past_memory_mb": "[Errno 24] Too many open files",  # budget: RLIMIT_NOFILE
    "self_mounted_tmpfs_past_memory_mb": "[Errno 1] mount tmpfs",  # seccomp refused the user namespace
    "lseek_on_stdout": "[Errno 29] Illegal seek",  # a pipe
    "write_to_stdin": "[Errno 9] Bad file descriptor",  # the read end
    "reopen_stdout": "[Errno 13] Permission denied",  # root's pipe, as nobody
    "sysv_shared_memory": "[Errno 1] shmget",  # seccomp
    "fill_tmpfs": "[Errno 28] No space left on device",
    "write_outside_tmpfs": "[Errno 30] Read-only file system: '//hog'",
    "read_host_file": "FileNotFoundError",
    "write_host_etc": "[Errno 30] Read-only file system",
    "host_network": "[Errno 101] Network is unreachable",
}


def hostile_programs(m):
    """{name: (program, stdin, expected output, reasons)}: ``m`` holds the markers and bait paths;
    reasons is the set of acceptable reasons, or {memory mechanism: set} where it depends on it."""
    return {
        # The ten kinds of issue 30.
        "umount_then_write_host_tmp": (UMOUNT + f"""\
refused = []
for target in {WORLD_WRITABLE!r}:
    try:
        umount(target)
    except OSError as error:
        refused.append(error)
    try:
        open(target + "/{m['stray']}", "w").write("x")
    except OSError:
        pass
if refused:
    raise refused[0]
print("escaped")""", "", "escaped", {"runtime_error"}),
        "umount_proc_then_read_host_proc": (UMOUNT + f"""\
try:
    umount("/proc")
finally:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"{m['host']}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                print("{m['host']}")
                raise SystemExit
        except OSError:
            pass
""", "", m["host"], {"runtime_error"}),
        "connect_host_unix_socket": (f"""\
import _socket  # under the socket module's patch of the "rlimits" fallback
connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
connection.connect({m['socket']!r})
print("connected")""", "", "connected", {"runtime_error"}),
        "connect_host_abstract_socket": (f"""\
import _socket
connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
connection.connect({m['abstract']!r})
print("connected")""", "", "connected", {"runtime_error"}),
        "read_other_sandbox": (FIND_VICTIM.format(marker=m["marker"]) + """\
print(open(find_victim()).read())""", "", m["victim_secret"], {"runtime_error"}),
        "write_other_sandbox": (FIND_VICTIM.format(marker=m["marker"]) + f"""\
open(os.path.join(os.path.dirname(find_victim()), "planted_{m['marker']}"), "w").write("x")
print("planted")""", "", "planted", {"runtime_error"}),
        "memfds_past_memory_mb": ("""\
import mmap, os
files = []
for _ in range(4 * 64):  # 4 x memory_mb in memfds of 1 MiB (max_file_bytes), each filled through a mapping
    fd = os.memfd_create("hog")
    os.ftruncate(fd, 1 << 20)
    with mmap.mmap(fd, 1 << 20) as pages:
        pages.write(b"x" * (1 << 20))
    files.append(fd)
print("held 256 MiB")""", "", "held 256 MiB", {"cgroup1": {"memory"}, "cgroup2": {"memory"},
                                                 "budget": {"runtime_error"}}),  # budget: EMFILE
        "self_mounted_tmpfs_past_memory_mb": ("""\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000 | 0x20000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS: root of namespaces of its own
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
    open("/proc/self/gid_map", "w").write(f"0 {gid} 1")
else:
    libc.unshare(0x20000)  # CLONE_NEWNS
os.mkdir("hog")
if libc.mount(b"none", b"hog", b"tmpfs", 0, b"size=1g"):
    raise OSError(ctypes.get_errno(), "mount tmpfs")
for i in range(256):
    open(f"hog/{i}", "wb").write(b"x" * (1 << 20))
print("held 256 MiB")""", "", "held 256 MiB", {"runtime_error"}),
        "lseek_on_stdout": ("""\
import os
for _ in range(100):  # rewrite the same bytes past the output cap
    os.lseek(1, 0, os.SEEK_SET)
    os.write(1, b"x" * 65536)
os.lseek(1, 0, os.SEEK_SET)
print("ok")""", "", "ok", {"runtime_error"}),
        "write_to_stdin": ("""\
import os
os.write(0, b"forged input")
print("wrote")""", "", "wrote", {"runtime_error"}),
        # More ways out.
        "reopen_stdout": ("""\
with open("/proc/self/fd/1", "w") as out:
    out.write("x" * 200000)""", "", "x" * 200000, {"runtime_error", "output_limit"}),
        "sysv_shared_memory": ("""\
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
segment = libc.shmget(0, 256 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
if segment < 0:
    raise OSError(ctypes.get_errno(), "shmget")
print("held 256 MiB")""", "", "held 256 MiB", {"runtime_error"}),
        "fill_tmpfs": ("""\
for directory in ("/tmp", "/dev/shm", "."):
    for i in range(64):
        open(f"{directory}/fill{i}", "wb").write(b"x" * 65536)
print("wrote 12 MiB")""", "", "wrote 12 MiB", {"runtime_error"}),  # ENOSPC
        "write_outside_tmpfs": ("""\
refused = []
for directory in ("/", "/dev", "/usr", "/etc", "/proc"):  # unsized or the host's, unlike /tmp and /dev/shm
    try:
        with open(directory + "/hog", "wb") as f:
            f.write(b"x" * (1 << 20))
    except OSError as error:
        refused.append(error)
if len(refused) == 5:
    raise refused[0]
print("wrote")""", "", "wrote", {"runtime_error"}),
        "read_host_file": (f"print(open({m['host_file']!r}).read())", "", m["host_secret"], {"runtime_error"}),
        "write_host_etc": (f"open('/etc/{m['stray']}', 'w').write('x')\nprint('wrote')", "", "wrote",
                           {"runtime_error"}),
        "host_network": ("import _socket\nconnection = _socket.socket()\nconnection.settimeout(1)\n"
                         "connection.connect(('1.1.1.1', 80))\nprint('connected')", "", "connected", {"runtime_error"}),
        "read_environment": ("import os\nprint(os.environ.get('JAXRL_TEST_SECRET'))", "", "hunter2",
                             {"wrong_answer"}),
        "kill_its_parent": ("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(0.5)\n"
                            "print('survived')", "", "parent killed", {"killed", "wrong_answer"}),
        "kill_everything": ("import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(0.5)\nprint('alive')",
                            "", "host killed", {"runtime_error", "wrong_answer"}),
        "fork_bomb": ("import os, time\ncount = 0\ntry:\n    for _ in range(1000):\n"
                      "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
                      "        count += 1\nexcept OSError:\n    pass\nprint(count)", "", "1000", {"wrong_answer"}),
        "processes_past_memory_mb": ("""\
import os, time
for _ in range(5):  # 5 x 30 MiB against memory_mb = 64
    if os.fork() == 0:
        hog = bytearray(30 << 20)
        time.sleep(1)
        os._exit(0)
results = [os.wait()[1] for _ in range(5)]
print("held 150 MiB" if results == [0] * 5 else results)""", "", "held 150 MiB",
                                     # budget: memory_mb is per process, the sandbox is held to memory_bound_mb
                                     {"cgroup1": {"memory"}, "cgroup2": {"memory"}, "budget": {"ok"}}),
        # The existing kill reasons.
        "busy_loop": ("while True:\n    pass", "", "", {"timeout"}),
        "sleep": ("import time\ntime.sleep(60)", "", "", {"timeout"}),
        "huge_allocation": ("blob = bytearray(2 * 1024**3)", "", "", {"memory"}),
        "huge_file": ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)", "", "",
                      {"file_size"}),
        "long_output": ("print('x' * 200000)", "", "x" * 200000, {"output_limit"}),
        "endless_output": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", "", "", {"output_limit"}),
        "endless_stderr": ("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)", "", "", {"output_limit"}),
        "deep_recursion": ("def f(n):\n    return f(n + 1)\nf(0)", "", "", {"runtime_error"}),
        "syntax_error": ("def f(:\n    pass", "", "", {"runtime_error"}),
        "exit_code": ("raise SystemExit(3)", "", "", {"runtime_error"}),
    }


# Runs in the runner process: the sandbox module's copy, the mechanism, every job at once.
RUNNER = textwrap.dedent("""\
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, sys.argv[1])
    import code_sandbox
    isolation = code_sandbox._probe_isolation(sys.argv[2])
    if isolation is None:
        print(json.dumps(None))
        raise SystemExit
    code_sandbox._detect_isolation = lambda: isolation
    request = json.load(sys.stdin)
    limits = code_sandbox.SandboxLimits(**request["limits"])
    def run(job):
        program, stdin, expected = job
        started = time.monotonic()
        (ok, output, reason), stderr_tail = code_sandbox._execute(isolation, program, stdin, limits)
        if ok and code_sandbox._normalize_output(output) != code_sandbox._normalize_output(expected):
            reason = "wrong_answer"
        return {"reward": float(reason == "ok"), "reason": reason, "output": output[:200],
                "error": (stderr_tail.strip().splitlines() or [""])[-1], "seconds": time.monotonic() - started}
    with ThreadPoolExecutor(8) as pool:  # in order: the victim and the attacks on it first
        results = dict(zip(request["jobs"], pool.map(run, request["jobs"].values())))
    print(json.dumps({"memory": code_sandbox.mechanism().memory, "bound_mb": code_sandbox.memory_bound_mb(limits),
                      "uid": code_sandbox.os.getuid(), "results": results}))
    """)


@pytest.fixture
def bait():
    """Markers, and things on the host an escaped program could reach: a secret file, a unix socket
    in /tmp and an abstract one, all open to everyone."""
    token = uuid.uuid4().hex
    m = {"marker": token, "host": f"jaxrl_host_{token}", "stray": f"jaxrl_stray_{token}",
         "victim_secret": f"victim answer {token}", "host_secret": f"host answer {token}",
         "socket": f"/tmp/jaxrl_host_{token}.sock", "abstract": f"\0jaxrl_host_{token}"}
    directory = tempfile.mkdtemp(prefix=f"jaxrl_host_{token}_")
    os.chmod(directory, 0o755)
    m["host_file"] = os.path.join(directory, "answer.txt")
    with open(m["host_file"], "w") as f:
        f.write(m["host_secret"])
    os.chmod(m["host_file"], 0o644)
    servers = []
    for address in (m["socket"], m["abstract"]):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen()
        server.setblocking(False)
        servers.append(server)
    os.chmod(m["socket"], 0o777)
    m["servers"] = servers
    yield m
    for server in servers:
        server.close()
    os.remove(m["socket"])
    shutil.rmtree(directory)


def connections_accepted(servers):
    count = 0
    for server in servers:
        try:
            server.accept()[0].close()
            count += 1
        except BlockingIOError:
            pass
    return count


def host_leftovers(m, grace_s=2.0):
    """Processes and files on the host named after this suite's markers (a killed process can take a
    moment to leave /proc on a loaded machine, a leaked one stays)."""
    deadline = time.monotonic() + grace_s
    while True:
        processes = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if m["stray"].encode() in f.read():
                        processes.append(int(entry))
            except OSError:
                continue
        files = [os.path.join(d, name) for d in (*WORLD_WRITABLE, "/etc") if os.path.isdir(d)
                 for name in os.listdir(d) if m["stray"] in name]
        if not processes or time.monotonic() > deadline:
            return processes, files
        time.sleep(0.05)


def victim_and_attacks(m):
    """Jobs for the runner: the victim first (so it runs beside the attacks), then every hostile
    program with a stray process in front."""
    jobs = {"victim": (VICTIM.format(marker=m["marker"]), m["victim_secret"] + "\n", "victim ok")}
    stray = STRAY.format(stray=m["stray"])
    for name, (program, stdin, expected, _) in hostile_programs(m).items():
        jobs[name] = (stray + program, stdin, expected)
    return jobs


def run_suite(mechanism, as_uid, m):
    """Run the suite in a runner process as ``as_uid`` (None: as this process's user)."""
    isolation = code_sandbox._base_isolation()
    module_dir = tempfile.mkdtemp(prefix="jaxrl_sandbox_module_")
    try:
        os.chmod(module_dir, 0o755)
        shutil.copy(code_sandbox.__file__, os.path.join(module_dir, "code_sandbox.py"))
        os.chmod(os.path.join(module_dir, "code_sandbox.py"), 0o644)
        limits = SandboxLimits(**SUITE_LIMITS)
        budget = 8 * code_sandbox.memory_bound_mb(limits)  # the stated budget: the runner's 8 at once
        request = {"limits": SUITE_LIMITS, "jobs": victim_and_attacks(m)}
        completed = subprocess.run(
            [isolation.python, "-I", "-S", "-c", RUNNER, module_dir, mechanism, m["host"]],
            input=json.dumps(request), capture_output=True, text=True, timeout=120, cwd="/",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "JAXRL_TEST_SECRET": "hunter2",
                 "JAXRL_SANDBOX_MEMORY_BUDGET_MB": str(budget)},
            **code_sandbox._user_kwargs(as_uid))
    finally:
        shutil.rmtree(module_dir)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def mechanism_unusable(mechanism, as_uid):
    """Why ``mechanism`` cannot work on this machine (None where it must): its tool is missing, too
    old, or cannot create namespaces as the sandbox's user."""
    if os.uname().machine not in code_sandbox._ARCHES:
        return "the sandbox's seccomp filter is written for x86_64 and aarch64 only"
    if mechanism == "unshare":
        if tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2]) < (5, 12):
            return "the unshare mechanism needs Linux 5.12 (mount_setattr)"
        command = ["unshare", "--user", "--map-root-user", "--net", "--ipc", "--uts", "--cgroup", "--mount", "--pid",
                   "--fork", "--kill-child", "true"]
    else:  # every option the sandbox passes
        command = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--ro-bind", "/",
                   "/", "--proc", "/proc", "--dev", "/dev", "--size", "65536", "--perms", "1777", "--tmpfs", "/tmp",
                   "--dir", "/tmp/work", "--chdir", "/tmp/work", "--symlink", "usr", "/tmp/usr", "--remount-ro", "/dev",
                   "true"]
    try:
        subprocess.run(command, capture_output=True, timeout=30, check=True, cwd="/",
                       **code_sandbox._user_kwargs(as_uid))
    except (OSError, subprocess.SubprocessError):
        return f"{command[0]} is missing, too old, or cannot create namespaces on this machine"
    return None


@pytest.mark.parametrize("user", ["root", "unprivileged"])
@pytest.mark.parametrize("mechanism", ["bubblewrap", "unshare"])
def test_hostile_programs_are_contained(mechanism, user, bait):
    if user == "root" and os.getuid() != 0:
        pytest.skip("running the sandbox as root needs this test to run as root")
    as_uid = code_sandbox._base_isolation().run_as_uid if user == "unprivileged" else None
    reason = mechanism_unusable(mechanism, code_sandbox._base_isolation().run_as_uid)
    if reason:
        pytest.skip(reason)
    suite = run_suite(mechanism, as_uid, bait)
    assert suite is not None, f"the {mechanism} mechanism failed its probe although {mechanism} works here"
    assert (suite["uid"] == 0) == (user == "root")
    results, programs = suite["results"], hostile_programs(bait)
    assert len(programs) >= 25
    assert results["victim"]["reward"] == 1.0, results["victim"]  # its answer was not read, its directory not written
    unexpected = {}
    for name, (_, _, _, reasons) in programs.items():
        allowed = reasons[suite["memory"]] if isinstance(reasons, dict) else reasons
        result = results[name]
        if (result["reason"] not in allowed or result["reward"] != float(allowed == {"ok"})
                or result["reason"] == "runtime_error" and REFUSALS.get(name, "") not in result["error"]):
            unexpected[name] = result
        assert result["seconds"] < SUITE_LIMITS["timeout_s"] + 2.0, (name, result)
    assert unexpected == {}
    assert 0 < int(results["fork_bomb"]["output"]) < SUITE_LIMITS["max_processes"]
    if suite["memory"] == "budget":  # held 150 MiB in all, within the sandbox's stated bound
        assert 150 < suite["bound_mb"]
    assert connections_accepted(bait["servers"]) == 0
    assert host_leftovers(bait) == ([], [])


def test_hostile_programs_escape_without_containment(without_containment, bait):
    """The same attacks against the "rlimits" fallback, which contains nothing: they work, so the
    suite above tests real attacks."""
    programs = hostile_programs(bait)
    names = ["umount_then_write_host_tmp", "umount_proc_then_read_host_proc", "connect_host_unix_socket",
             "connect_host_abstract_socket", "read_other_sandbox", "write_other_sandbox", "read_host_file",
             "host_network"]
    jobs = {"victim": (VICTIM.format(marker=bait["marker"]), bait["victim_secret"] + "\n")}
    jobs.update({name: programs[name][:2] for name in names})
    limits = SandboxLimits(**SUITE_LIMITS)
    # The /proc attack looks for a process whose command line names the host marker: be one.
    witness = subprocess.Popen([bait["host"], "30"], executable="/bin/sleep")
    try:
        results = run_concurrently(jobs, limits)
    finally:
        witness.kill()
        witness.wait()
    try:
        escaped = {name for name in names if results[name].ok
                   and code_sandbox._normalize_output(results[name].output) == programs[name][2]}
        # The host's network may be unreachable from this machine: that attack is not counted.
        assert escaped >= set(names) - {"umount_then_write_host_tmp", "host_network"}
        assert results["victim"].output == "PLANTED\n"
        assert os.path.exists(f"/tmp/{bait['stray']}")  # written to the host's /tmp
        assert connections_accepted(bait["servers"]) == 2
    finally:
        for directory in WORLD_WRITABLE:
            if os.path.exists(f"{directory}/{bait['stray']}"):
                os.remove(f"{directory}/{bait['stray']}")
