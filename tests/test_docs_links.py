"""The documentation stands alone: its links resolve, and nothing points outside the repository.

(a) every relative Markdown link in README.md and docs/**/*.md names an existing file of the
    repository, and its `#anchor`, if any, names a heading of that file (GitHub's anchors:
    lowercase, punctuation dropped, spaces to hyphens, "-1", "-2" ... for repeated headings);
(b) every `docs/<name>.md` or `docs/<name>.md#anchor` in the code (jaxrl_self/, configs/, tests/,
    benchmarks/) names an existing file and heading;
(c) no file refers to the developers' notes kept outside the repository.
README.md is checked by tests of its own, so a failure there is told apart from one in docs/.
Every failure names the file, the line and the reference.
"""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("jaxrl_self", "configs", "tests", "benchmarks")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".json", ".yaml", ".yml"}

# Assembled from pieces so that this file does not match itself.
_MD = ".md"
FORBIDDEN = (
    re.escape(".." + "/shared"),
    r"(?<![\w.])" + re.escape("/" + "work/"),  # an absolute /work/ path (not e.g. /tmp/work/)
    *(re.escape(name + _MD) for name in ("ALGORITHMS", "ARCHITECTURE", "METHODS-NEXT", "STACK-NOTES")),
)
FORBIDDEN_RE = re.compile("|".join(FORBIDDEN))

LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_REF_RE = re.compile(r"(?<![\w/.])(docs/[\w./-]+?\.md)(#[\w-]+)?")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
HEADING_RE = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_lines(path: Path):
    """(line number, line) of `path` outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE_RE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    seen: dict[str, int] = {}
    result = set()
    for _, line in markdown_lines(path):
        match = HEADING_RE.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return frozenset(result)


def check_target(source: Path, number: int, reference: str, target: Path, anchor: str) -> list[str]:
    where = f"{source.relative_to(ROOT)}:{number}: {reference!r}"
    try:
        target.resolve().relative_to(ROOT)
    except ValueError:
        return [f"{where} points outside the repository"]
    if not target.exists():
        return [f"{where}: no such file {target.resolve().relative_to(ROOT)}"]
    if anchor:
        if target.suffix != ".md" or target.is_dir():
            return []
        if anchor not in anchors(target.resolve()):
            return [f"{where}: {target.resolve().relative_to(ROOT)} has no heading with anchor #{anchor}"]
    return []


def markdown_link_errors(path: Path) -> list[str]:
    errors = []
    for number, line in markdown_lines(path):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for match in LINK_RE.finditer(line):
            reference = match.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", reference):  # http:, https:, mailto: ...
                continue
            file_part, _, anchor = reference.partition("#")
            target = path if not file_part else path.parent / file_part
            errors += check_target(path, number, reference, target, anchor)
    return errors


def code_files():
    for directory in CODE_DIRS:
        yield from sorted(p for p in (ROOT / directory).rglob("*.py") if "__pycache__" not in p.parts)


def text_files():
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs").rglob("*.md"))
    for directory in CODE_DIRS:
        yield from sorted(p for p in (ROOT / directory).rglob("*")
                          if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)


def forbidden_reference_errors(paths) -> list[str]:
    errors = []
    for path in paths:
        if path.resolve() == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in FORBIDDEN_RE.finditer(line):
                errors.append(f"{path.relative_to(ROOT)}:{number}: refers to {match.group(0)!r} outside the repository")
    return errors


def test_docs_markdown_links_resolve():
    errors = [e for path in sorted((ROOT / "docs").rglob("*.md")) for e in markdown_link_errors(path)]
    assert not errors, "\n".join(errors)


def test_readme_markdown_links_resolve():
    errors = markdown_link_errors(ROOT / "README.md")
    assert not errors, "\n".join(errors)


def test_docs_references_in_code_resolve():
    errors, count = [], 0
    for path in code_files():
        if path.resolve() == Path(__file__).resolve():  # its own examples name made-up pages
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CODE_REF_RE.finditer(line):
                count += 1
                anchor = (match.group(2) or "#")[1:]
                errors += check_target(path, number, match.group(0), ROOT / match.group(1), anchor)
    assert count > 0, "no docs/ reference found in the code: the pattern is broken"
    assert not errors, "\n".join(errors)


def test_no_references_outside_the_repository():
    errors = forbidden_reference_errors(p for p in text_files() if p.name != "README.md" or p.parent != ROOT)
    assert not errors, "\n".join(errors)


def test_readme_has_no_references_outside_the_repository():
    errors = forbidden_reference_errors([ROOT / "README.md"])
    assert not errors, "\n".join(errors)


def test_the_checks_catch_bad_references(tmp_path, monkeypatch):
    """The checks themselves: a missing file, a missing heading and an outside reference are caught."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Title\n\n## Loss aggregation: modes (`token_mean`)\n\n## Title\n\n"
                    "[ok](#loss-aggregation-modes-token_mean) [ok](page.md#title-1) [web](https://x.org/a.md#b)\n"
                    "```\n[in a fence](missing.md)\n```\n"
                    "[gone](missing.md) [bad anchor](#nowhere) [up](../../outside.md)\n"
                    "see " + "ARCHITECTURE" + _MD + "\n")
    errors = markdown_link_errors(page)
    assert len(errors) == 3, errors
    assert all(e.startswith("docs/page.md:11:") for e in errors), errors
    assert "missing.md" in errors[0] and "#nowhere" in errors[1] and "outside" in errors[2]
    assert forbidden_reference_errors([page]) == [f"docs/page.md:12: refers to {'ARCHITECTURE' + _MD!r} outside the repository"]
    assert not FORBIDDEN_RE.search("/proc/1/root/tmp/work/secret") and FORBIDDEN_RE.search("see /" + "work/x")
