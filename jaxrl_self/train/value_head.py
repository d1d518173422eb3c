"""PPO's critic: a linear value head on the policy model's own final hidden states.

Choice (docs/algorithms.md#ppo-value-head-and-gae): the critic shares the policy's trunk instead of being a second model.
`V_t = h_t . w + b`, where `h_t` is the final normed hidden state at the position that predicts
completion token t (the state before token t is emitted), so values line up with log-probs.
The head's parameters `{"kernel": [E], "bias": []}` live in `TrainState.value_params`, next to
the policy's `params`; the sampler, evaluation and export only ever see `params`. The optimizer
updates both as one pytree `{"policy": params, "value_head": value_params}` (`trainable`),
so the value loss `c_v * L_V` also trains the shared trunk (scaled by `c_v`). The head starts at
zero: every first value prediction is 0.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxrl_self.models.lora import join_adapters, split_adapters
from jaxrl_self.train.policy import completion_hidden, token_statistics


def init_value_head(hidden_size: int) -> dict:
    """Zero-initialised head: `{"kernel": [E] float32, "bias": [] float32}`."""
    return {"kernel": jnp.zeros((hidden_size,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def trainable(state):
    """What the optimizer updates: the policy's trainable params (`models.lora.split_adapters`: all of
    `state.params`, or a LoRA model's adapters), or `{"policy": those, "value_head": ...}` with a value head."""
    policy = split_adapters(state.params)[0]
    if state.value_params is None:
        return policy
    return {"policy": policy, "value_head": state.value_params}


def frozen(state):
    """The policy's params the optimizer does not update: a LoRA model's base, else an empty state."""
    return split_adapters(state.params)[1]


def with_trainable(state, params):
    """The state with `params` (structured as `trainable(state)` returns them) written back."""
    policy, value_params = (params, None) if state.value_params is None else (params["policy"], params["value_head"])
    return state.replace(params=join_adapters(frozen(state), policy), value_params=value_params)


def completion_logprobs_and_values(model, value_params, prompt_tokens, prompt_mask, completion_tokens, completion_mask,
                                   temperature=1.0, dropout_key=None):
    """One teacher-forced forward giving log-probs, entropies and values of the completion tokens.

    prompt_* `[N, P]` (left-padded), completion_* `[N, T]` (right-padded) -> (logp `[N, T]`,
    entropy `[N, T]` of `softmax(logits / temperature)`, values `[N, T]`), all float32. Matches
    `policy.completion_logprobs` for logp and entropy (the same chunked output projection).
    dropout_key: as `policy.sequence_hidden`'s (the learner's training forward only).
    """
    hidden = completion_hidden(model, prompt_tokens, prompt_mask, completion_tokens, completion_mask, dropout_key)
    logp, entropy = token_statistics(hidden, model.output_head(), completion_tokens, temperature, with_entropy=True,
                                     chunk=model.config.logprob_chunk)
    values = jnp.einsum("nte,e->nt", hidden.astype(jnp.float32), value_params["kernel"]) + value_params["bias"]
    return logp, entropy, values
