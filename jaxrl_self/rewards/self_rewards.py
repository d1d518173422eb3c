"""Label-free rewards from the model's own probabilities (docs/algorithms.md#intuitor-self-certainty,
docs/algorithms.md#rent-entropy-minimisation).

These are rewards, not losses: every output is wrapped in ``stop_gradient``. All means over
tokens are masked means ``sum(x * m) / max(sum(m), 1)``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrl_self.algorithms.aggregation import masked_mean, masked_sum


def self_certainty(mean_logp_over_vocab: jax.Array, mask: jax.Array, vocab_size: int) -> jax.Array:
    """INTUITOR self-certainty from per-token vocabulary-mean log-probs.

    ``KL(U || p_t) = -log V - mean_logp_over_vocab[n, t]``, averaged over the masked tokens.

    Args:
      mean_logp_over_vocab: ``[N, T] float``: ``(1/V) * sum_j log p_t(j)`` over the real vocabulary.
      mask: ``[N, T]`` completion mask.
      vocab_size: V, the real vocabulary size.

    Returns:
      ``[N] float32``, >= 0, 0 iff every token distribution is uniform.
    """
    kl_from_uniform = -math.log(vocab_size) - jnp.asarray(mean_logp_over_vocab, jnp.float32)
    return jax.lax.stop_gradient(masked_mean(kl_from_uniform, mask, axis=-1))


def self_certainty_from_logits(logits: jax.Array, mask: jax.Array,
                               vocab_size: int | None = None) -> jax.Array:
    """INTUITOR self-certainty from full-vocabulary logits.

    Args:
      logits: ``[N, T, V_padded] float`` next-token logits for each completion token.
      mask: ``[N, T]`` completion mask.
      vocab_size: the real vocabulary size; slots at and beyond it (padding) are ignored.
        None uses all ``V_padded`` slots.

    Returns:
      ``[N] float32``.
    """
    vocab_size = logits.shape[-1] if vocab_size is None else vocab_size
    log_probs = jax.nn.log_softmax(jnp.asarray(logits[..., :vocab_size], jnp.float32), axis=-1)
    return self_certainty(jnp.mean(log_probs, axis=-1), mask, vocab_size)


def negative_entropy(token_entropy: jax.Array, mask: jax.Array) -> jax.Array:
    """RENT reward ``-(1/L) sum_t m_t H_t``: ``[N, T]`` entropies → ``[N] float32``."""
    return jax.lax.stop_gradient(-masked_mean(token_entropy, mask, axis=-1))


def trajectory_logprob_reward(token_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """EM-RL sequence-level reward ``log pi(o) = sum_t m_t logp_t``: ``[N, T]`` → ``[N] float32``."""
    return jax.lax.stop_gradient(masked_sum(token_logp, mask, axis=-1))
