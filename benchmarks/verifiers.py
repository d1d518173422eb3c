"""Verifier throughput through the host callback: math answers and sandboxed programs per second.

The math verifier is the combined one (``docs/math_answers.md``): answer extraction, the exact pass,
and math-verify in its worker process for the rest (``math_share_to_math_verify`` of the answered
rows). Its ``callback_rows_per_s`` is answers/s through the host callback; ``math_exact_pass_only``
is the same on rows the exact pass decides alone. The peer is the plain Python loop a user would
write: the same verifier called row by row on the same texts. jaxrl_self's side is
`make_host_reward_fn` under `jax.jit` (tokens -> text on the host -> verifier -> rewards), with
`--workers` threads for the code sandbox (each row runs in its own sandboxed subprocess, so threads
overlap their waits). Prints ONE JSON object with rows/s for each side and the ratios.

    python3 benchmarks/verifiers.py                   # ~1 min on 2 cores
    python3 benchmarks/verifiers.py --math-rows 4096 --code-rows 64
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.rewards.code_sandbox import SandboxLimits, run_tests
from jaxrl_self.rewards.host import encode_references, make_host_reward_fn
from jaxrl_self.rewards.answers import extract_answer
from jaxrl_self.rewards.math_verify import _exact_decision, clean_answer, math_score

# GSM8K / MATH-style (completion, reference) templates, made distinct per row by k (so math-verify's
# parse cache does not help): the first five are decided by the exact pass, the next five go to
# math-verify in its worker process, the last has no answer.
MATH_TEMPLATES = [
    lambda k: (f"Natalia sold {k} clips in April and as many in May.\n#### {2 * k}", f"{2 * k}"),
    lambda k: (rf"So the probability is \boxed{{\dfrac{{1}}{{{k}}}}}.", rf"\frac{{2}}{{{2 * k}}}"),
    lambda k: (f"The answer is {1000 * k:,} dollars.", f"{1000 * k}"),
    lambda k: (f"The answer is {k + 1}.", f"{k}"),
    lambda k: (rf"Hence \boxed{{{k}\%}}", f"{k / 100}"),
    lambda k: (rf"We get \boxed{{{k}\sqrt{{2}}}}", rf"\sqrt{{{2 * k * k}}}"),
    lambda k: (rf"\boxed{{(x+{k})^2}}", f"x^2+{2 * k}x+{k * k}"),
    lambda k: (rf"The roots are $\boxed{{{k}, -{k}}}$.", rf"\pm {k}"),
    lambda k: (rf"So \boxed{{x \in [{k}, {k + 3})}}", f"[{k}, {k + 3})"),
    lambda k: (rf"\boxed{{\log_{{2}} {{{2 ** (k % 20 + 1)}}}}}", f"{k % 20 + 1}"),
    lambda k: ("I am not sure.", f"{k}"),
]
_EXACT_PASS_TEMPLATES = 5  # MATH_TEMPLATES[:5] never reach math-verify
CODE_TESTS = [("3\n", "6"), ("21\n", "42")]
CODE_PROGRAMS = ["print(2 * int(input()))", "print(int(input()) + 3)", "x = int(input())\nprint(x * 2)",
                 "print(2 * int(input())"]  # right, wrong, right, syntax error


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--math-rows", type=int, default=1024)
    parser.add_argument("--code-rows", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="callback threads for the code sandbox")
    return parser.parse_args()


def char_batch(texts: list[str]) -> tuple[jax.Array, jax.Array]:
    """Texts as `[N, T] int32` character codes and their `[N, T]` mask (a char-level tokenizer)."""
    width = max(len(t) for t in texts)
    tokens = np.zeros((len(texts), width), np.int32)
    for row, text in enumerate(texts):
        tokens[row, :len(text)] = [ord(c) for c in text]
    return jnp.asarray(tokens), jnp.asarray(tokens > 0, jnp.float32)


def decode_chars(token_ids) -> str:
    return "".join(map(chr, token_ids))


def code_verifier(program: str, reference: str) -> dict[str, float]:
    passed = run_tests(program, CODE_TESTS, SandboxLimits(timeout_s=5.0)).pass_fraction
    return {"reward": passed, "correct": float(passed == 1.0), "format_ok": 1.0}


def rows_per_second(verifier, texts: list[str], refs: list[str], workers: int, timeout_s: float) -> dict:
    """Direct Python loop vs the jitted callback on the same rows; also checks they agree."""
    for t, r in zip(texts[:8], refs[:8]):  # warm up (math-verify's worker process starts on first use)
        verifier(t, r)
    started = time.perf_counter()
    direct = np.array([verifier(t, r)["reward"] for t, r in zip(texts, refs)], np.float32)
    direct_s = time.perf_counter() - started
    tokens, mask = char_batch(texts)
    references = jnp.asarray(encode_references(refs, max(len(r.encode()) for r in refs)))
    reward_fn = jax.jit(make_host_reward_fn(verifier, decode_chars, num_workers=workers, timeout_s=timeout_s))
    reward_fn = reward_fn.lower(tokens, mask, references).compile()  # compile time is not timed
    started = time.perf_counter()
    out = jax.block_until_ready(reward_fn(tokens, mask, references))
    callback_s = time.perf_counter() - started
    return {"rows": len(texts), "direct_rows_per_s": len(texts) / direct_s,
            "callback_rows_per_s": len(texts) / callback_s, "callback_over_direct": direct_s / callback_s,
            "same_rewards": bool(np.array_equal(direct, np.asarray(out["reward"]))),
            "verifier_failures": np.asarray(out["verifier_failures"]).tolist()}


def math_verify_share(rows: list[tuple[str, str]]) -> float:
    """The share of rows with an extracted answer that the exact pass leaves to math-verify."""
    answered = [(extract_answer(completion), reference) for completion, reference in rows]
    answered = [(answer, reference) for answer, reference in answered if answer is not None]
    undecided = sum(_exact_decision(clean_answer(answer), clean_answer(reference)) is None
                    for answer, reference in answered)
    return undecided / len(answered)


def main():
    args = parse_args()
    math_rows = [MATH_TEMPLATES[i % len(MATH_TEMPLATES)](2 + i // len(MATH_TEMPLATES))
                 for i in range(args.math_rows)]
    exact_rows = [MATH_TEMPLATES[i % _EXACT_PASS_TEMPLATES](2 + i // _EXACT_PASS_TEMPLATES)
                  for i in range(args.math_rows)]
    code_rows = [CODE_PROGRAMS[i % len(CODE_PROGRAMS)] for i in range(args.code_rows)]
    result = {
        "math": rows_per_second(math_score, [c for c, _ in math_rows], [r for _, r in math_rows], 0, 5.0),
        "math_share_to_math_verify": math_verify_share(math_rows),
        "math_exact_pass_only": rows_per_second(math_score, [c for c, _ in exact_rows], [r for _, r in exact_rows],
                                                0, 5.0),
        "code_1_worker": rows_per_second(code_verifier, code_rows, ["-"] * len(code_rows), 1, 30.0),
        f"code_{args.workers}_workers": rows_per_second(code_verifier, code_rows, ["-"] * len(code_rows),
                                                        args.workers, 30.0),
        "code_tests_per_program": len(CODE_TESTS),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
