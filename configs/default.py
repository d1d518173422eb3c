"""The default main job: a tiny transformer learns 3-digit addition with worked solutions on CPU.

SFT warm start on a few hundred steps of procedurally generated worked solutions, then GRPO
(group of 8, clipped surrogate, k3 KL to the frozen SFT model) with the exact verifier as reward.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.log_every = 10

    config.task = ml_collections.ConfigDict()
    config.task.name = "arithmetic"
    config.task.digits = 3
    config.task.ops = "+"
    config.task.seed = 0
    config.task.test_size = 200
    config.task.max_prompt_len = 16  # tokens, incl. BOS; prompts are left-padded to this
    config.task.max_reference_len = 32  # bytes of the reference answer handed to the verifier
    # countdown options (used when task.name == "countdown")
    config.task.num_numbers = 3
    config.task.max_number = 20
    config.task.max_target = 100

    config.model = ml_collections.ConfigDict()
    config.model.hidden_size = 128
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.num_kv_heads = 2
    config.model.head_dim = 32
    config.model.intermediate_size = 384
    config.model.rope_theta = 10000.0
    config.model.max_position_embeddings = 128
    config.model.dtype = "float32"

    config.sft = ml_collections.ConfigDict()
    config.sft.steps = 300
    config.sft.batch_size = 64
    config.sft.learning_rate = 3e-3
    config.sft.warmup_steps = 20

    config.rl = ml_collections.ConfigDict()
    config.rl.algorithm = "grpo"
    config.rl.reward = "verifier"  # the recipe that rewards completions (jaxrl_self/methods)
    config.rl.steps = 60
    config.rl.prompts_per_step = 16
    config.rl.group_size = 8
    config.rl.max_new_tokens = 40
    config.rl.temperature = 1.0
    config.rl.top_k = 0
    config.rl.top_p = 1.0
    config.rl.learning_rate = 5e-4
    config.rl.warmup_steps = 0
    config.rl.kl_coef = 0.04
    config.rl.eps_low = 0.2
    config.rl.eps_high = 0.2
    config.rl.std_ddof = 1
    config.rl.advantage_eps = 1e-6
    config.rl.entropy_coef = 0.0
    config.rl.loss_aggregation = ""  # "" = the algorithm's default (ALGORITHMS.md 1.1)
    config.rl.epochs = 1
    config.rl.minibatches = 1
    config.rl.micro_batches = 1

    config.eval = ml_collections.ConfigDict()
    config.eval.num_examples = 200
    config.eval.batch_size = 200
    config.eval.every = 20

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every = 20
    config.checkpoint.max_to_keep = 3
    return config
