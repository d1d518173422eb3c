"""LaSeR's `lz` read after each completion equals the teacher-forced log-prob of the reserved token
appended right after the completion (its EOS for a finished row)."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_self.models.transformer import Transformer
from jaxrl_self.train.policy import completion_logprobs, logprob_after_completion, sequence_hidden

from tests.sampling.test_sampler import CONFIG

VERDICT = 37


def test_logprob_after_completion_is_the_appended_tokens_logprob():
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    rows, prompt_len, steps = 4, 6, 7
    prompt_mask = np.arange(prompt_len)[None] >= np.array([[0], [2], [5], [1]])  # left-padded
    prompt = np.where(prompt_mask, rng.integers(3, 30, (rows, prompt_len)), 0).astype(np.int32)
    lengths = np.array([1, 3, 6, 0])  # the last row has no completion token
    completion_mask = np.arange(steps)[None] < lengths[:, None]
    completion = np.where(completion_mask, rng.integers(3, 30, (rows, steps)), 0).astype(np.int32)
    args = tuple(jnp.asarray(x) for x in (prompt, prompt_mask, completion, completion_mask))

    hidden = sequence_hidden(model, *args)
    lz = logprob_after_completion(hidden, model.output_head(), prompt_len, args[3], VERDICT)

    appended = completion.copy()
    appended[np.arange(rows), lengths] = VERDICT
    appended_mask = np.arange(steps)[None] <= lengths[:, None]
    logp, _ = completion_logprobs(model, args[0], args[1], jnp.asarray(appended), jnp.asarray(appended_mask))
    np.testing.assert_allclose(lz, np.asarray(logp)[np.arange(rows), lengths], atol=1e-5)
