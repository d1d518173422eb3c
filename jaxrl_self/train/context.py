"""The run context: what every recipe trains with, built once per run from the config.

A `RunContext` owns the device mesh, the task and tokenizer, the model (from scratch, or
`config.model.init_from`: a `.gguf` file, a Hugging Face or an orbax model directory, or another
run's checkpoint: `train.run_dir`), the SFT and RL optimizers, the samplers and the held-out
examples. Recipes (`jaxrl_self/recipes/`) read it; the outer loop (`train.loop.train`) adds the
checkpoints, metrics, progress, preemption and non-finite handling. docs/recipes.md shows how a
recipe uses it.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_self.config import check_quantization_blocks
from jaxrl_self.eval.evaluate import evaluate, generate
from jaxrl_self.methods import run_scorer
from jaxrl_self.models.config import model_config_from, with_execution_options
from jaxrl_self.models.tokenizer import with_reserved_token
from jaxrl_self.models.lora import join_adapters
from jaxrl_self.models.transformer import init_adapters, model_graphdef, quantized_base
from jaxrl_self.parallel import make_mesh, shard_batch, shard_state, sharding_for
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.base import task_categories
from jaxrl_self.tasks.encoding import encode_prompts
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.run_dir import load_model
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer
from jaxrl_self.train.value_head import init_value_head


log = logging.getLogger(__name__)

def grow_vocabulary(params, vocab_size: int):
    """`params` with the embedding (and an untied output head) grown to `vocab_size` rows: a
    recipe's extra special tokens start at the mean embedding (and the mean output column)."""
    def grow(table, axis):
        extra = vocab_size - table.shape[axis]
        mean = jnp.mean(table, axis=axis, keepdims=True)
        return jnp.concatenate([table, jnp.repeat(mean, extra, axis=axis)], axis=axis)

    params["embed_tokens"].value = grow(params["embed_tokens"].value, 0)
    if "lm_head" in params:
        params["lm_head"].value = grow(params["lm_head"].value, 1)
    return params


