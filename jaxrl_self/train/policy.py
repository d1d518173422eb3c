"""Log-probabilities of completions under a model: the one forward pass every loss shares.

The output projection runs only at the positions that predict completion tokens, and, with
`ModelConfig.logprob_chunk = C > 0`, C positions at a time under `jax.checkpoint`: each chunk's
`[N, C, V]` float32 logits are recomputed in the backward pass rather than kept, so no
`[N, T, V]` float32 array exists in the forward or backward pass (docs/scaling.md). -1 ("auto")
chunks on CPU only, where it is also faster (`logprob_chunk_for`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_self.algorithms.losses import token_entropy, token_logprobs
from jaxrl_self.models.transformer import output_logits, positions_from_mask
from jaxrl_self.parallel.rules import OUTPUT_HEAD_AXIS_RULES, constrain, target_platform
from jaxrl_self.sampling.processors import scale_by_temperature


def sequence_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key=None):
    """Final hidden states `[N, P+T, E]` of prompt + completion, position i predicting token i+1.

    prompt_* `[N, P]` (left-padded), completion_* `[N, T]` (right-padded). dropout_key: the LoRA
    adapters' dropout key of a learner's training forward (`lora.dropout_key`), else None.
    """
    tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(bool), completion_mask.astype(bool)], axis=1)
    return model.hidden_states(tokens, positions_from_mask(mask), mask, dropout_key=dropout_key)[0]


def completion_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key=None):
    """Final hidden states `[N, T, E]` at the positions that predict the completion tokens
    (position P-1+t predicts completion token t); arguments as `sequence_hidden`."""
    hidden = sequence_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key)
    return hidden[:, prompt_tokens.shape[1] - 1 : -1]


CPU_LOGPROB_CHUNK = 8  # positions per chunk of "auto" on CPU (docs/scaling.md#the-learners-output-head)
CPU_CHUNKED_VOCAB = 4096  # "auto" chunks on CPU from this vocabulary size on


def logprob_chunk_for(chunk: int, vocab: int) -> int:
    """The chunk `token_statistics` runs for `ModelConfig.logprob_chunk = chunk`: itself when >= 0;
    for -1 ("auto") `CPU_LOGPROB_CHUNK` positions when compiling for CPU with a vocabulary of
    `CPU_CHUNKED_VOCAB` or more, else 0 (all at once). On CPU, XLA's passes over the whole
    `[rows, T, vocab]` logits (log-sum-exp, entropy) cost more than recomputing each chunk's
    logits in the backward pass (docs/scaling.md#the-learners-output-head)."""
    if chunk >= 0:
        return chunk
    return CPU_LOGPROB_CHUNK if target_platform() == "cpu" and vocab >= CPU_CHUNKED_VOCAB else 0


def token_statistics(hidden, head, tokens, temperature=1.0, with_entropy=False, chunk=0):
    """Log-prob `[N, T] float32` of `tokens [N, T]` under `log_softmax(hidden @ head / temperature)`,
    and that distribution's entropy `[N, T]` when `with_entropy` (else None).

    hidden `[N, T, E]`, head `[E, V]`. chunk > 0: the logits are formed `chunk` positions at a time
    (T padded up to a multiple of it), each chunk rematerialised in the backward pass; -1: "auto"
    (`logprob_chunk_for`).
    """
    chunk = logprob_chunk_for(chunk, head.shape[-1])
    head = constrain(head, ("embed", "vocab"), OUTPUT_HEAD_AXIS_RULES)  # vocabulary split over every chip

    def statistics(h, tok):
        h = constrain(h, ("batch", "length", "activation_embed"), OUTPUT_HEAD_AXIS_RULES)  # all rows on each chip
        logits = scale_by_temperature(output_logits(h, head, OUTPUT_HEAD_AXIS_RULES), temperature)
        logp = token_logprobs(logits, tok)
        return logp, (token_entropy(logits) if with_entropy else jnp.zeros_like(logp))

    rows, length, width = hidden.shape
    if chunk <= 0 or chunk >= length:
        logp, entropy = statistics(hidden, tokens)
    else:
        pad = -length % chunk
        chunks = (length + pad) // chunk
        split = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(rows, chunks, chunk, *x.shape[2:]).swapaxes(0, 1)
        logp, entropy = jax.lax.map(jax.checkpoint(lambda args: statistics(*args)), (split(hidden), split(tokens)))
        join = lambda x: x.swapaxes(0, 1).reshape(rows, chunks * chunk)[:, :length]
        logp, entropy = join(logp), join(entropy)
    return logp, (entropy if with_entropy else None)


def logprob_after_completion(hidden, head, prompt_len, completion_mask, token_id):
    """Log-prob `[N] float32` of `token_id` at the position right after each completion's last
    token (its EOS for a finished row), under the untempered `log_softmax(hidden @ head)`: LaSeR's
    `lz` (docs/algorithms.md#laser-last-token-self-reward), from the pass that computes the
    completion's log-probs. Causal attention makes it independent of what follows.

    hidden `[N, P+T, E]` (`sequence_hidden`), head `[E, V]`, completion_mask `[N, T]` (right-padded).
    A row with no completion token reads the last prompt position.
    """
    logits = logits_after_completion(hidden, head, prompt_len, completion_mask)
    return logits[:, token_id] - jax.nn.logsumexp(logits, axis=-1)


def logits_after_completion(hidden, head, prompt_len, completion_mask):
    """Untempered logits `[N, V] float32` at the position right after each completion's last token;
    arguments as `logprob_after_completion`."""
    last = prompt_len - 1 + jnp.sum(completion_mask.astype(jnp.int32), axis=1)  # [N]
    after = jnp.take_along_axis(hidden, last[:, None, None], axis=1)  # [N, 1, E]
    return output_logits(after, head, OUTPUT_HEAD_AXIS_RULES)[:, 0]


def completion_logprobs(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, temperature=1.0, with_entropy=False,
                        dropout_key=None):
    """Teacher-forced log-probs of the completion tokens.

    prompt_* `[N, P]` (left-padded), completion_* `[N, T]` (right-padded) -> logp `[N, T] float32`
    under `log_softmax(logits / temperature)` (the sampler's behaviour distribution), and the
    per-token entropy `[N, T]` of that distribution when `with_entropy` (else None). dropout_key:
    as `sequence_hidden`'s (a learner's training forward only).
    """
    hidden = completion_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key)
    return token_statistics(hidden, model.output_head(), completion_tokens, temperature, with_entropy,
                            model.config.logprob_chunk)


