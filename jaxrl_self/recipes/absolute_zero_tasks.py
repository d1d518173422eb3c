"""Absolute Zero's tasks (docs/algorithms.md#absolute-zero-rewards-and-trr): programs, their validation and execution, buffers, prompts.

A program is a one-argument Python lambda over ints, e.g. `lambda x:x*3+1`. A task is a program
with inputs and the outputs the executor computed for them:

  deduction  (ded)  given program + input, say the output
  abduction  (abd)  given program + output, give an input that produces it
  induction  (ind)  given input/output pairs, write a program that reproduces them (and held-out pairs)

Model text is never evaluated in the trainer process: it is parsed with `ast` (a static check
for the lambda shape and forbidden names), and every execution happens in the code sandbox
(`rewards.code_sandbox.run_program`), one sandboxed process per batch of (program, input) items
with a per-item time limit and per-item error capture.

Prompts and completions for the tiny char-level model (`make_tokenizer`):

  proposer  "<propose><ded><prog>lambda x:x+1<in>3" -> "<prog>lambda x:x*2-1<in>4"   (abd alike)
            "<propose><ind><prog>lambda x:x+1<in>3" -> "<prog>lambda x:x*2-1"        (inputs drawn by the trainer)
  solver    "<solve><ded><prog>lambda x:x*2-1<in>4" -> "7"
            "<solve><abd><prog>lambda x:x*2-1<out>7" -> "4"
            "<solve><ind><in>1<out>1<in>2<out>3<in>5<out>9" -> "lambda x:x*2-1"

For a pretrained model's subword tokenizer (`method.few_shot`) the trainer ends each solver prompt
with the marker of its answer (`ANSWER_MARKERS`: "...<in>4<out>" -> "7"), so the tokens of the
prompt's last number and of the answer do not merge. The char model's prompts keep no marker: a
proposal ends like "...<in>4" too, and the marker taught it to write on past the proposal's end.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import NamedTuple, Optional, Sequence

import numpy as np

from jaxrl_self.models.tokenizer import CharTokenizer
from jaxrl_self.rewards.code_sandbox import SandboxLimits, run_program

KINDS = ("ded", "abd", "ind")
ROLES = ("propose", "solve")
ALPHABET = "0123456789lambdx:+-*/%() "
SPECIALS = ("<propose>", "<solve>", "<ded>", "<abd>", "<ind>", "<prog>", "<in>", "<out>")
ANSWER_MARKERS = {"ded": "<out>", "abd": "<in>", "ind": "<prog>"}  # what a solver's answer is, per kind
IDENTITY = "lambda x:x"
MAX_PROGRAM_CHARS = 40
MAX_ABS_VALUE = 9999  # outputs beyond this are rejected: the char model writes short numbers
INDUCTION_INPUTS, INDUCTION_VISIBLE = 5, 3  # pairs per induction task; the first 3 are shown to the solver
INPUT_RANGE = (0, 10)  # inputs the trainer draws for induction tasks and synthetic tasks, [low, high)

# Names a program may not mention: module names and builtins that reach outside the pure function.
FORBIDDEN_NAMES = frozenset({
    "__import__", "__builtins__", "eval", "exec", "compile", "open", "input", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "breakpoint", "exit", "quit", "help", "memoryview", "print",
    "os", "sys", "subprocess", "socket", "shutil", "random", "secrets", "time", "datetime", "pathlib", "importlib",
    "threading", "multiprocessing", "signal", "ctypes", "builtins", "io", "uuid",
})
# Operators whose cost is unbounded in one bytecode (9**9**9 cannot be interrupted by the per-item timer).
FORBIDDEN_OPERATORS = (ast.Pow, ast.LShift)

FORMAT_ERROR, INVALID, OK = "format_error", "invalid", "ok"

# Runs in the sandbox: reads [[source, argument], ...] from stdin, writes [[status, value], ...] to stdout.
_RUNNER = """\
import json, signal, sys
class _ItemTimeout(Exception):
    pass
def _on_alarm(signum, frame):
    raise _ItemTimeout()
