"""Log-probabilities of completions under a model: the one forward pass every loss shares."""
from __future__ import annotations

import jax.numpy as jnp

from jaxrl_self.algorithms.losses import token_entropy, token_logprobs
from jaxrl_self.models.transformer import positions_from_mask
from jaxrl_self.sampling.processors import scale_by_temperature


def completion_logprobs(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, temperature=1.0, with_entropy=False):
    """Teacher-forced log-probs of the completion tokens.

    prompt_* `[N, P]` (left-padded), completion_* `[N, T]` (right-padded) -> logp `[N, T] float32`
    under `log_softmax(logits / temperature)` (the sampler's behaviour distribution), and the
    per-token entropy `[N, T]` of that distribution when `with_entropy` (else None). Logits at
    position P-1+t predict completion token t.
    """
    prompt_len = prompt_tokens.shape[1]
    tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(bool), completion_mask.astype(bool)], axis=1)
    logits, _ = model(tokens, positions_from_mask(mask), mask)
    logits = scale_by_temperature(logits[:, prompt_len - 1 : -1], temperature)
    logp = token_logprobs(logits, completion_tokens)
    return logp, (token_entropy(logits) if with_entropy else None)
