"""Math answer equivalence at the conventions of docs/math_answers.md: the exact pass, math-verify
in its worker process, and the cases the issue names (wrong answers accepted, right ones missed,
math-verify's own faults, adversarial inputs)."""
import threading
import time

import pytest

from jaxrl_self.rewards.math_verify import (
    _exact_decision,
    answers_equivalent,
    clean_answer,
    math_score,
    normalize_answer,
)

# (gold, answer, expected, category)
EQUIVALENCE_CASES = [
    # Integers: exact, never within a tolerance.
    ("72", "72", True, "integer"),
    ("1000000", "1000001", False, "integer"),
    ("1000000", "999999", False, "integer"),
    ("1234567", "1234568", False, "integer"),
    ("1000000", "1,000,001", False, "integer"),
    ("1000000", "1,000,000", True, "integer"),
    ("123456789012345678900", "123456789012345678901", False, "integer"),
    ("1000000", "10^6", True, "integer"),
    ("1000000", "10^{6}+1", False, "integer"),
    ("1000000", "1000001.0", False, "integer"),
    ("7", "+7", True, "integer"),
    ("-7", "-7.0", True, "integer"),
    ("3", "-3", False, "integer"),
    ("21", "12", False, "integer"),
    ("1024", "2^{10}", True, "integer"),
    ("1023", "2^{10}", False, "integer"),
    # Fractions and decimals: exact, a decimal of 6+ places within one unit of its last digit.
    ("0.5", r"\frac12", True, "fraction"),
    ("1/2", r"\dfrac{1}{2}", True, "fraction"),
    (r"-\frac{3}{4}", "-0.75", True, "fraction"),
    ("-0.5", r"\frac{-1}{2}", True, "fraction"),
    ("1/2", "2/4", True, "fraction"),
    (r"\frac18", "0.125", True, "fraction"),
    ("1.5", r"\tfrac{3}{2}", True, "fraction"),
    ("0.5", ".5", True, "fraction"),
    ("3.5", "3.50", True, "fraction"),
    (r"\frac13", "0.333333", True, "fraction"),
    (r"\frac23", "0.6666667", True, "fraction"),
    (r"\frac13", "0.33", False, "fraction"),
    ("2/3", "0.67", False, "fraction"),
    ("0.1", "0.10001", False, "fraction"),
    ("1", "1.000001", False, "fraction"),
    ("1000000", "1000000.5", False, "fraction"),
    (r"\frac{1}{2}", "0.55", False, "fraction"),
    ("1.234", "1,234", False, "fraction"),
    # Percent: 20\% reads as 20 and as 0.2.
    ("0.2", r"20\%", True, "percent"),
    (r"20\%", "0.2", True, "percent"),
    ("20", r"20\%", True, "percent"),
    (r"20\%", "20", True, "percent"),
    (r"12.5\%", "0.125", True, "percent"),
    ("50", "50 percent", True, "percent"),
    (r"20\%", "0.002", False, "percent"),
    (r"20\%", r"2\%", False, "percent"),
    # Units and degrees: dropped after a number; degrees are not converted to radians.
    ("24", r"24 \text{ cm}^2", True, "units"),
    (r"24\text{ cm}^2", "24", True, "units"),
    ("24", "24 cm^2", True, "units"),
    ("10", "10 cm", True, "units"),
    ("5", r"5 \text{ apples}", True, "units"),
    ("6", r"6\ \mathrm{m}", True, "units"),
    ("18", r"\$18", True, "units"),
    ("10", r"10 \text{ dollars}", True, "units"),
    (r"\$10", "10", True, "units"),
    ("50", r"50 \text{ mph}", True, "units"),
    (r"3 \text{ hours}", "3", True, "units"),
    ("5", "6 cm", False, "units"),
    ("90", r"90^\circ", True, "degrees"),
    (r"90^{\circ}", "90", True, "degrees"),
    ("45", "45°", True, "degrees"),
    ("90", r"\frac{\pi}{2}", False, "degrees"),
    (r"\frac{\pi}{3}", r"60^\circ", False, "degrees"),
    # Notation: thousands separators, Unicode minus, dollars.
    ("1000", "1{,}000", True, "notation"),
    ("10000", r"10\,000", True, "notation"),
    ("1234567", "1,234,567", True, "notation"),
    ("-5", "\u22125", True, "notation"),
    ("1250", r"\$1,250", True, "notation"),
    ("1000.5", "1,000.5", True, "notation"),
    ("1234", "1, 234", False, "notation"),
    # Text answers: normalised strings, never products of letters.
    (r"\text{east}", r"\text{seat}", False, "text"),
    (r"\text{no}", r"\text{on}", False, "text"),
    (r"\text{east}", "east", True, "text"),
    (r"\text{no}", r"\text{No}", True, "text"),
    (r"\text{Devon}", "Devon", True, "text"),
    (r"\text{Devon}", "Dveon", False, "text"),
    (r"\text{odd}", r"\text{even}", False, "text"),
    (r"\text{Sunday}", r"\text{Sunday.}", True, "text"),
    ("no solution", r"\text{no solution}", True, "text"),
    (r"\text{east}", "5", False, "text"),
    ("0", r"\text{none}", False, "text"),
    # Multiple choice (AMC).
    (r"\text{(C)}", "C", True, "choice"),
    (r"\textbf{(C)}", "(C)", True, "choice"),
    (r"\mathrm{(B)}", "B", True, "choice"),
    (r"\text{(C)}", "D", False, "choice"),
    (r"\text{(C)}", r"\text{(D)}", False, "choice"),
    ("C", "D", False, "choice"),
    # Matrices and vectors: ordered; a row break followed by a space is still a row break.
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True, "matrix"),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", True, "matrix"),
    (r"\begin{pmatrix} \frac12 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 0.5 \\ 2 \end{pmatrix}", True, "matrix"),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\4&3\end{pmatrix}", False, "matrix"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", False, "matrix"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", False, "matrix"),
    # Unordered collections: bare lists, sets, lists of solutions, \pm.
    ("2, 3", "3, 2", True, "unordered"),
    (r"\{1,2\}", r"\{2,1\}", True, "unordered"),
    ("x=1, x=-3", "x=-3, x=1", True, "unordered"),
    ("-3, 1", "x=1, x=-3", True, "unordered"),
    (r"\{1, 2, 3\}", "1, 2, 3", True, "unordered"),
    ("a=2, b=3", "b=3, a=2", True, "unordered"),
    ("2, 3", "2, 4", False, "unordered"),
    ("1, 2", "1, 2, 3", False, "unordered"),
    (r"\pm 2", "2, -2", True, "plus-minus"),
    (r"\pm 2", "-2, 2", True, "plus-minus"),
    (r"1 \pm \sqrt{2}", r"1+\sqrt2, 1-\sqrt2", True, "plus-minus"),
    (r"\pm 2", "2", False, "plus-minus"),
    # Ordered collections: tuples and intervals; unions of intervals in any order.
    ("(1,2)", "(2,1)", False, "ordered"),
    ("(3, -1)", "(3,-1)", True, "ordered"),
    ("(3, -1)", "(-1, 3)", False, "ordered"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True, "ordered"),
    (r"(1,\frac{1}{2}]", "(1, 0.5]", True, "ordered"),
    ("(1,2)", "[1,2)", False, "interval"),
    ("(0, 1]", "(0, 1)", False, "interval"),
    ("[2, 5)", r"x \in [2, 5)", True, "interval"),
    (r"(-\infty, 1) \cup (2, \infty)", r"(2, \infty) \cup (-\infty, 1)", True, "interval"),
    (r"(-\infty,1)\cup(2,\infty)", r"(-\infty,1]\cup(2,\infty)", False, "interval"),
    ("[-2, 7]", r"-2 \le x \le 7", True, "interval"),
    (r"(-\infty, 2)", "x < 2", True, "interval"),
    ("[1, 2]", "1 < x < 2", False, "interval"),
    # Equations: either side, any arrangement.
    ("5", "x = 5", True, "equation"),
    ("x = 5", "5 = x", True, "equation"),
    ("y = 2x+3", "2x + 3 = y", True, "equation"),
    ("y = 2x+3", "y - 2x = 3", True, "equation"),
    ("y = 2x+3", "y = 3x+2", False, "equation"),
    # Mixed numbers: an integer directly before a proper fraction.
    (r"\frac94", r"2\frac14", True, "mixed number"),
    (r"\frac94", r"2 \frac{1}{4}", True, "mixed number"),
    ("2.25", r"2\frac{1}{4}", True, "mixed number"),
    (r"-\frac94", r"-2\frac14", True, "mixed number"),
    (r"\frac{7}{2}", r"3\frac{1}{2}", True, "mixed number"),
    (r"2\frac14", r"\frac12", False, "mixed number"),
    (r"\frac{13}{4}", r"2\frac54", True, "mixed number"),
    (r"\frac12", r"2 \cdot \frac14", True, "mixed number"),
    # Repeating decimals.
    (r"\frac13", r"0.\overline{3}", True, "repeating decimal"),
    (r"\frac16", r"0.1\overline{6}", True, "repeating decimal"),
    (r"\frac{14}{11}", r"1.\overline{27}", True, "repeating decimal"),
    (r"\frac13", r"0.\overline{6}", False, "repeating decimal"),
    # Functions and operators.
    ("3", r"\log_2 8", True, "function"),
    ("4", r"\log_2 8", False, "function"),
    ("10", r"\binom{5}{2}", True, "function"),
    ("6", "3!", True, "function"),
    (r"1-\cos^2 x", r"\sin^2 x", True, "function"),
    (r"\cos\theta", r"\sin(\frac{\pi}{2}-\theta)", True, "function"),
    # Symbolic expressions.
    (r"\sqrt{8}", r"2\sqrt{2}", True, "symbolic"),
    (r"3\sqrt{2}", r"\sqrt{18}", True, "symbolic"),
    (r"10\sqrt{2}", r"\sqrt{200}", True, "symbolic"),
    ("(x+1)^2", "x^2+2x+1", True, "symbolic"),
    ("x^2 - 1", "(x-1)(x+1)", True, "symbolic"),
    (r"\frac{\pi}{2}", r"\pi/2", True, "symbolic"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True, "symbolic"),
    (r"\dfrac{5\sqrt{3}}{3}", r"\frac{5}{\sqrt{3}}", True, "symbolic"),
    (r"\frac{x+1}{x-1}", r"\frac{1+x}{-1+x}", True, "symbolic"),
    ("p - q", "-q + p", True, "symbolic"),
    ("xy", "yx", True, "symbolic"),
    ("2+3i", "3i+2", True, "symbolic"),
    ("2+3i", "3+2i", False, "symbolic"),
    ("x+2", "x+1", False, "symbolic"),
    ("3", r"\sqrt{8}", False, "symbolic"),
    (r"\pi", "3.14", False, "symbolic"),
    ("x", "y", False, "symbolic"),
    (r"\frac{1}{2}", r"\frac{1}{2}x", False, "symbolic"),
    (r"\infty", r"-\infty", False, "symbolic"),
    # Empty answers.
    ("0", "", False, "empty"),
    ("1", "   ", False, "empty"),
]