signal.signal(signal.SIGALRM, _on_alarm)
request = json.loads(sys.stdin.read())
results = []
for source, argument in request["items"]:
    try:
        signal.setitimer(signal.ITIMER_REAL, request["item_timeout_s"])
        try:
            value = eval(source, {"__builtins__": __builtins__})(argument)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        ok = type(value) is int and abs(value) <= request["max_abs_value"]
        results.append(["ok", value] if ok else ["bad_output", None])
    except _ItemTimeout:
        results.append(["timeout", None])
    except MemoryError:
        results.append(["memory", None])
    except BaseException:
        results.append(["runtime_error", None])
sys.stdout.write(json.dumps(results))
"""


def make_tokenizer() -> CharTokenizer:
    return CharTokenizer(ALPHABET, SPECIALS)


@dataclasses.dataclass(frozen=True)
class Task:
    """A validated triple: `kind` in KINDS, the program source, its inputs and outputs (equal length)."""

    kind: str
    program: str
    inputs: tuple
    outputs: tuple


class ExecResult(NamedTuple):
    """One executed (program, input) item: status "ok" (value is an int within MAX_ABS_VALUE) or a
    failure reason ("bad_output", "timeout", "memory", "runtime_error", or the sandbox's reason)."""

    status: str
    value: Optional[int]


def check_program(source: str) -> str:
    """Static check of a program text, without running it.

    Returns FORMAT_ERROR (not a one-argument lambda expression, or too long), INVALID (mentions a
    forbidden name, a dunder attribute or an unbounded-cost operator), or OK.
    """
    if len(source) > MAX_PROGRAM_CHARS:
        return FORMAT_ERROR
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return FORMAT_ERROR
    fn = tree.body
    args = fn.args if isinstance(fn, ast.Lambda) else None
    if args is None or len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
        return FORMAT_ERROR
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return INVALID
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            return INVALID
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return INVALID
        if isinstance(node, ast.BinOp) and isinstance(node.op, FORBIDDEN_OPERATORS):
            return INVALID
    return OK


def execute(items: Sequence[tuple[str, int]], limits: SandboxLimits = SandboxLimits(), item_timeout_s: float = 0.5) -> list[ExecResult]:
    """Runs `program(input)` for every `(program source, input)` item in one sandboxed process.

    Programs must have passed `check_program`. When the whole process fails (a timeout of the
    batch, memory), the items are run again one process each, so one bad item cannot fail the others.
    Returns one `ExecResult` per item, in order.
    """
    if not items:
        return []
    request = {"items": [[source, int(argument)] for source, argument in items], "item_timeout_s": item_timeout_s,
               "max_abs_value": MAX_ABS_VALUE}
    run = run_program(_RUNNER, json.dumps(request), limits)
    results = _parse_results(run.output, len(items)) if run.ok else None
    if results is not None:
        return results
    if len(items) == 1:
        return [ExecResult(run.reason if not run.ok else "runtime_error", None)]
    return [result for item in items for result in execute([item], limits, item_timeout_s)]


def _parse_results(output: str, count: int) -> Optional[list[ExecResult]]:
    try:
        rows = json.loads(output)
    except ValueError:
        return None
    if not isinstance(rows, list) or len(rows) != count:
        return None
    return [ExecResult(str(status), value if status == "ok" else None) for status, value in rows]


def validate_proposals(proposals: Sequence[tuple[str, tuple]], limits: SandboxLimits = SandboxLimits()) -> list[tuple[str, tuple]]:
    """Validates proposed (program, inputs) pairs: static check, then two sandboxed runs of every input.

    A proposal is OK when the program passes `check_program`, every run returns an int within
    MAX_ABS_VALUE (no crash, no timeout) and both runs agree (determinism; the two runs are separate
    processes, so per-process randomness such as string hashing shows up).
    Returns `(status, outputs)` per proposal: (OK, outputs) or (FORMAT_ERROR | INVALID, ()).
    """
    statuses = [check_program(program) for program, _ in proposals]
    items = [(program, x) for (program, inputs), status in zip(proposals, statuses) if status == OK for x in inputs]
    first, second = execute(items, limits), execute(items, limits)
    results, position = [], 0
    for (program, inputs), status in zip(proposals, statuses):
        if status != OK:
            results.append((status, ()))
            continue
        runs = list(zip(first[position : position + len(inputs)], second[position : position + len(inputs)]))
        position += len(inputs)
        if all(a.status == "ok" and a == b for a, b in runs):
            results.append((OK, tuple(a.value for a, _ in runs)))
        else:
            results.append((INVALID, ()))
    return results


# ---------------------------------------------------------------------------------------------- prompts

_INT = re.compile(r"\s*(-?\d{1,6})\s*")


def parse_int(text: str) -> Optional[int]:
    match = _INT.fullmatch(text)
    return int(match.group(1)) if match else None


def proposer_prompt(reference: Task) -> str:
    """The proposer's prompt for a new task of `reference.kind`, showing a reference task from the buffer
    (its program and first input, for every kind: the input also ends the reference program)."""
    return f"<propose><{reference.kind}><prog>{reference.program}<in>{reference.inputs[0]}"


def proposal_completion(task: Task) -> str:
    """What the proposer writes for `task` (the SFT target; inverse of `parse_proposal`)."""
    text = f"<prog>{task.program}"
    return text if task.kind == "ind" else f"{text}<in>{task.inputs[0]}"


def parse_proposal(kind: str, text: str) -> Optional[tuple[str, Optional[int]]]:
    """(program, input) from a proposer completion (input None for induction), or None on a format error."""
    if not text.startswith("<prog>"):
        return None
    body = text[len("<prog>"):]
    if kind == "ind":
        return (body, None) if "<" not in body else None
    program, sep, argument = body.partition("<in>")
    value = parse_int(argument) if sep else None
    if value is None or "<" in program:
        return None
    return program, value


def solver_prompt(task: Task) -> str:
    if task.kind == "ded":
        return f"<solve><ded><prog>{task.program}<in>{task.inputs[0]}"
    if task.kind == "abd":
        return f"<solve><abd><prog>{task.program}<out>{task.outputs[0]}"
    pairs = zip(task.inputs[:INDUCTION_VISIBLE], task.outputs[:INDUCTION_VISIBLE])
    return "<solve><ind>" + "".join(f"<in>{x}<out>{y}" for x, y in pairs)


def solver_answer(task: Task) -> str:
    """A correct answer to `task` (the SFT target)."""
    return {"ded": str(task.outputs[0]), "abd": str(task.inputs[0]), "ind": task.program}[task.kind]


def grade_answers(tasks: Sequence[Task], answers: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> list[str]:
    """Grades solver answers: "correct", "wrong" (well formed) or FORMAT_ERROR, one per (task, answer).

    ded: the answer is an int equal to the output. abd: an int whose output (run in the sandbox)
    equals the task's output. ind: a program (passing `check_program`) that reproduces all the
    task's pairs, held-out ones included. Executions of all answers go into one sandbox batch.
    """
    grades: list[Optional[str]] = []
    items, owners = [], []
    for index, (task, answer) in enumerate(zip(tasks, answers)):
        if task.kind == "ind":
            status = check_program(answer)
            if status == OK:
                items += [(answer, x) for x in task.inputs]
                owners += [index] * len(task.inputs)
            grades.append(None if status == OK else (FORMAT_ERROR if status == FORMAT_ERROR else "wrong"))
            continue
        value = parse_int(answer)
        if value is None:
            grades.append(FORMAT_ERROR)
        elif task.kind == "ded":
            grades.append("correct" if value == task.outputs[0] else "wrong")
        else:
            items.append((task.program, value))
            owners.append(index)
            grades.append(None)
    matches: dict[int, list[bool]] = {}
    for owner, (_, argument), result in zip(owners, items, execute(items, limits)):
        task = tasks[owner]
        expected = task.outputs[task.inputs.index(argument)] if task.kind == "ind" else task.outputs[0]
        matches.setdefault(owner, []).append(result.status == "ok" and result.value == expected)
    return [grade if grade is not None else ("correct" if all(matches[i]) else "wrong") for i, grade in enumerate(grades)]


# ---------------------------------------------------------------------------------------------- buffer


class TaskBuffer:
    """Valid tasks per kind, seeded with the identity program; the oldest are dropped past `max_size`.

    Tasks are deduplicated on (program, inputs). `to_json` / `from_json` round-trip the contents
    (saved in checkpoint meta, restored on resume).
    """

    def __init__(self, max_size: int, seed_inputs: Sequence[int] = tuple(range(1, 1 + INDUCTION_INPUTS))):
        self.max_size = max_size
        self.tasks: dict[str, list[Task]] = {
            "ded": [Task("ded", IDENTITY, (1,), (1,))],
            "abd": [Task("abd", IDENTITY, (1,), (1,))],
            "ind": [Task("ind", IDENTITY, tuple(seed_inputs), tuple(seed_inputs))],
        }

    def add(self, task: Task) -> bool:
        """Adds `task` unless an equal (program, inputs) is held; returns whether it was added."""
        held = self.tasks[task.kind]
        if any(t.program == task.program and t.inputs == task.inputs for t in held):
            return False
        held.append(task)
        del held[: max(0, len(held) - self.max_size)]
        return True

    def sample(self, kind: str, rng: np.random.Generator, n: int) -> list[Task]:
        """`n` tasks of `kind` drawn uniformly with replacement."""
        held = self.tasks[kind]
        return [held[i] for i in rng.integers(len(held), size=n)]

    def sizes(self) -> dict[str, int]:
        return {kind: len(tasks) for kind, tasks in self.tasks.items()}

    def to_json(self) -> dict:
        return {"max_size": self.max_size,
                "tasks": {kind: [[t.program, list(t.inputs), list(t.outputs)] for t in tasks] for kind, tasks in self.tasks.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "TaskBuffer":
        buffer = cls(int(data["max_size"]))
        buffer.tasks = {kind: [Task(kind, program, tuple(inputs), tuple(outputs)) for program, inputs, outputs in rows]
                        for kind, rows in data["tasks"].items()}
        return buffer


# ---------------------------------------------------------------------------------------------- synthetic programs

_TEMPLATES = ("x+{c}", "x-{c}", "x*{c}", "{c}-x", "x*{c}+{d}", "x%{c}", "x//{c}")


def random_program(rng: np.random.Generator) -> str:
    """A random program from a few linear and modular templates with constants in 1..9."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    c, d = (int(v) for v in rng.integers(1, 10, size=2))
    return "lambda x:" + template.format(c=c, d=d)


def reference_output(program: str, x: int) -> int:
    """Output of a `random_program` program, computed without eval from its template form.

    Only for the trainer's own synthetic programs (SFT data and eval sets), never for model text.
    """
    body = program[len("lambda x:"):]
    tree = ast.parse(body, mode="eval").body
    ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.FloorDiv: int.__floordiv__,
           ast.Mod: int.__mod__}

    def value(node):
        if isinstance(node, ast.Name):
            return x
        if isinstance(node, ast.Constant):
            return node.value
        return ops[type(node.op)](value(node.left), value(node.right))

    return value(tree)


def random_task(kind: str, rng: np.random.Generator) -> Task:
    """A synthetic valid task of `kind` (SFT demonstrations and the fixed eval sets)."""
    program = random_program(rng)
    count = INDUCTION_INPUTS if kind == "ind" else 1
    inputs = tuple(int(v) for v in rng.choice(np.arange(*INPUT_RANGE), size=count, replace=False))
    return Task(kind, program, inputs, tuple(reference_output(program, x) for x in inputs))


def induction_inputs(rng: np.random.Generator) -> tuple:
    """The inputs the trainer pairs with a proposed induction program."""
    return tuple(int(v) for v in rng.choice(np.arange(*INPUT_RANGE), size=INDUCTION_INPUTS, replace=False))
