"""Math answer equivalence at the MATH / GSM8K / AIME / AMC conventions (``docs/math_answers.md``).

``answers_equivalent(answer, gold)`` runs two passes over the extracted answer and the gold:

1. An exact pass in this process (~0.05 ms) that only decides what it can decide exactly: text
   answers (compared as normalised strings, never as products of letters), answers equal after
   MATH-style normalisation, and pairs of plain numbers (integers and fractions compared exactly;
   a decimal only within one unit of its last digit, and only when it has at least 6 decimals;
   percent signs read both ways).
2. Everything else goes to Hugging Face's ``math-verify`` in a separate worker process with a hard
   timeout (``symbolic.SYMBOLIC_WORKER``). The answer is extracted here first (``answers``): handing
   math-verify a whole completion merges two ``\\boxed{}`` into a set and misses ``#### \\$1,250``.

Model text is never passed to ``eval``.
"""
from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import NamedTuple

from jaxrl_self.rewards.answers import extract_answer
from jaxrl_self.rewards.symbolic import SYMBOLIC_WORKER

logger = logging.getLogger(__name__)

_MAX_ANSWER_CHARS = 1000  # longer answers are only compared as stripped strings
_MIN_ROUNDED_DECIMALS = 6  # a decimal this long may stand for a fraction within its last digit

_TEXT_COMMAND = re.compile(
    r"\\(?:text|textbf|textrm|textit|textsf|mathrm|mathbf|mathit|mbox|operatorname)\s*\{")
_TEXT_ANSWER = re.compile(r"\\(?:text|textbf|textrm|textit|textsf|mathrm|mbox)\s*\{([^{}\\\d]*)\}")
_WORDS = re.compile(r"(?=.*[A-Za-z]{3})[A-Za-z]+(?:\s+[A-Za-z]+)*")
_SHORT_FRACTION = (
    (re.compile(r"\\frac\s*(\d|[A-Za-z])\s*(\d|[A-Za-z])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\d|[A-Za-z])\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d|[A-Za-z])"), r"\\frac{\1}{\2}"),
)
_REPEATING_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
_MIXED_NUMBER = re.compile(r"(?<![\w.^_}\\])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_SPACING_OR_ROW_BREAK = re.compile(r"\\\\|\\[ ,;:!]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b")
_PERCENT = re.compile(r"(?:\\%|%|\\text\s*\{\s*percent\s*\}|\s+percent)\s*\.?\s*$")
_SQUARED = r"(?:\s*\^\s*(?:\d|\{\d\}))?"
# A unit written as text after a number or fraction: "5 \\text{ apples}", "24\\text{ cm}^2".
_TRAILING_TEXT_UNIT = re.compile(
    r"(?<=[\d}])(?:\s|\\[ ,;:!])*\\(?:text|textrm|mathrm|mbox)\s*\{\s*[A-Za-z][A-Za-z .]*\}" + _SQUARED + r"\s*$")
_UNIT_WORDS = ("units", "unit", "degrees", "degree", "cm", "centimeters", "centimeter", "meters",
               "meter", "km", "kilometers", "inches", "inch", "feet", "foot", "ft", "dollars",
               "dollar", "cents", "cent", "hours", "hour", "minutes", "minute", "seconds",
               "second", "mph", "square", "sq", "cubic", "pounds", "lbs", "kg", "grams", "days",
               "day", "years", "year", "miles", "mile", "percent")
_TRAILING_UNITS = re.compile(r"(?:\s+(?:{})\b\.?{})+\s*$".format("|".join(_UNIT_WORDS), _SQUARED))
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_VARIABLE = re.compile(r"[A-Za-z]")
_SINGLE_VARIABLE_LHS = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)\s*=([^=]*)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_INTEGER_FRACTION = re.compile(r"([+-]?)(?:\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?\d+)/([+-]?\d+))")


class _Number(NamedTuple):
    """An exact value; ``decimals`` is the number of digits after the point, None for integers and
    fractions."""

    value: Fraction
    decimals: int | None


def _unwrap_text_commands(s: str) -> str:
    """``\\text{abc}`` (and ``\\mathrm``, ``\\textbf``, ...) → ``abc``; unbalanced input is left as is."""
    while (match := _TEXT_COMMAND.search(s)) is not None:
        depth, index = 1, match.end()
        while index < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[index], 0)
            index += 1
        if depth:
            return s
        s = s[:match.start()] + s[match.end():index - 1] + s[index:]
    return s