@pytest.mark.parametrize("gold, answer, expected, category", EQUIVALENCE_CASES,
                         ids=[f"{c[3]}:{c[1]}|{c[0]}" for c in EQUIVALENCE_CASES])
def test_equivalence_table(gold, answer, expected, category):
    assert answers_equivalent(answer, gold) == expected


def test_table_size_and_categories():
    categories = {case[3] for case in EQUIVALENCE_CASES}
    assert len(EQUIVALENCE_CASES) >= 120
    assert {"integer", "fraction", "percent", "units", "degrees", "text", "choice", "matrix",
            "unordered", "ordered", "interval", "mixed number", "repeating decimal"} <= categories


@pytest.mark.parametrize("gold, answer, expected", [
    ("1000000", "1000001", False),
    (r"\text{east}", r"\text{seat}", False),
    (r"\text{no}", r"\text{on}", False),
    ("0.5", r"\frac12", True),
    (r"\frac13", "0.33", False),
    (r"20\%", "0.2", True),
    ("24", r"24 \text{ cm}^2", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\frac94", r"2\frac14", True),
    (r"\frac13", r"0.\overline{3}", True),
])
def test_exact_pass_decides_without_math_verify(gold, answer, expected):
    assert _exact_decision(clean_answer(answer), clean_answer(gold)) == expected


@pytest.mark.parametrize("gold, answer", [
    ("2, 3", "3, 2"), (r"\sqrt{8}", r"2\sqrt{2}"), ("3", r"\log_2 8"), ("x", "y"),
    (r"\begin{pmatrix} \frac12 \end{pmatrix}", r"\begin{pmatrix} 0.5 \end{pmatrix}"),
])
def test_exact_pass_hands_the_rest_to_math_verify(gold, answer):
    assert _exact_decision(clean_answer(answer), clean_answer(gold)) is None


@pytest.mark.parametrize("raw, expected", [
    (r"\frac12", r"\frac{1}{2}"),
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r" $x = 5$ ", "5"),
    ("1,000", "1000"),
    ("1{,}000", "1000"),
    ("1, 234", "1,234"),
    (r"10 \text{ cm}", "10"),
    (r"24\text{ cm}^2", "24"),
    ("x + 2 feet", "x+2feet"),
    (r"90^\circ", "90"),
    (r"50\%", "50"),
    (".5", "0.5"),
    ("\u22125", "-5"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    ("7.", "7"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"2\frac14", r"\frac{9}{4}"),
    (r"0.1\overline{6}", r"\frac{1}{6}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_none_is_never_equivalent():
    assert not answers_equivalent(None, "1")
    assert not answers_equivalent("1", None)


@pytest.mark.parametrize("completion, reference, correct", [
    ("The answer is 42.", "42", 1.0),
    ("The answer is: -5 degrees", "-5", 1.0),
    (r"so the total is \boxed{1,000} dollars", "1000", 1.0),
    ("Natalia sold 48 clips in May.\n#### 72", "72", 1.0),
    (r"Thus \boxed{\dfrac{3}{4}}.", "0.75", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    ("<answer> x = -3, x = 1 </answer>", "1, -3", 1.0),
    (r"The matrix is $\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}$.", r"\begin{pmatrix}1\\2\end{pmatrix}", 1.0),
    ("The answer is 41.", "42", 0.0),
    # math-verify's own faults, avoided by extracting first: two \boxed{} outside $...$ (the last
    # one counts, so a self-corrected answer scores) and GSM8K's "#### \$1,250".
    (r"first \boxed{42}, no wait: \boxed{41}", "41", 1.0),
    (r"first \boxed{42}, no wait: \boxed{41}", "42", 0.0),
    (r"$\boxed{2}$ or rather $\boxed{3}$", "3", 1.0),
    ("She pays 1,000 + 250.\n#### \\$1,250", "1250", 1.0),
    ("She pays 1,000 + 250.\n#### \\$1,250", "1251", 0.0),
])
def test_text_around_the_answer(completion, reference, correct):
    assert math_score(completion, reference)["correct"] == correct


def test_math_score_components():
    assert math_score(r"so \boxed{\frac{1}{2}}", "0.5") == {"reward": 1.0, "correct": 1.0, "format_ok": 1.0}
    assert math_score(r"so \boxed{3}", "0.5") == {"reward": 0.0, "correct": 0.0, "format_ok": 1.0}
    assert math_score(r"so \boxed{3}", "0.5", format_score=0.1)["reward"] == 0.1
    assert math_score("I think 0.5", "0.5") == {"reward": 0.0, "correct": 0.0, "format_ok": 0.0}


def test_works_from_a_non_main_thread():
    """math-verify's signal.alarm timeouts would raise here; the worker process avoids them."""
    results = {}

    def check():
        results["set"] = answers_equivalent("3, 2", "2, 3")
        results["wrong"] = answers_equivalent(r"\log_2 8", "4")

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(timeout=60)
    assert results == {"set": True, "wrong": False}


_ADVERSARIAL_TIMEOUT_S = 1.0
_WORKER_RESTART_ALLOWANCE_S = 10.0  # a previous timeout's worker may still be booting


@pytest.mark.parametrize("answer, gold", [
    ("9^{9^{9^{9}}}", "1"),
    ("2^{2^{2^{40}}}", "3"),
    ("(10^{100})!", "1"),
    ("{" * 3000 + "x" + "}" * 3000, "x"),
    ("{" * 300 + "x" + "}" * 300, "y"),
    ("1+" * 5000 + "1", "5000"),
    ("x" * 10000, "x"),
    (" cm" * 5000 + "x", "x"),
    ("__import__('os').system('touch {marker}')", "0"),
    ("eval(\"__import__('os').system('touch {marker}')\")", "0"),
    (r"\immediate\write18{touch {marker}}", "0"),
    (r"\input{/etc/passwd}", "0"),
])
def test_adversarial_answers_give_zero_within_the_timeout(answer, gold, tmp_path):
    marker = tmp_path / "pwned"
    answer = answer.replace("{marker}", str(marker))
    started = time.monotonic()
    assert not answers_equivalent(answer, gold, timeout=_ADVERSARIAL_TIMEOUT_S)
    assert time.monotonic() - started < _ADVERSARIAL_TIMEOUT_S + _WORKER_RESTART_ALLOWANCE_S
    assert not marker.exists()
    assert answers_equivalent("(x-1)(x+1)", "x^2-1")  # the worker keeps answering


def test_adversarial_completion_scores_zero_with_the_default_timeout():
    started = time.monotonic()
    assert math_score(r"so \boxed{9^{9^{9^{9}}}}", "1")["reward"] == 0.0
    assert time.monotonic() - started < 3.0 + _WORKER_RESTART_ALLOWANCE_S
    assert math_score(r"so \boxed{\sqrt{8}}", r"2\sqrt{2}")["reward"] == 1.0


def test_host_callback_keeps_running_through_adversarial_rows():
    """The trainer's path: the jitted host callback on worker threads, adversarial rows included."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrl_self.rewards.host import encode_references, make_host_reward_fn

    rows = [(r"\boxed{2^{2^{2^{40}}}}", "3", 0.0), (r"\boxed{3, 2}", "2, 3", 1.0),
            (r"\boxed{\text{seat}}", r"\text{east}", 0.0), ("#### 1000001", "1000000", 0.0),
            (r"\boxed{\frac{9}{4}}", r"2\frac14", 1.0), ("#### \\$1,250", "1250", 1.0)]
    width = max(len(completion) for completion, _, _ in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    for row, (completion, _, _) in enumerate(rows):
        tokens[row, :len(completion)] = [ord(c) for c in completion]
    references = encode_references([gold for _, gold, _ in rows], 16)
    reward_fn = jax.jit(make_host_reward_fn(math_score, lambda ids: "".join(map(chr, ids)),
                                            num_workers=2, timeout_s=30.0))
    out = reward_fn(jnp.asarray(tokens), jnp.asarray(tokens > 0, jnp.float32), jnp.asarray(references))
    np.testing.assert_array_equal(np.asarray(out["reward"]), [expected for _, _, expected in rows])
    assert int(np.sum(out["verifier_failures"])) == 0
