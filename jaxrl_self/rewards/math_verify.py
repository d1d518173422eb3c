"""MATH-style answer normalisation and equivalence (ALGORITHMS.md 4.3).

``answers_equivalent`` tries, in order: equal normalised strings; equal numbers (integers,
decimals, ``\\frac{a}{b}``, ``a/b``; relative tolerance 1e-6); equal tuples/intervals element by
element; and finally a symbolic check with sympy. ``sympy.parsing.latex`` needs antlr 4.11 or
lark, so instead a small recursive-descent parser here turns the LaTeX into a tree of
whitelisted nodes (numbers, letters, + - * / ^, \\frac, \\sqrt, a few functions and constants),
and a long-lived worker process builds sympy objects from that tree and checks
``simplify(a - b) == 0`` under a hard timeout. Model text is never passed to ``eval``.
"""
from __future__ import annotations

import logging
import multiprocessing.connection
import os
import re
import resource
import subprocess
import sys
import threading
from fractions import Fraction

from jaxrl_self.rewards.answers import extract_answer

logger = logging.getLogger(__name__)

_WRAPPER_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{")
_DROPPED_TOKENS = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\$", "$",
                   "^{\\circ}", "^\\circ", "\\%", "%")
_UNIT_WORDS = ("units", "unit", "degrees", "degree", "cm", "centimeters", "centimeter", "meters",
               "meter", "km", "kilometers", "inches", "inch", "feet", "foot", "ft", "dollars",
               "dollar", "cents", "cent", "hours", "hour", "minutes", "minute", "seconds",
               "second", "mph", "square", "sq", "cubic", "pounds", "lbs", "kg", "grams", "days",
               "day", "years", "year", "miles", "mile", "percent")
# A unit written as text after a number or fraction: "5 \\text{ apples}", "6\\,\\mathrm{m}".
_TRAILING_TEXT_UNIT = re.compile(r"(?<=[\d}])(?:\s|\\[ ,;:!])*\\(?:text|textrm|mathrm|mbox)\s*\{\s*[A-Za-z][A-Za-z .]*\}\s*$")
_TRAILING_UNITS = re.compile(r"(?:\s+(?:{})\b\.?)+\s*$".format("|".join(_UNIT_WORDS)))
_SINGLE_VARIABLE_LHS = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)\s*=([^=]*)")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_MAX_SYMBOLIC_CHARS = 400
_MAX_ANSWER_CHARS = 2000  # longer answers are only compared as stripped strings
_RELATIVE_TOLERANCE = Fraction(1, 10**6)


def _unwrap_text_commands(s: str) -> str:
    while (match := _WRAPPER_COMMAND.search(s)) is not None:
        depth, index = 1, match.end()
        while index < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[index], 0)
            index += 1
        if depth:
            return s
        s = s[:match.start()] + s[match.end():index - 1] + s[index:]
    return s


def normalize_answer(s: str) -> str:
    """MATH-style normalisation of an answer string (ALGORITHMS.md 4.3).

    Strips whitespace and ``$``; drops ``\\left``, ``\\right``, spacing commands, degree signs and
    percent signs; drops a ``\\text{..}`` unit after a number, unwraps other
    ``\\text{..}``/``\\mathrm{..}`` and removes trailing unit words;
    ``\\dfrac``/``\\tfrac`` → ``\\frac``; ``\\frac12`` → ``\\frac{1}{2}``; ``.5`` → ``0.5``;
    ``x = 5`` → ``5``; ``1,000`` → ``1000``; removes a trailing ``.`` and all spaces.
    """
    s = _unwrap_text_commands(_TRAILING_TEXT_UNIT.sub("", s.strip()))
    for token in _DROPPED_TOKENS:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = " ".join(s.split()).rstrip(".")
    without_units = _TRAILING_UNITS.sub("", s)
    s = without_units.strip().rstrip(".") if without_units.strip() else s
    if (lhs_match := _SINGLE_VARIABLE_LHS.fullmatch(s)) is not None and lhs_match.group(1).strip():
        s = lhs_match.group(1)
    s = re.sub(r"\\frac\s*(\d|[A-Za-z])\s*(\d|[A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d|[A-Za-z])\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d|[A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d|[A-Za-z])", r"\\sqrt{\1}", s)
    s = s.replace(" ", "").rstrip(".")
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    return re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)


