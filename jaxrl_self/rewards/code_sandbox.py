"""Run model-written Python programs in a contained subprocess.

Every run: ``python3 -I -S`` (isolated mode, no site packages: standard library only) with an
environment holding only ``PATH``; resource limits ``RLIMIT_CPU``, ``RLIMIT_AS`` (``memory_mb``),
``RLIMIT_FSIZE`` (``max_file_bytes``), ``RLIMIT_NPROC`` (``max_processes``), ``RLIMIT_NOFILE``
(64) and no core files, set by the launcher with soft = hard so the program cannot raise them; a
wall-clock timeout; the program's source sent through a pipe (no file on the host); stdin the read
end of a pipe (writing to it fails); stdout and stderr pipes read by this process, which stops the
run once either passes ``max_output_bytes`` (``lseek`` on a pipe fails, so the cap cannot be
dodged). When the caller is root, the program runs as ``nobody``.

Containment: the first of ``MECHANISMS`` whose probe (a trivial program) works here, picked once
per process and logged; ``mechanism()`` reports it.

* ``"bubblewrap"`` (``bwrap`` on ``PATH``; tested with 0.8.0, an older one that lacks an option
  used here fails the probe) and ``"unshare"`` (util-linux ``unshare``; Linux 5.12 or newer for
  ``mount_setattr``; x86_64 or aarch64) build the same sandbox. New user, PID, network, IPC, UTS,
  cgroup and mount namespaces. A root file system holding only read-only ``/usr``, ``/bin``,
  ``/sbin``, ``/lib*``, ``/etc`` and the interpreter's prefix; a ``/proc`` of the sandbox's own
  PID namespace with ``/proc/sys`` read-only; a minimal ``/dev`` (null, zero, full, random,
  urandom); and two tmpfs mounts of ``max_file_bytes`` each, ``/dev/shm`` and ``/tmp``, which holds
  the working directory ``/tmp/work``. The program runs with no capability in any set nor in the
  bounding set, and with ``no_new_privs`` (bubblewrap runs it as the caller's uid; with unshare the
  launcher mounts the tree as root of the user namespace, then drops every capability), so it
  cannot unmount, mount or remount anything. A seccomp filter refuses SysV shared memory and
  message queues (``shmget``, ``msgget``), new user namespaces (``unshare`` and ``clone`` with
  ``CLONE_NEWUSER``; ``clone3`` answers ``ENOSYS``, so libc falls back to ``clone``) and system
  calls of other ABIs, so the program cannot gain a namespace where it could mount a tmpfs.
  Contained therefore: the network (loopback only, down), host unix sockets (none lies in the
  tree it sees; abstract ones belong to the network namespace), host processes (invisible), host
  files (none writable), other sandboxes (each has its own mounts in its own mount namespace, and
  sees no other's processes), and every process the program starts (they die with its PID
  namespace). ``RLIMIT_NPROC`` counts only the sandbox's own processes (Linux 5.14 or newer counts
  per user namespace), two of which are the mechanism's.
* ``"rlimits"`` (neither works, e.g. where user namespaces are forbidden) contains nothing beyond
  the limits above: the working directory is a fresh host directory, network access is blocked by
  replacing the ``socket`` module's constructors (a determined program can still reach
  ``_socket``), the program sees the host's processes and files, writes where its user may (as
  ``nobody`` when the caller is root; as the caller otherwise, whom it could then also signal) and
  reaches any unix socket its user may, and processes that left the process group with ``setsid``
  may outlive the run (unless a memory cgroup is used: what is left in it is killed).

Memory, also reported by ``mechanism()``:

* ``"cgroup2"``/``"cgroup1"``: where this process may create a memory cgroup (a cgroup v2
  directory at or above its own with the memory controller enabled for its children, else its own
  cgroup v1 memory directory; typically when the caller is root), each run gets its own, limited
  to ``memory_mb`` with no swap: anonymous memory, tmpfs and memfd pages and kernel memory of all
  its processes together. The sandbox's first process joins it before it starts anything. A run
  in which the kernel's OOM killer stopped a process ends with reason "memory".
* ``"budget"``: otherwise. ``memory_mb`` bounds each process's address space, and what one sandbox
  can hold in all is ``memory_bound_mb(limits)``: ``max_processes`` processes of ``memory_mb``
  each, 64 open files of ``max_file_bytes`` (memfd) plus 1 MiB (pipe or socket buffers) each, and
  the two tmpfs mounts. Runs start only while the bounds of the runs going on in this Python process
  fit in ``memory_budget_mb()`` (``JAXRL_SANDBOX_MEMORY_BUDGET_MB``, else half of the machine's
  memory); a run whose bound alone is over the budget runs alone. With ``"rlimits"`` the bound does
  not hold (the program can fill the host's ``/dev/shm``).

This is a guard against accidents and reward hacking by a research model. The namespace
mechanisms are what container runtimes build on, but the kernel is shared (a kernel bug is an
escape), and the program can read the world-readable files of the directories it sees.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import platform
import pwd
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

logger = logging.getLogger(__name__)

REASONS = ("ok", "wrong_answer", "timeout", "memory", "file_size", "output_limit", "killed", "runtime_error",
           "nondeterministic")
MECHANISMS = ("bubblewrap", "unshare", "rlimits")  # in order of preference
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Host directories the namespace mechanisms show (read-only), with the interpreter's prefix.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_WORKDIR = "/tmp/work"
_MAX_OPEN_FILES = 64
_MIB = 1 << 20
_BUDGET_VARIABLE = "JAXRL_SANDBOX_MEMORY_BUDGET_MB"
_UNSHARE_ARGUMENTS = ("--user", "--map-root-user", "--net", "--ipc", "--uts", "--cgroup", "--mount", "--pid",
                      "--fork", "--kill-child")
# The first process waits for one line on stdin: the host moves it into the run's cgroup first,
# so that everything it starts is in that cgroup from its first allocation.
_WAIT_FOR_GO = ("/bin/sh", "-c", 'read -r go && exec "$@"', "jaxrl_sandbox")


class _Arch(NamedTuple):
    audit: int  # AUDIT_ARCH_* as seccomp reports it
    shmget: int
    msgget: int
    clone: int
    unshare: int
    clone3: int
    pivot_root: int


_ARCHES = {
    "x86_64": _Arch(audit=0xC000003E, shmget=29, msgget=68, clone=56, unshare=272, clone3=435, pivot_root=155),
    "aarch64": _Arch(audit=0xC00000B7, shmget=194, msgget=186, clone=220, unshare=97, clone3=435, pivot_root=41),
}

# Runs inside the sandbox. Reads the program from stdin (the host closes it after the source),
# takes the program's stdin from the descriptor the host passed, builds the file system and drops
# every capability (unshare), installs the seccomp filter (both namespace mechanisms), lowers its
# own limits (soft = hard, so the program cannot raise them), then runs the program as __main__.
# Setting limits here rather than in a preexec_fn keeps Python code out of the forked child of a
# multithreaded (JAX) process.
_LAUNCHER = r'''
import json, os, resource, sys
config = json.loads(sys.argv[1])
chunks = []
while chunk := os.read(0, 1 << 16):
    chunks.append(chunk)
source = b"".join(chunks)
os.dup2(config["stdin_fd"], 0)
os.close(config["stdin_fd"])
if config["mechanism"] != "rlimits":
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def check(result, action):
        if result != 0:
            error = ctypes.get_errno()
            raise OSError(error, action + ": " + os.strerror(error))
    def prctl(option, argument, pointer=0):  # the unused arguments must be 0
        check(libc.prctl(*(ctypes.c_ulong(a) for a in (option, argument, pointer, 0, 0))), "prctl %d" % option)
if config["mechanism"] == "unshare":
    MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 2, 4, 8, 4096, 16384
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    def mount(source, target, fstype, flags, options=None):
        check(libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags,
                         options and options.encode()), "mount " + target)
    class MountAttr(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]
    def make_read_only(path, recursive):  # mount_setattr(AT_FDCWD, path, AT_RECURSIVE?, MOUNT_ATTR_RDONLY)
        attr = MountAttr(1, 0, 0, 0)
        check(libc.syscall(ctypes.c_long(442), ctypes.c_long(-100), path.encode(),
                           ctypes.c_long(0x8000 if recursive else 0), ctypes.byref(attr),
                           ctypes.c_long(ctypes.sizeof(attr))), "make read-only " + path)
    # The new root: a tmpfs over the host's /tmp, in this mount namespace only (so no bound path may
    # lie under /tmp), then pivoted to and the host's root detached.
    root = "/tmp"
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in config["binds"]:
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
        else:
            os.mkdir(target)
            mount(path, target, None, MS_BIND | MS_REC)
            make_read_only(target, recursive=True)
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount(root + "/proc/sys", root + "/proc/sys", None, MS_BIND | MS_REC)
    make_read_only(root + "/proc/sys", recursive=True)
    os.mkdir(root + "/dev")
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in ("null", "zero", "full", "random", "urandom"):
        open(root + "/dev/" + name, "x").close()
        mount("/dev/" + name, root + "/dev/" + name, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    for path in ("/dev/shm", "/tmp"):
        os.mkdir(root + path)
        mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,mode=1777" % config["tmpfs_bytes"])
    os.mkdir(root + config["workdir"])
    make_read_only(root + "/dev", recursive=False)
    os.chdir(root)
    check(libc.syscall(ctypes.c_long(config["pivot_root"]), b".", b"."), "pivot_root")
    check(libc.umount2(b".", 2), "detach the host's root")  # MNT_DETACH
    os.chdir("/")
    make_read_only("/", recursive=False)
    os.chdir(config["workdir"])
    os.setsid()  # out of the host's process group, as bubblewrap's --new-session does
    with open("/proc/sys/kernel/cap_last_cap") as last_cap:
        for cap in range(int(last_cap.read()) + 1):
            prctl(24, cap)  # PR_CAPBSET_DROP
    prctl(47, 4)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")  # effective, permitted, inheritable: none
if config["mechanism"] != "rlimits":
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    seccomp_filter = bytes.fromhex(config["seccomp"])
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    program = SockFprog(len(seccomp_filter) // 8, seccomp_filter)
    prctl(22, 2, ctypes.addressof(program))  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
for name, value in config["rlimits"].items():
    limit = getattr(resource, name)
    hard = resource.getrlimit(limit)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))
if config["mechanism"] == "rlimits":
    import socket
    def no_network(*args, **kwargs):
        raise OSError("network access is disabled in this sandbox")
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname"):
        setattr(socket, name, no_network)
sys.argv = ["main.py"]
namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
exec(compile(source, "main.py", "exec"), namespace)
'''


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


class Mechanism(NamedTuple):
    """What contains the sandbox: ``isolation`` from ``MECHANISMS``, ``memory`` one of "cgroup2",
    "cgroup1", "budget" (see the module docstring)."""
    isolation: str
    memory: str


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits.

    ``memory_mb`` bounds each process's address space and, where a memory cgroup can be had, the
    whole sandbox. ``max_file_bytes`` bounds each file written and each of the two tmpfs mounts
    (``/tmp``, holding the working directory, and ``/dev/shm``). ``max_output_bytes`` bounds
    stdout and stderr each. ``max_processes`` is an ``RLIMIT_NPROC`` budget: with the namespace
    mechanisms it counts the sandbox's own processes (two of them the mechanism's); with
    ``"rlimits"`` as ``nobody`` it is shared by all sandboxes running at the same time.
    """
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    max_processes: int = 32


