"""jaxrl_self: JAX-native reinforcement learning for language models that supply their own learning signal."""

__version__ = "0.1.0"
