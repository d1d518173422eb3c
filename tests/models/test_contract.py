"""`transformer.contract`: the projections' contraction, a 2-D dot on CPU and an einsum elsewhere."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.models import transformer


@pytest.mark.parametrize("x_shape,w_shape,axes", [((2, 5, 6), (6, 3, 4), 1), ((2, 5, 3, 4), (3, 4, 6), 2), ((7, 6), (6, 9), 1)])
@pytest.mark.parametrize("platform", ["cpu", "tpu"])
def test_contract_matches_numpy_and_its_gradients(monkeypatch, x_shape, w_shape, axes, platform):
    monkeypatch.setattr(transformer, "target_platform", lambda: platform)  # "tpu": the einsum branch, run here on CPU
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32)
    out = transformer.contract(jnp.asarray(x), jnp.asarray(w), axes)
    k = int(np.prod(w_shape[:axes]))
    expected = (x.reshape(-1, k) @ w.reshape(k, -1)).reshape(*x_shape[: len(x_shape) - axes], *w_shape[axes:])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    cotangent = rng.normal(size=expected.shape).astype(np.float32)
    dx, dw = jax.grad(lambda a, b: jnp.sum(transformer.contract(a, b, axes) * cotangent), argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
    g = cotangent.reshape(-1, int(np.prod(w_shape[axes:])))
    np.testing.assert_allclose(np.asarray(dx), (g @ w.reshape(k, -1).T).reshape(x_shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), (x.reshape(-1, k).T @ g).reshape(w_shape), rtol=1e-5, atol=1e-5)


def test_contract_keeps_the_preferred_float32_output():
    x, w = jnp.ones((3, 4), jnp.bfloat16), jnp.ones((4, 5), jnp.bfloat16)
    assert transformer.contract(x, w, preferred_element_type=jnp.float32).dtype == jnp.float32
    assert transformer.contract(x, w).dtype == jnp.bfloat16