@dataclasses.dataclass(frozen=True)
class _MemoryCgroup:
    """A cgroup directory under which each run gets a child limited to its ``memory_mb``."""
    version: int
    parent: str

    def create(self, limit_bytes: int) -> str:
        path = os.path.join(self.parent, f"jaxrl_sandbox_{uuid.uuid4().hex}")
        os.mkdir(path)
        if self.version == 2:
            limit, optional = "memory.max", [("memory.swap.max", 0), ("memory.oom.group", 1)]
        else:  # memsw (memory + swap, where swap is accounted) must not be below the memory limit
            limit, optional = "memory.limit_in_bytes", [("memory.memsw.limit_in_bytes", limit_bytes)]
        try:
            for name, value in [(limit, limit_bytes), *optional]:
                if name == limit or os.path.exists(os.path.join(path, name)):
                    with open(os.path.join(path, name), "w") as f:
                        f.write(str(value))
        except OSError:
            os.rmdir(path)
            raise
        return path

    def oom_kills(self, path: str) -> int:
        with open(os.path.join(path, "memory.events" if self.version == 2 else "memory.oom_control")) as f:
            counts = dict(line.split() for line in f)
        return int(counts.get("oom_kill", 0))


def _remove_cgroup(path: str) -> None:
    """Kill what is left in the cgroup (only the "rlimits" mechanism leaves anything: processes
    that left the process group), then remove it."""
    for _ in range(100):
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(line) for line in f]
        try:
            os.rmdir(path)
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    logger.warning("code sandbox: could not empty and remove the cgroup %s", path)