def _parse_number(s: str) -> Fraction | None:
    """Exact value of a normalised integer, decimal, ``\\frac{a}{b}`` or ``a/b``; else None."""
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    sign, body = (-1, s[1:]) if s.startswith("-") else (1, s)
    parts = (re.fullmatch(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", body)
             or re.fullmatch(r"([^/]+)/([^/]+)", body))
    if parts is None or not all(_DECIMAL.fullmatch(part) for part in parts.groups()):
        return None
    numerator, denominator = (Fraction(part) for part in parts.groups())
    if denominator == 0:
        return None
    return sign * numerator / denominator


def _split_top_level(s: str) -> list[str]:
    """Split on commas that are not inside brackets or braces."""
    parts, depth, current = [], 0, []
    for char in s:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _sequence_elements(s: str) -> tuple[str, list[str]] | None:
    """``(kind, elements)`` for tuples/intervals like ``(1,2]`` or bare lists ``1,2``; else None."""
    kind = ""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        kind, s = s[0] + s[-1], s[1:-1]
    elements = _split_top_level(s)
    return (kind, elements) if len(elements) >= 2 else None


def _numbers_close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= _RELATIVE_TOLERANCE * max(abs(a), abs(b))


def _equivalent_normalized(a: str, b: str, timeout: float) -> bool:
    if not a or not b:
        return False
    if a == b:
        return True
    number_a, number_b = _parse_number(a), _parse_number(b)
    if number_a is not None and number_b is not None:
        return _numbers_close(number_a, number_b)
    sequence_a, sequence_b = _sequence_elements(a), _sequence_elements(b)
    if sequence_a is not None or sequence_b is not None:
        if sequence_a is None or sequence_b is None:
            return False
        (kind_a, elements_a), (kind_b, elements_b) = sequence_a, sequence_b
        return (kind_a == kind_b and len(elements_a) == len(elements_b)
                and all(_equivalent_normalized(x, y, timeout) for x, y in zip(elements_a, elements_b)))
    if max(len(a), len(b)) > _MAX_SYMBOLIC_CHARS:
        return False
    tree_a, tree_b = parse_latex_expression(a), parse_latex_expression(b)
    if tree_a is None or tree_b is None:
        return False
    return _SYMBOLIC_WORKER.equal(tree_a, tree_b, timeout)


def answers_equivalent(a: str | None, b: str | None, timeout: float = 2.0) -> bool:
    """Whether two answer strings denote the same value (ALGORITHMS.md 4.3).

    Args:
      a, b: raw answer strings (normalised here); None is never equivalent to anything.
      timeout: hard limit in seconds for each symbolic (sympy) check.

    Returns:
      True if equal after normalisation, numerically equal (rel tol 1e-6), elementwise
      equivalent tuples/intervals, or symbolically equal. Any exception gives False. Answers
      longer than 2000 characters are only compared as stripped strings.
    """
    if a is None or b is None:
        return False
    if max(len(a), len(b)) > _MAX_ANSWER_CHARS:
        return a.strip() == b.strip()
    try:
        return _equivalent_normalized(normalize_answer(a), normalize_answer(b), timeout)
    except Exception:  # model text must never crash a reward
        logger.debug("answers_equivalent failed on %r vs %r", a, b, exc_info=True)
        return False


def math_score(completion: str, reference: str, *, format_score: float = 0.0) -> dict[str, float]:
    """Verifier for math answers: ``(completion, reference) -> {"reward", "correct", "format_ok"}``.

    ``format_ok`` is 1 when an answer could be extracted (boxed, tagged, ``####``, "the answer
    is"); ``reward`` is 1 if correct, else ``format_score`` if ``format_ok``, else 0.
    """
    answer = extract_answer(completion)
    correct = answers_equivalent(answer, reference)
    format_ok = answer is not None
    reward = 1.0 if correct else (format_score if format_ok else 0.0)
    return {"reward": reward, "correct": float(correct), "format_ok": float(format_ok)}


# --------------------------------------------------------------------------- LaTeX parser
# Tree nodes are tuples: ("num", "1.5"), ("sym", "x"), ("const", "pi"|"oo"), ("neg", a),
# ("add"|"sub"|"mul"|"div"|"pow", a, b), ("func", name, a), ("root", radicand, index).

_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[A-Za-z]+|[A-Za-z]|[-+*/^_(){}\[\]|])")
_FUNCTIONS = {"\\sin": "sin", "\\cos": "cos", "\\tan": "tan", "\\ln": "log", "\\log": "log",
              "\\exp": "exp", "\\sec": "sec", "\\csc": "csc", "\\cot": "cot"}
