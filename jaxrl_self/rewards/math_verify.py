"""MATH-style answer normalisation and equivalence (ALGORITHMS.md 4.3).

``answers_equivalent`` tries, in order: equal normalised strings; equal numbers (integers,
decimals, ``\\frac{a}{b}``, ``a/b``; relative tolerance 1e-6); equal tuples/intervals element by
element; and finally a symbolic check with sympy. ``sympy.parsing.latex`` needs antlr 4.11 or
lark, so instead a small recursive-descent parser (``latex_parser``) turns the LaTeX into a tree
of whitelisted nodes (numbers, letters, + - * / ^, \\frac, \\sqrt, a few functions and
constants), and a long-lived worker process (``symbolic``) builds sympy objects from that tree and
checks ``simplify(a - b) == 0`` under a hard timeout. Model text is never passed to ``eval``.
"""
from __future__ import annotations

import logging
import re
from fractions import Fraction

from jaxrl_self.rewards.answers import extract_answer
from jaxrl_self.rewards.latex_parser import parse_latex_expression
from jaxrl_self.rewards.symbolic import SYMBOLIC_WORKER

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
    return SYMBOLIC_WORKER.equal(tree_a, tree_b, timeout)


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