def _find_memory_cgroup() -> _MemoryCgroup | None:
    """A cgroup v2 directory at or above this process's own with the memory controller enabled
    for its children, else this process's cgroup v1 memory directory, where a child with a memory
    limit can be created; None where neither can."""
    v2_mount = v1_mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], fields[fields.index("-") + 3]
            if fstype == "cgroup2":
                v2_mount = fields[4]
            elif fstype == "cgroup" and "memory" in options.split(","):
                v1_mount = fields[4]
    candidates = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, own = line.rstrip("\n").split(":", 2)
            if controllers == "" and v2_mount:
                path = os.path.normpath(v2_mount + own)
                while True:
                    candidates.append((2, path))
                    if path == v2_mount:
                        break
                    path = os.path.dirname(path)
            elif "memory" in controllers.split(",") and v1_mount:
                candidates.append((1, os.path.normpath(v1_mount + own)))
    for version, path in sorted(candidates, key=lambda candidate: -candidate[0]):
        cgroup = _MemoryCgroup(version, path)
        try:
            if version == 2:
                with open(os.path.join(path, "cgroup.subtree_control")) as f:
                    if "memory" not in f.read().split():
                        continue
            _remove_cgroup(cgroup.create(64 * _MIB))
        except OSError:
            continue
        return cgroup
    return None