class RunContext:
    """Task, tokenizer, model, mesh, optimizers and samplers of one run.

    Args:
      config: the validated run config.
      scratch_tokenizer: for a recipe without a task from the registry (Absolute Zero's programs):
        the tokenizer of a model trained from scratch; no task is built. A pretrained model
        (`config.model.init_from`) always brings its own tokenizer.
      extend_tokenizer: a recipe's hook `tokenizer -> tokenizer` adding special tokens after the
        vocabulary (SCoRe's retry token, the self-rewarding judge's tokens); a pretrained model's
        embedding grows to match (`grow_vocabulary`), task token ids are unchanged.
    """

    def __init__(self, config, *, scratch_tokenizer=None, extend_tokenizer: Optional[Callable] = None):
        self.config = config
        self.mesh = make_mesh(config.mesh)
        pretrained = config.model.get("init_from")
        if pretrained:
            started = time.perf_counter()
            log.info("loading the model %s onto %d device(s) ...", pretrained, self.mesh.devices.size)
            model_config, _, init_params, tokenizer = load_model(
                pretrained, config.model.dtype, sharding_for=sharding_for(self.mesh), scan_layers=config.model.scan_layers)
            log.info("loaded %s: %.1fM parameters in %.1f s", pretrained,
                     sum(leaf.size for leaf in jax.tree.leaves(init_params)) / 1e6, time.perf_counter() - started)
        else:
            tokenizer = scratch_tokenizer
        self.task = build_task(config.task, tokenizer) if scratch_tokenizer is None else None
        tokenizer = self.task.tokenizer if self.task is not None else tokenizer
        self.tokenizer = extend_tokenizer(tokenizer) if extend_tokenizer else tokenizer
        self.verdict_id = None  # LaSeR's reserved token (config.rl.self_verify): never sampled
        if config.rl.self_verify.coef > 0:
            self.tokenizer, self.verdict_id = with_reserved_token(self.tokenizer, config.rl.self_verify.token)
        # token ids no sampler of the run draws; a recipe adds its own in `setup`, before it builds samplers
        self.never_sampled: tuple[int, ...] = () if self.verdict_id is None else (self.verdict_id,)
        if pretrained:
            self.model_config = with_execution_options(model_config, config)
            if self.tokenizer.vocab_size > self.model_config.vocab_size:
                init_params = grow_vocabulary(init_params, self.tokenizer.vocab_size)
                self.model_config = dataclasses.replace(self.model_config, vocab_size=self.tokenizer.vocab_size)
            if self.model_config.lora is not None:  # fresh adapters (B = 0) on the loaded base
                if self.model_config.lora.base_quantization:  # quantized once, here (docs/lora.md#quantized-base)
                    m = self.model_config
                    check_quantization_blocks(m.hidden_size, m.head_dim, m.intermediate_size, pretrained)
                    init_params = quantized_base(init_params, self.model_config)
                init_params = join_adapters(init_params, init_adapters(self.model_config, config.seed))
            self.graphdef, self.init_params = model_graphdef(self.model_config), init_params
        else:
            self.model_config = model_config_from(config, self.tokenizer.vocab_size)
            self.graphdef, self.init_params = init_model(self.model_config, config.seed)
        self.prompt_len, self.new_tokens = config.task.max_prompt_len, config.rl.max_new_tokens
        self.param_dtype = config.model.param_dtype
        self.sft_optimizer = make_optimizer(config.sft.learning_rate, config.sft.steps, config.sft.warmup_steps,
                                            param_dtype=rl_optimizer_param_dtype(config))
        self.rl_optimizer = rl_optimizer(config)
        self.train_examples = self.task.examples("train") if self.task else []
        self.test_examples = self.task.examples("test")[: config.eval.num_examples] if self.task else []
        self.root_key = jax.random.key(config.seed)
        # how held-out completions are scored: the task's verifier, or the run's own reward function
        self.score = run_scorer(config, self.task) if self.task is not None else None
        self._samplers = {}

    def prompt_iterator(self, num_prompts: int, batch_size: int, state: Optional[dict] = None) -> PromptIterator:
        """Training prompts' indices in [0, num_prompts): `batch_size` per global batch, each process
        drawing its share (`tasks.iterator.PromptIterator`, seed `seed + 1`), continued from `state`
        (a `get_state()`) when given."""
        processes = jax.process_count()
        iterator = PromptIterator(num_prompts, batch_size // processes, self.config.seed + 1,
                                  shard_index=jax.process_index(), shard_count=processes)
        if state:
            iterator.set_state(state)
        return iterator

    def sampler(self, group_size: int, temperature: float, max_new_tokens: Optional[int] = None, stop_ids: Sequence[int] = (),
                token_statistics: bool = False):
        """A jitted sampler on the run's mesh (`sampling.make_sampler`), built once per setting:
        `group_size` completions per prompt of up to `max_new_tokens` (default `rl.max_new_tokens`),
        with the per-token entropy and mean vocabulary log-prob when `token_statistics`."""
        rl, tok = self.config.rl, self.tokenizer
        setting = SamplingConfig(max_new_tokens=max_new_tokens or self.new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id,
                                 group_size=group_size, temperature=temperature, top_k=rl.top_k, top_p=rl.top_p,
                                 vocab_size=tok.vocab_size, stop_ids=tuple(stop_ids), token_statistics=token_statistics,
                                 slots=rl.sampler_slots, decode_windows=rl.sampler_windows,
                                 never_sample_ids=self.never_sampled)
        if setting not in self._samplers:
            self._samplers[setting] = make_sampler(self.graphdef, setting, self.mesh)
        return self._samplers[setting]

    def sample(self, sampler, params, prompt_tokens, prompt_mask, key, **knobs):
        """`sampler` on host prompt arrays `[B, P]` placed on the mesh (rows split over its batch axes)."""
        tokens, mask = shard_batch((np.asarray(prompt_tokens), np.asarray(prompt_mask)), self.mesh)
        return sampler(params, tokens, mask, key, **knobs)

    def encode_prompts(self, prompts: Sequence[str], prompt_len: Optional[int] = None):
        """BOS + prompt, left-padded to `prompt_len` (default `task.max_prompt_len`): `[B, P]` int32, bool."""
        return encode_prompts(self.tokenizer, prompts, prompt_len or self.prompt_len)

    def generate(self, sampler, params, prompts: Sequence[str], key, batch_size: int,
                 prompt_len: Optional[int] = None) -> list[list[str]]:
        """Completion texts `[len(prompts)][group]`, in batches of `batch_size` prompts."""
        return generate(sampler, params, self.tokenizer, prompts, prompt_len or self.prompt_len, key, batch_size)

    def fits(self, text: str, length: Optional[int] = None) -> bool:
        """Whether `text` + EOS fits in `length` tokens (default: the completion length)."""
        return len(self.tokenizer.encode(text)) + 1 <= (length or self.new_tokens)

    def evaluate(self, params) -> dict:
        """Greedy results on the held-out examples (`eval.evaluate`): accuracy, format_ok, samples,
        and for a task of several problem categories "category_accuracy" {category name: accuracy}."""
        results = evaluate(self.sampler(1, 0.0), params, self.task, self.test_examples, self.prompt_len,
                           self.config.eval.batch_size, score=self.score)
        if "category_accuracy" in results:
            names = task_categories(self.task, "test")[0]
            results["category_accuracy"] = {names[c]: value for c, value in results["category_accuracy"].items()}
        return results

    def sft_state(self, params=None):
        """The warm start's first TrainState on the mesh, from `params` (default: the initial ones)."""
        params = self.init_params if params is None else params
        return shard_state(init_train_state(params, self.sft_optimizer, self.config.seed, with_reference=False,
                                            param_dtype=self.param_dtype), self.mesh)

    def rl_state(self, params, *, with_reference: bool, with_value_head: bool = False, optimizer=None, reference_dtype=None):
        """A training phase's first TrainState on the mesh: `params` with the RL optimizer (or
        `optimizer`), a frozen reference copy of them when `with_reference` (its matrices in the
        compute dtype, or `reference_dtype`), PPO's value head when `with_value_head`."""
        value_params = init_value_head(self.model_config.hidden_size) if with_value_head else None
        return shard_state(init_train_state(params, optimizer or self.rl_optimizer, self.config.seed,
                                            with_reference=with_reference, value_params=value_params,
                                            reference_dtype=reference_dtype or self.model_config.compute_dtype,
                                            param_dtype=self.param_dtype), self.mesh)

    def shard(self, batch):
        """Host arrays `[N, ...]` as global arrays split by rows over the mesh's batch axes."""
        return shard_batch(batch, self.mesh)


def rl_optimizer(config) -> optax.GradientTransformation:
    """The RL phase's optimizer as `config.rl` and `config.model.param_dtype` set it."""
    rl = config.rl
    return make_optimizer(rl.learning_rate, rl.steps * rl.epochs * rl.minibatches, rl.warmup_steps,
                          weight_decay=rl.weight_decay, max_grad_norm=rl.max_grad_norm,
                          moments_dtype=rl.moments_dtype, param_dtype=rl_optimizer_param_dtype(config),
                          schedule=rl.get("lr_schedule", "cosine"))


def rl_optimizer_param_dtype(config) -> str:
    """The dtype the optimizer's params have: `model.param_dtype`, except with LoRA, whose float32
    adapters are all it updates (the param dtype then stores the frozen base)."""
    return "float32" if config.model.lora.rank else config.model.param_dtype
