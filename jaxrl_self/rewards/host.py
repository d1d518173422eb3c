"""Turn any Python verifier into a function that can be called inside ``jax.jit``.

A verifier is ``Callable[[str, str], Mapping[str, float]]``: ``(completion_text, reference_text)
-> {"reward": r, "correct": c, "format_ok": f, ...}``. References travel through the jitted
program as fixed-width UTF-8 byte rows (``encode_references``), completions as token ids that
``decode`` turns back into text on the host.

Host callbacks never raise into XLA: a verifier that raises, runs past ``timeout_s`` or returns
garbage (not a mapping, a missing key, a non-finite value) gives 0 for every component of that
row, and the row is counted in ``"verifier_failures"`` under its reason. The first failure of each
function (by name) in a process is logged once with its traceback or its output; later ones are
only counted (and summed in one warning per call).

``make_host_batch_reward_fn`` does the same for a reward written as a plain batch function,
``(completions, prompts, references) -> rewards`` (docs/rewards.md).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

logger = logging.getLogger(__name__)

FAILURE_REASONS = ("exception", "timeout", "bad_output")
_OK = -1
Verifier = Callable[[str, str], Mapping[str, float]]
BatchReward = Callable[[list, list, list], Sequence[float]]

_logged_lock = threading.Lock()
_logged: set[tuple[str, str]] = set()  # (function, reason) whose first failure was logged in this process


def function_name(fn) -> str:
    """``module:qualname`` of a function (or the repr of another callable), as failures name it."""
    fn = getattr(fn, "func", fn)  # functools.partial
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(fn)


def log_first_failure(fn, reason: str, message: str, *args, exc_info: bool = False) -> None:
    """``logger.warning(message)`` (with the current traceback when ``exc_info``) the first time
    ``fn`` fails for ``reason`` (one of ``FAILURE_REASONS``) in this process; nothing after that
    (the failures are still counted)."""
    name = function_name(fn)
    with _logged_lock:
        if (name, reason) in _logged:
            return
        _logged.add((name, reason))
    logger.warning("%s failed (%s; later failures are only counted, as verifier_failures/%s): " + message,
                   name, reason, reason, *args, exc_info=exc_info)


def forget_logged_failures() -> None:
    """Log the next failure of every function again (tests)."""
    with _logged_lock:
        _logged.clear()


def encode_references(refs: Sequence[str], width: int) -> np.ndarray:
    """UTF-8 encode reference strings into a zero-padded ``[N, width] uint8`` array.

    Raises:
      ValueError: naming the first reference that is longer than ``width`` bytes or contains NUL.
    """
    encoded = np.zeros((len(refs), width), dtype=np.uint8)
    for index, ref in enumerate(refs):
        data = ref.encode("utf-8")
        if b"\0" in data:
            raise ValueError(f"reference {index} contains a NUL character, which marks padding")
        if len(data) > width:
            raise ValueError(f"reference {index} is {len(data)} bytes, more than width={width}: "
                             f"{ref[:60]!r}...")
        encoded[index, :len(data)] = np.frombuffer(data, dtype=np.uint8)
    return encoded


def decode_reference(row: np.ndarray) -> str:
    """Inverse of ``encode_references`` for one ``[W] uint8`` row."""
    return np.asarray(row, dtype=np.uint8).tobytes().rstrip(b"\0").decode("utf-8", errors="replace")


def _check_output(output, component_names: Sequence[str]) -> np.ndarray | None:
    """The components as float32 if the verifier output is well formed, else None."""
    if not isinstance(output, Mapping):
        return None
    try:
        values = np.array([float(output[name]) for name in component_names], dtype=np.float32)
    except (KeyError, TypeError, ValueError):
        return None
    return values if np.all(np.isfinite(values)) else None


def _score_row(verifier: Verifier, decode: Callable[[Sequence[int]], str], tokens: np.ndarray,
               mask: np.ndarray, reference_row: np.ndarray,
               component_names: Sequence[str]) -> tuple[int, np.ndarray | None]:
    """``(reason_index or _OK, components or None)`` for one row; never raises."""
    try:
        completion = decode([int(token) for token in tokens[mask > 0]])
        output = verifier(completion, decode_reference(reference_row))
    except Exception:  # a verifier must never crash the training step
        log_first_failure(verifier, "exception", "it raised", exc_info=True)
        return FAILURE_REASONS.index("exception"), None
    values = _check_output(output, component_names)
    if values is None:
        log_first_failure(verifier, "bad_output", "it returned %.200r; expected a mapping with finite values for %s", output,
                          list(component_names))
        return FAILURE_REASONS.index("bad_output"), None
    return _OK, values


def _score_rows_with_timeout(score_row: Callable[[int], tuple[int, np.ndarray | None]],
                             num_rows: int, num_workers: int, timeout_s: float) -> list:
    """Score rows on at most ``num_workers`` daemon threads; a row still running after
    ``timeout_s`` is abandoned (its thread is left to finish on its own) and marked timed out."""
    results: list = [None] * num_rows
    finished = threading.Condition()

    def run(row: int) -> None:
        result = score_row(row)
        with finished:
            if results[row] is None:
                results[row] = result
            finished.notify()

    pending = list(range(num_rows))[::-1]
    running: dict[int, float] = {}
    timeout_result = (FAILURE_REASONS.index("timeout"), None)
    with finished:
        while pending or running:
            while pending and len(running) < num_workers:
                row = pending.pop()
                running[row] = time.monotonic()
                threading.Thread(target=run, args=(row,), daemon=True).start()
            now = time.monotonic()
            done = [row for row, started in running.items()
                    if results[row] is not None or now - started >= timeout_s]
            for row in done:
                if results[row] is None:
                    results[row] = timeout_result
                del running[row]
            if running and not done:
                next_deadline = min(running.values()) + timeout_s
                finished.wait(timeout=max(0.0, next_deadline - time.monotonic()))
    return results


def make_host_reward_fn(verifier: Verifier, decode: Callable[[Sequence[int]], str],
                        component_names: Sequence[str] = ("reward", "correct", "format_ok"), *,
                        num_workers: int = 0, timeout_s: float = 5.0) -> Callable:
    """Wrap ``verifier`` so that it runs on the host from inside ``jax.jit`` (``pure_callback``).

    Args:
      verifier: ``(completion_text, reference_text) -> {name: float}``.
      decode: token ids of one completion (the ``mask == 1`` positions) → text.
      component_names: the keys of the verifier output to return; each must be present.
      num_workers: 0 runs rows one after another in the calling thread, with no timeout;
        ``> 0`` runs rows on that many threads and enforces ``timeout_s`` per row. A timed-out
        thread cannot be killed: verifiers that can hang on CPU should enforce their own hard
        limit in a subprocess (``math_verify`` and ``code_sandbox`` do).
      timeout_s: per-row limit in seconds (only with ``num_workers > 0``).

    Returns:
      ``fn(completion_tokens [N, T] int32, completion_mask [N, T], reference_bytes [N, W] uint8)
      -> {name: [N] float32 for each component, "verifier_failures": [len(FAILURE_REASONS)]
      int32}``. Works under ``jit`` and ``vmap`` (leading batch dims are passed through).
    """
    component_names = tuple(component_names)

    def host_score(tokens, mask, references):
        # The callback receives jax Arrays; worker threads must only see NumPy.
        tokens, mask, references = np.asarray(tokens), np.asarray(mask), np.asarray(references)
        batch_shape = tokens.shape[:-1]
        tokens_2d = tokens.reshape(-1, tokens.shape[-1])
        mask_2d = mask.reshape(-1, mask.shape[-1])
        references_2d = references.reshape(-1, references.shape[-1])

        def score_row(row: int):
            return _score_row(verifier, decode, tokens_2d[row], mask_2d[row], references_2d[row],
                              component_names)

        num_rows = tokens_2d.shape[0]
        if num_workers > 0:
            results = _score_rows_with_timeout(score_row, num_rows, num_workers, timeout_s)
        else:
            results = [score_row(row) for row in range(num_rows)]
        components = np.zeros((num_rows, len(component_names)), dtype=np.float32)
        reasons = np.full((num_rows,), _OK, dtype=np.int32)
        for row, (reason, values) in enumerate(results):
            reasons[row] = reason
            if values is not None:
                components[row] = values
        if np.any(reasons != _OK):
            logger.warning("verifier failures in %d of %d rows: %s", int(np.sum(reasons != _OK)),
                           num_rows, {name: int(np.sum(reasons == i))
                                      for i, name in enumerate(FAILURE_REASONS)})
        # Counts are per call; under vmap each leading batch element gets its own counts.
        reasons = reasons.reshape(batch_shape)
        failure_counts = np.stack([np.sum(reasons == i, axis=-1) for i in range(len(FAILURE_REASONS))],
                                  axis=-1).astype(np.int32)
        components = np.swapaxes(components.reshape(*batch_shape, len(component_names)), -1, -2)
        return components, failure_counts

    def reward_fn(completion_tokens: jax.Array, completion_mask: jax.Array,
                  reference_bytes: jax.Array) -> dict[str, jax.Array]:
        num_rows = completion_tokens.shape[0]
        result_shapes = (
            jax.ShapeDtypeStruct((len(component_names), num_rows), jnp.float32),
            jax.ShapeDtypeStruct((len(FAILURE_REASONS),), jnp.int32),
        )
        components, failure_counts = jax.pure_callback(
            host_score, result_shapes, completion_tokens.astype(jnp.int32), completion_mask,
            reference_bytes.astype(jnp.uint8), vmap_method="broadcast_all")
        rewards = {name: components[i] for i, name in enumerate(component_names)}
        rewards["verifier_failures"] = failure_counts
        return rewards

    return reward_fn


def _score_batch(reward: BatchReward, completions: list[str], prompts: list[str],
                 references: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(rewards [N] float32, reasons [N] int32 (_OK or a FAILURE_REASONS index))`` of one call of
    a batch reward; never raises."""
    num_rows = len(completions)
    rewards = np.zeros((num_rows,), np.float32)
    try:
        output = reward(completions, prompts, references)
    except Exception:  # a reward must never crash the training step
        log_first_failure(reward, "exception", "it raised", exc_info=True)
        return rewards, np.full((num_rows,), FAILURE_REASONS.index("exception"), np.int32)
    bad = FAILURE_REASONS.index("bad_output")
    try:
        values = np.asarray(output)
        ok_shape = values.shape == (num_rows,) and values.dtype.kind in "biuf"
    except Exception:
        ok_shape = False
    if not ok_shape:
        log_first_failure(reward, "bad_output", "it returned %.200r for %d completions; expected a list of %d numbers",
                          output, num_rows, num_rows)
        return rewards, np.full((num_rows,), bad, np.int32)
    values = values.astype(np.float64)
    finite = np.isfinite(values) & (np.abs(values) <= np.finfo(np.float32).max)
    if not np.all(finite):
        row = int(np.argmin(finite))
        log_first_failure(reward, "bad_output", "it returned the non-finite reward %r for row %d (such rows get 0)",
                          float(values[row]), row)
    rewards[finite] = values[finite]
    return rewards, np.where(finite, _OK, bad).astype(np.int32)