@dataclasses.dataclass(frozen=True)
class _Isolation:
    mechanism: str
    run_as_uid: int | None
    python: str
    binds: tuple[str, ...]  # host paths shown read-only by the namespace mechanisms
    cgroup: _MemoryCgroup | None


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


def _is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@functools.cache
def _base_isolation() -> _Isolation | None:
    """User, interpreter, visible paths and memory cgroup, shared by all mechanisms; None when no
    interpreter is usable by the sandbox user."""
    run_as_uid = None
    if os.getuid() == 0:
        try:
            run_as_uid = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            run_as_uid = 65534
    for python in (os.path.realpath(sys.executable), shutil.which("python3", path=_SAFE_PATH)):
        if python is None:
            continue
        try:
            completed = subprocess.run([python, "-I", "-S", "-c", "import sys; print(sys.base_prefix)"],
                                       env={"PATH": _SAFE_PATH}, cwd="/", capture_output=True, text=True,
                                       timeout=30, check=False, **_user_kwargs(run_as_uid))
        except (OSError, subprocess.SubprocessError):
            continue
        if completed.returncode == 0:
            break
    else:
        return None
    binds = [path for path in _SYSTEM_PATHS if os.path.lexists(path)]
    for path in (completed.stdout.strip(), os.path.dirname(python)):
        if not _is_under(path, binds):
            binds.append(path)
    return _Isolation("rlimits", run_as_uid, python, tuple(binds), _find_memory_cgroup())