def verdict_logprobs(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, verdict_id: int):
    """LaSeR's `lz` `[N] float32` of each completion under `model` (`logprob_after_completion`),
    from a forward pass of its own; arguments as `sequence_hidden`."""
    hidden = sequence_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask)
    return logprob_after_completion(hidden, model.output_head(), prompt_tokens.shape[1], completion_mask, verdict_id)


def verdict_log_odds(model, prompt_tokens, prompt_mask, context_tokens, context_mask, yes_id: int, no_id: int):
    """`log P(yes_id) - log P(no_id)` `[N] float32` at the position right after each context's last
    token (`logprob_after_completion`): RISE's one-token verdict on the context, from one forward
    pass. prompt_* `[N, P]` (left-padded), context_* `[N, C]` (right-padded)."""
    hidden = sequence_hidden(model, prompt_tokens, prompt_mask, context_tokens, context_mask)
    logits = logits_after_completion(hidden, model.output_head(), prompt_tokens.shape[1], context_mask)
    return logits[:, yes_id] - logits[:, no_id]


def completion_logprobs_and_verdict(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, temperature,
                                    verdict_id: int, dropout_key=None):
    """`completion_logprobs` with entropy, plus LaSeR's `lz` `[N] float32` (`logprob_after_completion`
    of `verdict_id`), from one forward pass: (logp `[N, T]`, entropy `[N, T]`, lz `[N]`)."""
    hidden = sequence_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key)
    prompt_len, head = prompt_tokens.shape[1], model.output_head()
    logp, entropy = token_statistics(hidden[:, prompt_len - 1 : -1], head, completion_tokens, temperature, True,
                                     model.config.logprob_chunk)
    return logp, entropy, logprob_after_completion(hidden, head, prompt_len, completion_mask, verdict_id)
