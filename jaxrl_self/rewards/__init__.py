"""Rewards: host verifiers (math, countdown, code) and reward functions as JAX ops.

- ``answers``: answer extraction from text (boxed, tags, ``####``, last number).
- ``math_verify``: MATH-style normalisation and equivalence; ``math_score`` verifier.
- ``countdown``: countdown verifier with an exact-fraction expression parser.
- ``code_sandbox``: running model-written programs under resource limits.
- ``host``: ``make_host_reward_fn`` turns a Python verifier into a jit-callable reward.
- ``token_rewards``: exact match, format, length, majority vote on token arrays.
- ``self_rewards``: self-certainty, entropy and log-prob rewards.
"""
from jaxrl_self.rewards.answers import extract_answer, extract_tagged, parse_int
from jaxrl_self.rewards.code_sandbox import (
    ProgramRun,
    SandboxLimits,
    SandboxResult,
    run_program,
    run_program_deterministic,
    run_tests,
)
from jaxrl_self.rewards.countdown import (
    countdown_reference,
    countdown_verifier,
    parse_countdown_reference,
    score_countdown,
)
from jaxrl_self.rewards.host import (
    FAILURE_REASONS,
    decode_reference,
    encode_references,
    make_host_reward_fn,
)
from jaxrl_self.rewards.math_verify import (
    answers_equivalent,
    math_score,
    normalize_answer,
)
from jaxrl_self.rewards.self_rewards import (
    negative_entropy,
    self_certainty,
    self_certainty_from_logits,
    trajectory_logprob_reward,
)
from jaxrl_self.rewards.token_rewards import (
    answer_span,
    combine_rewards,
    exact_match_reward,
    extract_answer_tokens,
    format_reward,
    length_penalty,
    majority_vote,
)

__all__ = [
    "FAILURE_REASONS",
    "ProgramRun",
    "SandboxLimits",
    "SandboxResult",
    "answer_span",
    "answers_equivalent",
    "combine_rewards",
    "countdown_reference",
    "countdown_verifier",
    "decode_reference",
    "encode_references",
    "exact_match_reward",
    "extract_answer",
    "extract_answer_tokens",
    "extract_tagged",
    "format_reward",
    "length_penalty",
    "majority_vote",
    "make_host_reward_fn",
    "math_score",
    "negative_entropy",
    "normalize_answer",
    "parse_countdown_reference",
    "parse_int",
    "run_program",
    "run_program_deterministic",
    "run_tests",
    "score_countdown",
    "self_certainty",
    "self_certainty_from_logits",
    "trajectory_logprob_reward",
]