@functools.cache
def _probe_isolation(mechanism: str) -> _Isolation | None:
    """The isolation of ``mechanism`` if a trivial program runs correctly with it here, else None."""
    base = _base_isolation()
    if base is None:
        return None
    if mechanism != "rlimits" and platform.machine() not in _ARCHES:
        return None
    tool = {"bubblewrap": "bwrap", "unshare": "unshare"}.get(mechanism)
    if tool is not None and shutil.which(tool, path=_SAFE_PATH) is None:
        return None
    isolation = dataclasses.replace(base, mechanism=mechanism)
    run, stderr_tail = _execute(isolation, "print(6 * 7)", "", SandboxLimits(timeout_s=30.0))
    if run != (True, "42\n", "ok"):
        logger.info("code sandbox: the %s mechanism does not work here: %s %s", mechanism, run, stderr_tail)
        return None
    return isolation


@functools.cache
def _detect_isolation() -> _Isolation:
    """The first mechanism of ``MECHANISMS`` that works here, picked once per process and logged."""
    for name in MECHANISMS:
        isolation = _probe_isolation(name)
        if isolation is not None:
            logger.info("code sandbox: isolation=%s, memory=%s, python=%s, run_as_uid=%s", name,
                        _memory_mechanism(isolation), isolation.python, isolation.run_as_uid)
            return isolation
    raise RuntimeError("no sandbox mechanism works here: no Python interpreter usable by the sandbox user, "
                       "or see the log")


def _memory_mechanism(isolation: _Isolation) -> str:
    return f"cgroup{isolation.cgroup.version}" if isolation.cgroup else "budget"


def mechanism() -> Mechanism:
    """The containment this process's sandboxes use (detected on first call)."""
    isolation = _detect_isolation()
    return Mechanism(isolation.mechanism, _memory_mechanism(isolation))


def memory_bound_mb(limits: SandboxLimits) -> int:
    """What one sandbox can hold without a memory cgroup: every process's address space, 64 open
    files of ``max_file_bytes`` (memfd) and 1 MiB (pipe or socket buffers) each, and the two tmpfs
    mounts."""
    per_process = limits.memory_mb + _MAX_OPEN_FILES * (limits.max_file_bytes / _MIB + 1)
    return math.ceil(limits.max_processes * per_process + 2 * limits.max_file_bytes / _MIB)


def memory_budget_mb() -> int:
    """The memory that runs without a cgroup may hold together (``JAXRL_SANDBOX_MEMORY_BUDGET_MB``,
    else half of the machine's memory)."""
    value = os.environ.get(_BUDGET_VARIABLE)
    if value:
        return int(value)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (2 * _MIB)


_budget = threading.Condition()
_reserved_mb = 0


@contextlib.contextmanager
def _memory_reservation(bound_mb: int) -> Iterator[None]:
    """Wait until ``bound_mb`` fits in the budget next to the runs going on (or none is), hold it."""
    global _reserved_mb
    budget = memory_budget_mb()
    with _budget:
        _budget.wait_for(lambda: _reserved_mb == 0 or _reserved_mb + bound_mb <= budget)
        _reserved_mb += bound_mb
    try:
        yield
    finally:
        with _budget:
            _reserved_mb -= bound_mb
            _budget.notify_all()