def _repeating_decimal_as_fraction(match: re.Match) -> str:
    whole, fixed, repeating = match.group(1) or "0", match.group(2), match.group(3)
    scale = 10 ** len(fixed)
    value = (Fraction(int(whole + fixed), scale)
             + Fraction(int(repeating), scale * (10 ** len(repeating) - 1)))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _mixed_number_as_fraction(match: re.Match) -> str:
    whole, numerator, denominator = (int(group) for group in match.groups())
    if denominator == 0:
        return match.group(0)
    return f"\\frac{{{whole * denominator + numerator}}}{{{denominator}}}"


def clean_answer(s: str) -> str:
    """The rewrites both passes see (this string is what math-verify gets).

    Strips whitespace and ``$`` (also ``\\$``); Unicode minus → ``-``; ``{,}`` → ``,``;
    ``\\dfrac``/``\\tfrac`` → ``\\frac``; ``\\frac12`` → ``\\frac{1}{2}``; repeating decimals
    ``0.1\\overline{6}`` → ``\\frac{1}{6}``; mixed numbers ``2\\frac14`` → ``\\frac{9}{4}``.
    """
    s = s.strip().replace("\\$", "").replace("$", "").replace("\u2212", "-").replace("{,}", ",")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for pattern, replacement in _SHORT_FRACTION:
        s = pattern.sub(replacement, s)
    s = _REPEATING_DECIMAL.sub(_repeating_decimal_as_fraction, s)
    return _MIXED_NUMBER.sub(_mixed_number_as_fraction, s).strip()


def normalize_answer(s: str) -> str:
    """MATH-style string normal form of an answer (``docs/math_answers.md``).

    After ``clean_answer``: drops ``\\left``/``\\right``/``\\displaystyle``, spacing commands (a
    matrix row break ``\\\\`` is kept), degree signs and percent signs; drops a ``\\text{..}`` unit
    after a number (also ``^2``), unwraps other ``\\text{..}``/``\\mathrm{..}`` and removes
    trailing unit words; ``x = 5`` → ``5``; ``\\sqrt2`` → ``\\sqrt{2}``; ``1,000`` → ``1000`` (only
    without a space after the comma); removes a trailing ``.`` and all spaces; ``.5`` → ``0.5``.
    """
    s = _TRAILING_TEXT_UNIT.sub("", clean_answer(s))
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = _SPACING_OR_ROW_BREAK.sub(lambda match: "\\\\ " if match.group(0) == "\\\\" else " ", s)
    s = _PERCENT.sub("", _DEGREES.sub("", s))
    s = " ".join(_unwrap_text_commands(s).split()).rstrip(".")
    without_units = _TRAILING_UNITS.sub("", s).strip().rstrip(".")
    if without_units and _VARIABLE.search(_LATEX_COMMAND.sub("", without_units)) is None:
        s = without_units  # "5 feet" -> "5", but "x + 2 feet" keeps its words
    if (lhs_match := _SINGLE_VARIABLE_LHS.fullmatch(s)) is not None and lhs_match.group(1).strip():
        s = lhs_match.group(1).strip()
    s = re.sub(r"\\sqrt\s*(\d|[A-Za-z])", r"\\sqrt{\1}", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = s.replace(" ", "").rstrip(".")
    return re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)


def _text_key(s: str) -> str:
    """A text answer as lowercase words: ``\\text{(C)}`` → ``c``, ``\\text{ No }`` → ``no``."""
    words = _unwrap_text_commands(s).strip().rstrip(".").strip()
    if (parenthesised := re.fullmatch(r"\((.*)\)", words)) is not None:
        words = parenthesised.group(1)
    return " ".join(words.split()).lower()


def _is_text(s: str) -> bool:
    """Whether a cleaned answer is text: a ``\\text{..}`` around letters, or plain words with a run of
    at least 3 letters (``east``, ``no solution``); ``xy`` stays a product."""
    s = s.strip().rstrip(".").strip()
    text = _TEXT_ANSWER.fullmatch(s)
    return (text is not None and re.search(r"[A-Za-z]", text.group(1)) is not None
            or _WORDS.fullmatch(s) is not None)


