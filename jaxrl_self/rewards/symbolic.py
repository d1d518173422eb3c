"""A long-lived sympy worker process that decides whether two parsed expressions are equal, under
a hard timeout and a memory limit (a pathological expression kills the worker, not the caller).
"""
from __future__ import annotations

import logging
import multiprocessing.connection
import os
import resource
import subprocess
import sys
import threading

logger = logging.getLogger(__name__)

_WORKER_MEMORY_BYTES = 2 * 1024**3
_WORKER_START_TIMEOUT_S = 120.0


def _tree_to_sympy(node: tuple, sympy):
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1])
    if kind == "sym":
        return sympy.Symbol(node[1])
    if kind == "const":
        return {"pi": sympy.pi, "oo": sympy.oo}[node[1]]
    if kind == "func":
        return getattr(sympy, node[1])(_tree_to_sympy(node[2], sympy))
    args = [_tree_to_sympy(child, sympy) for child in node[1:]]
    if kind == "neg":
        return -args[0]
    if kind == "root":
        return sympy.root(args[0], args[1])
    operations = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
                  "div": lambda x, y: x / y, "pow": lambda x, y: x**y}
    return operations[kind](*args)


def _trees_equal(tree_a: tuple, tree_b: tuple, sympy) -> bool:
    a, b = _tree_to_sympy(tree_a, sympy), _tree_to_sympy(tree_b, sympy)
    difference = sympy.simplify(a - b)
    if difference == 0:
        return True
    if difference.free_symbols or not difference.is_number:
        return False
    scale = max(1, abs(complex(sympy.N(a, 30))))
    return abs(complex(sympy.N(difference, 30))) < 1e-9 * scale


def _symbolic_worker_main() -> None:
    """Worker loop: reads ``(tree_a, tree_b)`` pickles from stdin, answers bools on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    requests = multiprocessing.connection.Connection(os.dup(0), writable=False)
    replies = multiprocessing.connection.Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints must not corrupt the reply channel
    import sympy

    replies.send("ready")
    while True:
        try:
            tree_a, tree_b = requests.recv()
        except EOFError:
            return
        try:
            result = _trees_equal(tree_a, tree_b, sympy)
        except Exception:  # noqa: BLE001 - any failure means "not shown equal"
            result = False
        replies.send(bool(result))


class _SymbolicWorker:
    """A long-lived sympy worker process, started on first use and killed on a timeout.

    It is a subprocess running ``_symbolic_worker_main`` (not ``multiprocessing``), so no
    ``__main__`` guard is needed in user scripts and nothing is forked from a threaded JAX process.
    Calls are serialised by a lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._requests = None
        self._replies = None

    def _start(self) -> None:
        command = [sys.executable, "-c",
                   "from jaxrl_self.rewards import symbolic; symbolic._symbolic_worker_main()"]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=environment)
        self._requests = multiprocessing.connection.Connection(os.dup(self._process.stdin.fileno()),
                                                               readable=False)
        self._replies = multiprocessing.connection.Connection(os.dup(self._process.stdout.fileno()),
                                                              writable=False)
        if not self._replies.poll(_WORKER_START_TIMEOUT_S) or self._replies.recv() != "ready":
            self._stop()
            raise RuntimeError("sympy worker did not start")

    def _stop(self) -> None:
        self._process.kill()
        self._process.wait()
        for resource_ in (self._requests, self._replies, self._process.stdin, self._process.stdout):
            resource_.close()
        self._process = self._requests = self._replies = None

    def equal(self, tree_a: tuple, tree_b: tuple, timeout: float) -> bool:
        """Whether sympy shows ``tree_a - tree_b`` simplifies to 0 within ``timeout`` seconds."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                if self._process is not None:
                    self._stop()
                self._start()
            try:
                self._requests.send((tree_a, tree_b))
                if self._replies.poll(timeout):
                    return bool(self._replies.recv())
                logger.warning("sympy check timed out after %.1f s; restarting the worker", timeout)
            except (OSError, EOFError):
                logger.warning("sympy worker died; restarting it", exc_info=True)
            self._stop()
            return False


SYMBOLIC_WORKER = _SymbolicWorker()
