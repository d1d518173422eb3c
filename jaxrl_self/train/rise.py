"""RISE with a one-token verdict: the policy verifies its own fresh solutions inside the RL batch
(docs/algorithms.md#rise-generated-self-verification).

Each RL step, `rl.rise.prompts` (V) of the step's solutions (x, y) are chosen, half of them correct
and half wrong where the step has both (`choose_solutions`), and only a balanced set of them is
trained on (`balanced_rows`). Each becomes the verification context
`x + y + marker` (`rl.rise.marker`), whose next token, restricted to the two verdicts `rl.rise.yes`
and `rl.rise.no`, is the policy's verdict. G = `rl.group_size` verdicts per context are drawn at
`rl.temperature` and rewarded against the verifier's label (`verification_rewards`: 1 right,
-0.5 wrong); the G verdicts of a context form one group of the train batch. A verification row
keeps the layout of a solve row: the prompt x and the completion `y + marker + verdict`, with only
the verdict in the loss mask (the solution and the marker are its `env_mask`: read as context,
like an environment's tokens, but not trained), so solve and verify groups share one update. The
same forward pass gives the self-score `P(yes) / (P(yes) + P(no))` that `jaxrl-self eval` and the
held-out evaluations report. Verdicts and a marker that the tokenizer lacks are added to it as
reserved tokens, which no solution sampler draws.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_self.algorithms.self_verification import verification_rewards
from jaxrl_self.train.policy import verdict_log_odds

class RiseTokens(NamedTuple):
    """Token ids of RISE: the marker after a solution (one or more tokens) and the two verdicts."""

    marker: tuple[int, ...]
    yes: int
    no: int


def rise_tokens_to_add(tokenizer, marker: str, yes: str, no: str) -> list[str]:
    """The strings among `marker`, `yes`, `no` to add to `tokenizer` as reserved tokens: a verdict
    the tokenizer does not encode as exactly one token, the marker when it cannot encode it at all."""
    def ids(text):
        try:
            return tokenizer.encode(text)
        except ValueError:  # a character tokenizer without these characters
            return []

    added = [verdict for verdict in (yes, no) if len(ids(verdict)) != 1]
    return added + ([marker] if not ids(marker) else [])


def rise_token_ids(tokenizer, marker: str, yes: str, no: str) -> RiseTokens:
    """The ids of the RISE strings under `tokenizer` (extended by `rise_tokens_to_add`)."""
    return RiseTokens(tuple(tokenizer.encode(marker)), tokenizer.encode(yes)[0], tokenizer.encode(no)[0])


def append_token(tokens, mask, token_ids):
    """Right-padded rows `[N, C]` with one more token right after each row's last one.

    tokens `[N, C]` int32, mask `[N, C]` bool, token_ids `[N]` (or a scalar) -> (tokens `[N, C+1]`,
    mask `[N, C+1]`, the new token's column `[N]` int32).
    """
    rows = tokens.shape[0]
    at = jnp.sum(mask.astype(jnp.int32), axis=1)
    tokens = jnp.pad(tokens, ((0, 0), (0, 1)))
    mask = jnp.pad(mask.astype(bool), ((0, 0), (0, 1)))
    ids = jnp.broadcast_to(jnp.asarray(token_ids, tokens.dtype), (rows,))
    return tokens.at[jnp.arange(rows), at].set(ids), mask.at[jnp.arange(rows), at].set(True), at


def choose_solutions(correct, finished, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices `[count]` of the solutions to verify: distinct finished rows, half correct and half
    wrong when there are enough of both (the other class fills in otherwise), then unfinished rows
    if there are too few finished ones. correct, finished: `[N]` bool, N >= count."""
    correct, finished = np.asarray(correct, bool), np.asarray(finished, bool)
    if count > len(correct):
        raise ValueError(f"cannot choose {count} solutions out of {len(correct)}")
    pools = [rng.permutation(np.flatnonzero(finished & correct)), rng.permutation(np.flatnonzero(finished & ~correct))]
    take_correct = min(len(pools[0]), max(count // 2, count - len(pools[1])))
    chosen = np.concatenate([pools[0][:take_correct], pools[1][:count - take_correct]])
    rest = rng.permutation(np.flatnonzero(~finished))[:count - len(chosen)]
    return np.sort(np.concatenate([chosen, rest]).astype(np.int64))


def append_tokens(tokens, mask, ids):
    """`append_token` of each of the token ids `ids` (a static tuple) in turn: `[N, C + len(ids)]`."""
    for token_id in ids:
        tokens, mask, _ = append_token(tokens, mask, token_id)
    return tokens, mask


def balanced_rows(correct) -> np.ndarray:
    """`[V]` bool: the first k right and the first k wrong of the chosen solutions `correct [V]`
    (bool), k the smaller class's size, so that verification trains on both classes equally (and
    not at all in a step where every chosen solution is right, or every one wrong)."""
    correct = np.asarray(correct, bool)
    k = min(int(correct.sum()), int((~correct).sum()))
    rank = np.where(correct, np.cumsum(correct), np.cumsum(~correct))  # 1-based rank within the class
    return rank <= k


def _verdicts(model, ids: RiseTokens, prompt_tokens, prompt_mask, completion_tokens, completion_mask):
    """Verification contexts `[V, T+M]` (+ mask) of the solutions (M marker tokens) and the
    log-odds `[V]` of the "yes" verdict."""
    contexts, context_mask = append_tokens(completion_tokens, completion_mask, ids.marker)
    return contexts, context_mask, verdict_log_odds(model, prompt_tokens, prompt_mask, contexts, context_mask, ids.yes, ids.no)


@functools.lru_cache(maxsize=4)
def make_rise_scorer(graphdef, ids: RiseTokens):
    """Jitted `(params, prompt_tokens [N, P], prompt_mask, completion_tokens [N, T], completion_mask)
    -> [N] float32`: each solution's self-score P(yes) / (P(yes) + P(no)) under `params`."""
    @jax.jit
    def self_scores(params, *rows):
        return jax.nn.sigmoid(_verdicts(nnx.merge(graphdef, params), ids, *rows)[2])

    return self_scores


def make_verification_rollout(graphdef, ids: RiseTokens, group_size: int, temperature: float):
    """Jitted `(params, prompt_tokens [V, P], prompt_mask, completion_tokens [V, T], completion_mask,
    labels [V], key) -> (rows, rewards [V*G], metrics)`: G verdicts drawn per solution at
    `temperature` (0 = the more likely verdict) and their rewards against the 0/1 labels.

    rows: the verification rows of the train batch, the scored-rollout dict of a solve step:
    "prompt_tokens" `[V*G, P]`, "prompt_mask", "completion_tokens" `[V*G, T+M+1]` (solution, the M
    marker tokens, verdict), "completion_mask" `[V*G, T+M+1]`, True at the verdict only, and
    "env_mask", True at the solution and the marker (`RolloutBatch.env_mask`). metrics: "rise/accuracy"
    (drawn verdicts equal to the label), "rise/balanced_accuracy" (mean of that accuracy on correct
    and on wrong solutions, over the classes present), "rise/correct_share" (labels that are 1),
    "rise/score_correct" / "rise/score_wrong" (mean self-score of each class, 0 when absent).
    """
    yes, no, g = ids.yes, ids.no, group_size

    @jax.jit
    def rollout(params, prompt_tokens, prompt_mask, completion_tokens, completion_mask, labels, key):
        contexts, context_mask, log_odds = _verdicts(nnx.merge(graphdef, params), ids, prompt_tokens, prompt_mask,
                                                     completion_tokens, completion_mask)
        rows = contexts.shape[0]
        if temperature > 0:
            said_yes = jax.random.bernoulli(key, jax.nn.sigmoid(log_odds / temperature)[:, None], (rows, g))
        else:
            said_yes = jnp.broadcast_to((log_odds > 0)[:, None], (rows, g))
        labels = jnp.asarray(labels, jnp.int32)
        rewards = verification_rewards(said_yes.astype(jnp.int32), labels[:, None]).reshape(-1)
        repeat = lambda x: jnp.repeat(x, g, axis=0)
        tokens, attended, at = append_token(repeat(contexts), repeat(context_mask), jnp.where(said_yes, yes, no).reshape(-1))
        loss_mask = jnp.arange(tokens.shape[1])[None, :] == at[:, None]
        batch = {"prompt_tokens": repeat(prompt_tokens), "prompt_mask": repeat(prompt_mask),
                 "completion_tokens": tokens, "completion_mask": loss_mask, "env_mask": attended & ~loss_mask}
        return batch, rewards, _metrics(said_yes, labels, jax.nn.sigmoid(log_odds))

    return rollout


def _metrics(said_yes, labels, scores):
    """The verification metrics of `make_verification_rollout` (said_yes `[V, G]`, labels and scores `[V]`)."""
    right = (said_yes == (labels[:, None] > 0)).astype(jnp.float32)
    positive = (labels > 0).astype(jnp.float32)
    per_class = []
    for member in (positive, 1.0 - positive):
        count = jnp.sum(member)
        per_class.append((count, jnp.sum(member[:, None] * right) / jnp.maximum(count * right.shape[1], 1.0),
                          jnp.sum(member * scores) / jnp.maximum(count, 1.0)))
    present = jnp.stack([c > 0 for c, _, _ in per_class]).astype(jnp.float32)
    balanced = jnp.sum(present * jnp.stack([a for _, a, _ in per_class])) / jnp.maximum(jnp.sum(present), 1.0)
    return {"rise/accuracy": jnp.mean(right), "rise/balanced_accuracy": balanced, "rise/correct_share": jnp.mean(positive),
            "rise/score_correct": per_class[0][2], "rise/score_wrong": per_class[1][2]}