def _parse_number(s: str) -> _Number | None:
    """A normalised integer, decimal, ``\\frac{a}{b}`` or ``a/b`` (integer a, b) as a `_Number`."""
    if (decimal := _DECIMAL.fullmatch(s)) is not None and (decimal.group(2) or decimal.group(3)):
        sign, whole, fraction_digits = decimal.groups()
        value = Fraction(f"{whole or 0}.{fraction_digits or 0}")
        return _Number(-value if sign == "-" else value,
                       None if fraction_digits is None else len(fraction_digits))
    if (fraction := _INTEGER_FRACTION.fullmatch(s)) is not None:
        sign, *parts = fraction.groups()
        numerator, denominator = (int(part) for part in parts if part is not None)
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
        return _Number(-value if sign == "-" else value, None)
    return None


def _numbers_match(x: _Number, y: _Number) -> bool:
    """Exact equality, except that a decimal with at least 6 digits after the point matches an
    integer or fraction within one unit of its last digit (``0.333333`` = 1/3; ``0.33`` is not)."""
    if x.value == y.value:
        return True
    decimals = [d for d in (x.decimals, y.decimals) if d is not None]
    if len(decimals) != 1 or decimals[0] < _MIN_ROUNDED_DECIMALS:
        return False
    return abs(x.value - y.value) < Fraction(1, 10 ** decimals[0])


def _percent_readings(number: _Number, is_percent: bool) -> list[_Number]:
    """``20\\%`` reads as 20 (the MATH convention of dropping ``%``) and as 0.2 (its value)."""
    if not is_percent:
        return [number]
    hundredth = None if number.decimals is None else number.decimals + 2
    return [number, _Number(number.value / 100, hundredth)]


def _exact_decision(answer: str, gold: str) -> bool | None:
    """The exact pass over two cleaned answers: True/False when it can decide, else None."""
    if _is_text(answer) or _is_text(gold):
        return _text_key(answer) == _text_key(gold)
    normal_answer, normal_gold = normalize_answer(answer), normalize_answer(gold)
    if not normal_answer or not normal_gold:
        return False
    if normal_answer == normal_gold:
        return True
    number_answer, number_gold = _parse_number(normal_answer), _parse_number(normal_gold)
    if number_answer is None or number_gold is None:
        return None
    percent_answer, percent_gold = bool(_PERCENT.search(answer)), bool(_PERCENT.search(gold))
    if percent_answer and percent_gold:
        return _numbers_match(number_answer, number_gold)
    return any(_numbers_match(x, y) for x in _percent_readings(number_answer, percent_answer)
               for y in _percent_readings(number_gold, percent_gold))


def answers_equivalent(answer: str | None, gold: str | None, timeout: float = 2.0) -> bool:
    """Whether an extracted answer denotes the same value as the gold (``docs/math_answers.md``).

    Args:
      answer: the extracted answer string (raw: cleaned and normalised here); None is never
        equivalent to anything.
      gold: the reference answer string.
      timeout: hard limit in seconds for the math-verify check, when the exact pass cannot decide.

    Returns:
      The exact pass's verdict when it decides, else math-verify's (False on its timeout). Any
      exception gives False. Answers longer than 1000 characters are only compared as stripped
      strings.
    """
    if answer is None or gold is None:
        return False
    if max(len(answer), len(gold)) > _MAX_ANSWER_CHARS:
        return answer.strip() == gold.strip()
    try:
        answer, gold = clean_answer(answer), clean_answer(gold)
        decision = _exact_decision(answer, gold)
        if decision is not None:
            return decision
        return SYMBOLIC_WORKER.equivalent(gold, answer, timeout)
    except Exception:  # model text must never crash a reward
        logger.debug("answers_equivalent failed on %r vs %r", answer, gold, exc_info=True)
        return False


def math_score(completion: str, reference: str, *, format_score: float = 0.0) -> dict[str, float]:
    """Verifier for math answers: ``(completion, reference) -> {"reward", "correct", "format_ok"}``.

    ``format_ok`` is 1 when an answer could be extracted (the last ``\\boxed{}``, the last
    ``<answer>`` tag, ``####``, "the answer is"); ``reward`` is 1 if ``answers_equivalent``, else
    ``format_score`` if ``format_ok``, else 0.
    """
    answer = extract_answer(completion)
    correct = answers_equivalent(answer, reference)
    format_ok = answer is not None
    reward = 1.0 if correct else (format_score if format_ok else 0.0)
    return {"reward": reward, "correct": float(correct), "format_ok": float(format_ok)}