_CONSTANTS = {"\\pi": "pi", "\\infty": "oo"}
_GREEK = {"\\" + name for name in (
    "alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "phi", "psi", "omega",
    "sigma", "tau", "rho", "eta", "kappa", "nu", "xi", "zeta", "chi")}
_MULTIPLY = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}


def _tokenize(s: str) -> list[str] | None:
    tokens, position = [], 0
    while position < len(s):
        match = _TOKEN.match(s, position)
        if match is None:
            return None if s[position:].strip() else tokens
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _LatexParser:
    """Recursive descent over the token list; raises ValueError on anything unsupported."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.position = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected!r}, got {token!r}")
        self.position += 1
        return token

    def parse(self) -> tuple:
        tree = self.expression()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return tree

    def expression(self) -> tuple:
        tree = self.term()
        while self.peek() in ("+", "-"):
            tree = ("add" if self.take() == "+" else "sub", tree, self.term())
        return tree

    def term(self) -> tuple:
        tree = self.unary()
        while True:
            token = self.peek()
            if token in _MULTIPLY or token in _DIVIDE:
                self.take()
                tree = ("mul" if token in _MULTIPLY else "div", tree, self.unary())
            elif token is not None and self.starts_atom(token):
                tree = ("mul", tree, self.power())
            else:
                return tree

    def starts_atom(self, token: str) -> bool:
        return (token[0].isdigit() or token[0] == "." or token.isalpha() or token in "({|"
                or token in ("\\frac", "\\sqrt") or token in _FUNCTIONS or token in _CONSTANTS
                or token in _GREEK)

    def unary(self) -> tuple:
        if self.peek() in ("+", "-"):
            sign = self.take()
            operand = self.unary()
            return ("neg", operand) if sign == "-" else operand
        return self.power()

    def power(self) -> tuple:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return ("pow", base, self.argument())
        return base

    def argument(self) -> tuple:
        """A LaTeX macro argument: ``{expr}`` or a single token (one digit of a number)."""
        token = self.peek()
        if token == "{":
            return self.atom()
        if token is not None and token[0].isdigit() and len(token) > 1:
            self.tokens[self.position] = token[1:]
            return ("num", token[0])
        if token is not None and token.isalpha() and len(token) == 1:
            self.take()
            return ("sym", token)
        return self.atom()

    def subscript_name(self, name: str) -> str:
        if self.peek() != "_":
            return name
        self.take()
        if self.peek() == "{":
            self.take()
            parts = []
            while self.peek() not in ("}", None):
                parts.append(self.take())
            self.take("}")
        else:
            parts = [self.take()]
        if not all(p.isalnum() for p in parts):
            raise ValueError("unsupported subscript")
        return f"{name}_{''.join(parts)}"

    def atom(self) -> tuple:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return ("num", token)
        if token.isalpha() and len(token) == 1:
            return ("sym", self.subscript_name(token))
        if token in _GREEK:
            return ("sym", self.subscript_name(token[1:]))
        if token in _CONSTANTS:
            return ("const", _CONSTANTS[token])
        if token in ("(", "{", "|"):
            inner = self.expression()
            self.take({"(": ")", "{": "}", "|": "|"}[token])
            return ("func", "Abs", inner) if token == "|" else inner
        if token == "\\frac":
            return ("div", self.argument(), self.argument())
        if token == "\\sqrt":
            index = ("num", "2")
            if self.peek() == "[":
                self.take()
                index = self.expression()
                self.take("]")
            return ("root", self.argument(), index)
        if token in _FUNCTIONS:
            operand = self.atom() if self.peek() in ("(", "{") else self.unary()
            return ("func", _FUNCTIONS[token], operand)
        raise ValueError(f"unsupported token {token!r}")


def parse_latex_expression(s: str) -> tuple | None:
    """Parse a normalised LaTeX/plain math expression into a whitelisted tree, or None."""
    tokens = _tokenize(s)
    if not tokens:
        return None
    try:
        return _LatexParser(tokens).parse()
    except (ValueError, RecursionError):
        return None


# --------------------------------------------------------------------------- sympy worker
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
                   "from jaxrl_self.rewards import math_verify; math_verify._symbolic_worker_main()"]
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


_SYMBOLIC_WORKER = _SymbolicWorker()