def _seccomp_filter(arch: _Arch) -> bytes:
    """Classic BPF: refuse other architectures' calls (x86_64: also the x32 ABI), SysV shared memory
    and message queues, and new user namespaces; allow the rest."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, deny, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS  # SECCOMP_RET_*
    # (code, k, label if true, label if false); seccomp_data: nr at 0, arch at 4, args[0] at 16.
    program = [
        (ld, 4, None, None), (jeq, arch.audit, None, "deny"),
        (ld, 0, None, None), (jge, 0x40000000, "deny", None),
        (jeq, arch.shmget, "deny", None), (jeq, arch.msgget, "deny", None),
        (jeq, arch.clone3, "enosys", None),
        (jeq, arch.clone, "flags", None), (jeq, arch.unshare, "flags", None),
        (ret, allow, None, None),
        "flags", (ld, 16, None, None), (jset, 0x10000000, "deny", None),  # CLONE_NEWUSER
        (ret, allow, None, None),
        "deny", (ret, deny, None, None),
        "enosys", (ret, enosys, None, None),
    ]
    labels, index = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = index
        else:
            index += 1
    code, index = b"", 0
    for item in program:
        if isinstance(item, str):
            continue
        op, k, if_true, if_false = item
        index += 1
        jt, jf = (labels[label] - index if label else 0 for label in (if_true, if_false))
        code += struct.pack("HBBI", op, jt, jf, k)
    return code


def _bubblewrap_arguments(isolation: _Isolation, tmpfs_bytes: int) -> list[str]:
    arguments = [shutil.which("bwrap", path=_SAFE_PATH), "--unshare-all", "--unshare-user", "--die-with-parent",
                 "--new-session"]
    for path in isolation.binds:
        arguments += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    arguments += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/dev/shm", "/tmp"):
        arguments += ["--size", str(tmpfs_bytes), "--perms", "1777", "--tmpfs", path]
    return arguments + ["--dir", _WORKDIR, "--chdir", _WORKDIR, "--remount-ro", "/dev", "--remount-ro", "/", "--"]


def _launch_command(isolation: _Isolation, limits: SandboxLimits, stdin_fd: int) -> list[str]:
    nproc = limits.max_processes
    if isolation.mechanism == "rlimits" and isolation.run_as_uid is None:
        nproc += _count_user_tasks(os.getuid())
    config = {
        "mechanism": isolation.mechanism, "stdin_fd": stdin_fd, "workdir": _WORKDIR, "binds": isolation.binds,
        "tmpfs_bytes": limits.max_file_bytes,
        "rlimits": {"RLIMIT_CPU": math.ceil(limits.timeout_s) + 1, "RLIMIT_AS": limits.memory_mb * _MIB,
                    "RLIMIT_FSIZE": limits.max_file_bytes, "RLIMIT_NPROC": nproc, "RLIMIT_CORE": 0,
                    "RLIMIT_NOFILE": _MAX_OPEN_FILES},
    }
    if isolation.mechanism != "rlimits":
        arch = _ARCHES[platform.machine()]
        config.update(seccomp=_seccomp_filter(arch).hex(), pivot_root=arch.pivot_root)
    prefix = {"bubblewrap": _bubblewrap_arguments(isolation, limits.max_file_bytes),
              "unshare": [shutil.which("unshare", path=_SAFE_PATH), *_UNSHARE_ARGUMENTS],
              "rlimits": []}[isolation.mechanism]
    return [*_WAIT_FOR_GO, *prefix, isolation.python, "-I", "-S", "-c", _LAUNCHER, json.dumps(config)]


@contextlib.contextmanager
def _working_directory(isolation: _Isolation) -> Iterator[str]:
    """Where the sandbox starts: the namespace mechanisms make their own working directory."""
    if isolation.mechanism != "rlimits":
        yield "/"
        return
    with tempfile.TemporaryDirectory(prefix="jaxrl_sandbox_") as workdir:
        if isolation.run_as_uid is not None:
            os.chown(workdir, isolation.run_as_uid, isolation.run_as_uid)
        yield workdir


def _exchange(process: subprocess.Popen, inputs: dict[int, bytes], outputs: dict[int, bytearray],
              limits: SandboxLimits) -> str | None:
    """Write ``inputs`` (descriptor: bytes, each closed once written) and read ``outputs`` until both
    reach end of file and the process has exited. Returns "timeout" or "output_limit" when a limit
    stopped it early, else None."""
    deadline = time.monotonic() + limits.timeout_s
    with selectors.DefaultSelector() as selector:
        for fd, data in inputs.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_WRITE, memoryview(data))
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        open_outputs = len(outputs)
        while open_outputs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            for key, _ in selector.select(remaining):
                if key.fd in outputs:
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fd)
                        open_outputs -= 1
                    outputs[key.fd] += chunk
                    if len(outputs[key.fd]) > limits.max_output_bytes:
                        return "output_limit"
                    continue
                try:
                    written = os.write(key.fd, key.data)
                except BrokenPipeError:  # the sandbox stopped reading
                    written = len(key.data)
                if written < len(key.data):
                    selector.modify(key.fd, selectors.EVENT_WRITE, key.data[written:])
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    del inputs[key.fd]
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return "timeout"
    return None


def _classify_failure(returncode: int, stderr_tail: str) -> str:
    # bubblewrap reports a signal as 128 + its number, like a shell (so does a program that exits
    # with such a code).
    signal_number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signal_number == signal.SIGXCPU:
        return "timeout"
    if "MemoryError" in stderr_tail or signal_number == signal.SIGSEGV:
        return "memory"
    if signal_number == signal.SIGKILL:  # by itself (e.g. its process group) or the kernel's OOM killer
        return "killed"
    if "File too large" in stderr_tail or signal_number == signal.SIGXFSZ:
        return "file_size"
    return "runtime_error"


def _execute(isolation: _Isolation, program: str, stdin: str, limits: SandboxLimits) -> tuple[ProgramRun, str]:
    """Run ``program`` once with ``isolation``; returns the run and the tail of its stderr."""
    reservation = (contextlib.nullcontext() if isolation.cgroup
                   else _memory_reservation(memory_bound_mb(limits)))
    with reservation, _working_directory(isolation) as cwd:
        cgroup = isolation.cgroup.create(limits.memory_mb * _MIB) if isolation.cgroup else None
        try:
            return _run_in(isolation, cgroup, cwd, program, stdin, limits)
        finally:
            if cgroup is not None:
                _remove_cgroup(cgroup)


def _run_in(isolation: _Isolation, cgroup: str | None, cwd: str, program: str, stdin: str,
            limits: SandboxLimits) -> tuple[ProgramRun, str]:
    control_r, control_w = os.pipe()  # "go", then the program's source
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    inputs = {control_w: b"go\n" + program.encode("utf-8"), stdin_w: stdin.encode("utf-8")}
    try:
        try:
            process = subprocess.Popen(
                _launch_command(isolation, limits, stdin_r), cwd=cwd, env={"PATH": _SAFE_PATH}, stdin=control_r,
                stdout=stdout_w, stderr=stderr_w, pass_fds=(stdin_r,), start_new_session=True,
                **_user_kwargs(isolation.run_as_uid))
        finally:
            for fd in (control_r, stdin_r, stdout_w, stderr_w):
                os.close(fd)
        try:
            if cgroup is not None:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(process.pid))
            outputs = {stdout_r: bytearray(), stderr_r: bytearray()}
            stopped = _exchange(process, inputs, outputs, limits)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        for fd in (*inputs, stdout_r, stderr_r):
            os.close(fd)
    output = outputs[stdout_r][:limits.max_output_bytes].decode("utf-8", errors="replace")
    stderr_tail = outputs[stderr_r][-4096:].decode("utf-8", errors="replace")
    if stopped == "timeout":
        return ProgramRun(False, "", "timeout"), stderr_tail
    if stopped == "output_limit":
        return ProgramRun(False, output, "output_limit"), stderr_tail
    if cgroup is not None and isolation.cgroup.oom_kills(cgroup):
        return ProgramRun(False, output, "memory"), stderr_tail
    if process.returncode != 0:
        return ProgramRun(False, output, _classify_failure(process.returncode, stderr_tail)), stderr_tail
    return ProgramRun(True, output, "ok"), stderr_tail


def run_program(program: str, stdin: str = "", limits: SandboxLimits = SandboxLimits()) -> ProgramRun:
    """Run ``program`` (Python source) once with ``stdin`` as its standard input.

    Returns:
      ``ProgramRun(ok, output, reason)``; ``output`` is stdout (at most
      ``limits.max_output_bytes``, decoded as UTF-8 with replacement).
    """
    return _execute(_detect_isolation(), program, stdin, limits)[0]


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