def make_host_batch_reward_fn(reward: BatchReward, decode: Callable[[Sequence[int]], str],
                              prompt_text: Callable[[Sequence[int]], str] | None = None) -> Callable:
    """Wrap a batch reward so that it runs on the host from inside ``jax.jit`` (``pure_callback``).

    Args:
      reward: ``(completions: list[str], prompts: list[str], references: list[str]) -> N numbers``,
        called once per batch of N rows (row i: completion i of prompt i, with its reference).
      decode: token ids of one completion (the ``mask == 1`` positions) → text.
      prompt_text: the ``mask == 1`` token ids of one prompt → its text (default ``decode``).

    A reward that raises gives 0 to every row of the call, counted as "exception"; one that
    returns anything but N numbers gives 0 to every row ("bad_output"); a non-finite number gives
    0 to its row ("bad_output"). The first failure of each reason is logged once (module docstring).

    Returns:
      ``fn(completion_tokens [N, T], completion_mask [N, T], prompt_tokens [N, P], prompt_mask
      [N, P], reference_bytes [N, W] uint8) -> {"reward": [N] float32, "scored": [N] float32 (1
      where the reward function gave the row a finite number, else 0), "verifier_failures":
      [len(FAILURE_REASONS)] int32}``. Works under ``jit`` and ``vmap`` (one call per batch element).
    """
    prompt_text = prompt_text or decode

    def host_score(tokens, mask, prompt_tokens, prompt_mask, references):
        tokens, mask = np.asarray(tokens), np.asarray(mask)
        prompt_tokens, prompt_mask, references = np.asarray(prompt_tokens), np.asarray(prompt_mask), np.asarray(references)
        num_rows = tokens.shape[0]
        try:
            completions = [decode([int(t) for t in row[keep > 0]]) for row, keep in zip(tokens, mask)]
            prompts = [prompt_text([int(t) for t in row[keep > 0]]) for row, keep in zip(prompt_tokens, prompt_mask)]
            refs = [decode_reference(row) for row in references]
        except Exception:
            logger.warning("could not decode the batch for the reward %s", function_name(reward), exc_info=True)
            rewards = np.zeros((num_rows,), np.float32)
            reasons = np.full((num_rows,), FAILURE_REASONS.index("exception"), np.int32)
        else:
            rewards, reasons = _score_batch(reward, completions, prompts, refs)
        counts = np.array([np.sum(reasons == i) for i in range(len(FAILURE_REASONS))], np.int32)
        if np.any(reasons != _OK):
            logger.warning("reward failures in %d of %d rows: %s", int(np.sum(reasons != _OK)), num_rows,
                           dict(zip(FAILURE_REASONS, counts.tolist())))
        return rewards, (reasons == _OK).astype(np.float32), counts

    def reward_fn(completion_tokens: jax.Array, completion_mask: jax.Array, prompt_tokens: jax.Array,
                  prompt_mask: jax.Array, reference_bytes: jax.Array) -> dict[str, jax.Array]:
        num_rows = completion_tokens.shape[0]
        result_shapes = (jax.ShapeDtypeStruct((num_rows,), jnp.float32), jax.ShapeDtypeStruct((num_rows,), jnp.float32),
                         jax.ShapeDtypeStruct((len(FAILURE_REASONS),), jnp.int32))
        rewards, scored, failure_counts = jax.pure_callback(
            host_score, result_shapes, completion_tokens.astype(jnp.int32), completion_mask,
            prompt_tokens.astype(jnp.int32), prompt_mask, reference_bytes.astype(jnp.uint8), vmap_method="sequential")
        return {"reward": rewards, "scored": scored, "verifier_failures": failure_counts}

    return reward_fn
