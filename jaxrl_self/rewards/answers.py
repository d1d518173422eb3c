"""Answer extraction from completion text (``docs/math_answers.md``).

Order: the last ``\\boxed{..}`` / ``\\fbox{..}`` (brace matched; ``\\boxed 5`` takes the next token),
then the last ``<answer>...</answer>``, then GSM8K ``#### x``, then "the answer is X", then (only
when asked) the last number in the text. Nothing found gives ``None``, which is always incorrect.
"""
from __future__ import annotations

import re

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_TOKEN = re.compile(r"[^\s$]+")
_GSM8K_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(r"answer is\b[ \t]*:?[ \t]*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _matching_braces(text: str) -> dict[int, int]:
    """For every balanced ``{`` in ``text``: its index -> the index just past its matching ``}``.

    One pass with a stack, so a completion full of unclosed braces costs O(len(text)).
    """
    matches, open_indices = {}, []
    for index, char in enumerate(text):
        if char == "{":
            open_indices.append(index)
        elif char == "}" and open_indices:
            matches[open_indices.pop()] = index + 1
    return matches


def extract_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{..}``/``\\fbox{..}`` (or ``\\boxed 5``), or None.

    Only the last box counts (``docs/math_answers.md``); a box nested in an earlier one is skipped,
    and a box whose ``{`` is never closed is ignored.
    """
    last_content = None
    scan_from = 0
    braces: dict[int, int] | None = None  # computed at the first box with a brace
    for match in _BOX_COMMAND.finditer(text):
        if match.start() < scan_from:  # nested inside the previous box
            continue
        position = match.end()
        while position < len(text) and text[position] in " \t":
            position += 1
        if position < len(text) and text[position] == "{":
            braces = _matching_braces(text) if braces is None else braces
            end = braces.get(position)
            if end is None:
                continue
            last_content, scan_from = text[position + 1:end - 1].strip(), end
        elif position > match.end():  # "\boxed 5": the next whitespace/`$`-delimited token
            token = _BARE_TOKEN.match(text, position)
            if token is not None:
                last_content, scan_from = token.group(0), token.end()
    return last_content


def extract_tagged(text: str, tag: str = "answer") -> str | None:
    """Content of the last ``<tag>`` that has a ``</tag>`` after it, up to the next ``</tag>``.

    This is the same rule as ``token_rewards.answer_span``. The content is stripped of
    surrounding whitespace. Returns None when no such span exists.
    """
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    last_close = text.rfind(close_tag)
    if last_close < 0:
        return None
    start = text.rfind(open_tag, 0, last_close)
    if start < 0:
        return None
    content_start = start + len(open_tag)
    content_end = text.find(close_tag, content_start)
    return text[content_start:content_end].strip()


def _last_match_group(pattern: re.Pattern, text: str) -> str | None:
    matches = list(pattern.finditer(text))
    return matches[-1].group(1) if matches else None


def _answer_is(text: str) -> str | None:
    rest = _last_match_group(_ANSWER_IS, text)
    if rest is None:
        return None
    sentence = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0].strip()
    return sentence or None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (regex ``-?\\d[\\d,]*(\\.\\d+)?``) with commas removed, or None."""
    matches = _NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None


def extract_answer(text: str, *, fallback_last_number: bool = False) -> str | None:
    """Extract the final answer string from a completion (order in ``docs/math_answers.md``).

    Args:
      text: the decoded completion.
      fallback_last_number: when nothing else matches, return the last number in the text.

    Returns:
      The answer text (not yet normalised), or None when nothing was found.
    """
    for extractor in (extract_boxed, extract_tagged):
        answer = extractor(text)
        if answer is not None:
            return answer
    gsm8k = _last_match_group(_GSM8K_ANSWER, text)
    if gsm8k is not None and gsm8k.strip():
        return gsm8k.strip()
    answer = _answer_is(text)
    if answer is not None:
        return answer
    return extract_last_number(text) if fallback_last_number else None


def parse_int(s: str | None) -> int | None:
    """Parse an exact integer such as ``"-1,234"``; commas removed. Anything else gives None."""
    if s is None:
        return None
    candidate = s.strip().replace(",", "")
    return int(candidate) if _INTEGER.fullmatch(candidate) else None
