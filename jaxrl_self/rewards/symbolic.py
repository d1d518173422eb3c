"""A long-lived worker process that decides the hard cases of math answer equivalence with
Hugging Face's ``math-verify``, under a hard timeout and a memory limit (a pathological answer kills
the worker, not the caller). The conventions it implements are in ``docs/math_answers.md``.

The worker calls ``verify(parse("$gold$"), parse("$answer$"))`` with math-verify's own timeouts off:
they use ``signal.alarm``, which fails outside the main thread, and this worker's timeout is in
charge instead. Only math-verify's LaTeX extraction is used; its plain-expression extraction hands
text to sympy's ``parse_expr``, which calls ``eval``.

The worker is a plain subprocess that loads this file by path, so it does not import ``jaxrl_self``
(nor JAX), needs no ``__main__`` guard in user scripts, and nothing is forked from a threaded JAX
process.
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
_WORKER_COMMAND = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('_jaxrl_self_math_worker', sys.argv[1]); "
    "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
    "module.worker_main()"
)


def worker_main() -> None:
    """Worker loop: reads ``(gold, answer)`` string pairs from stdin, answers bools on stdout.

    Sends ``"ready"`` once math-verify is imported and warmed up. Any exception in a check gives
    False; the parent kills the process when a check outlives its timeout.
    """
    resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    requests = multiprocessing.connection.Connection(os.dup(0), writable=False)
    replies = multiprocessing.connection.Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints must not corrupt the reply channel
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout is disabled" warnings
    from math_verify import LatexExtractionConfig, parse, verify

    extraction = [LatexExtractionConfig()]

    def equivalent(gold: str, answer: str) -> bool:
        gold_parsed = parse(f"${gold}$", extraction_config=extraction, parsing_timeout=None)
        answer_parsed = parse(f"${answer}$", extraction_config=extraction, parsing_timeout=None)
        return bool(verify(gold_parsed, answer_parsed, allow_set_relation_comp=True, timeout_seconds=None))

    equivalent("x^2", "x \\cdot x")  # loads the ANTLR parser before the first timed request
    replies.send("ready")
    while True:
        try:
            gold, answer = requests.recv()
        except EOFError:
            return
        try:
            result = equivalent(gold, answer)
        except Exception:  # noqa: BLE001 - any failure means "not shown equal"
            result = False
        replies.send(result)


class _SymbolicWorker:
    """The math-verify worker process, started on first use and restarted after a timeout.

    Calls are serialised by a lock. After a timeout the worker is killed and a new one is spawned at
    once, so it boots while the caller goes on; the next call waits for it to be ready.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._requests = None
        self._replies = None
        self._ready = False

    def _spawn(self) -> None:
        command = [sys.executable, "-c", _WORKER_COMMAND, os.path.abspath(__file__)]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=environment)
        self._requests = multiprocessing.connection.Connection(os.dup(self._process.stdin.fileno()),
                                                               readable=False)
        self._replies = multiprocessing.connection.Connection(os.dup(self._process.stdout.fileno()),
                                                              writable=False)
        self._ready = False

    def _stop(self) -> None:
        self._process.kill()
        self._process.wait()
        for resource_ in (self._requests, self._replies, self._process.stdin, self._process.stdout):
            resource_.close()
        self._process = self._requests = self._replies = None
        self._ready = False

    def _ensure_ready(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._stop()
        if self._process is None:
            self._spawn()
        if not self._ready:
            try:
                ready = self._replies.poll(_WORKER_START_TIMEOUT_S) and self._replies.recv() == "ready"
            except (OSError, EOFError):  # it exited: its traceback is on stderr
                ready = False
            if not ready:
                self._stop()
                logger.warning("the math-verify worker did not start (is math-verify installed?)")
                raise RuntimeError("math-verify worker did not start")
            self._ready = True

    def equivalent(self, gold: str, answer: str, timeout: float) -> bool:
        """Whether math-verify shows ``answer`` equal to ``gold`` within ``timeout`` seconds.

        Args:
          gold, answer: LaTeX answers without ``$`` delimiters.
          timeout: hard limit in seconds for this check (the worker's start-up is not counted).

        Returns:
          math-verify's verdict; False on a timeout, an error or a dead worker.

        Raises:
          RuntimeError: the worker process did not start (math-verify missing, say).
        """
        with self._lock:
            self._ensure_ready()
            try:
                self._requests.send((gold, answer))
                if self._replies.poll(timeout):
                    return bool(self._replies.recv())
                logger.warning("math-verify check timed out after %.1f s; restarting the worker", timeout)
            except (OSError, EOFError):
                logger.warning("math-verify worker died; restarting it", exc_info=True)
            self._stop()
            self._spawn()
            return False


SYMBOLIC_WORKER = _SymbolicWorker()
