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
    # Imperfect demonstrations: half of the SFT worked solutions drop the final carry digit
    # (847+285 -> 132). SFT learns the mistake; RL with the exact verifier has to fix it.
    config.task.demo_error_rate = 0.5
    config.task.show_work = True  # worked solutions show the column work before the answer
    # Solutions that compute the result twice (a+b, then b+a), each off by one in a share
    # check_error_rate of the demonstrations and answered with a guess when the two disagree
    # (demo_error_rate then does not apply); the task of the README's INTUITOR/RENT measurements
    # (tasks/arithmetic.py).
    config.task.self_check = False
    config.task.check_error_rate = 0.0
    config.task.seed = 0
    config.task.test_size = 200
    config.task.max_prompt_len = 16  # tokens, incl. BOS; prompts are left-padded to this
    config.task.max_reference_len = 32  # bytes of the reference answer handed to the verifier
    # Data tasks (jsonl, tfds) of a pretrained model: render each prompt (after task.template) as a user
    # message of the model's chat template (HF tokenizer config or GGUF metadata), the same in
    # training, `eval` and `sample`: "auto" (when the tokenizer has one) | "on" (required) | "off"
    # (raw text). Procedural tasks are unchanged (docs/chat_templates.md).
    config.task.chat_template = "auto"
    # countdown options (used when task.name == "countdown")
    config.task.num_numbers = 3
    config.task.max_number = 20
    config.task.max_target = 100

    config.model = ml_collections.ConfigDict()
    # A model to start from instead of one from scratch: a .gguf file, a Hugging Face or orbax model
    # directory, or another run's directory (docs/runs.md); its architecture replaces the sizes below
    config.model.init_from = ""
    config.model.hidden_size = 128
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.num_kv_heads = 2
    config.model.head_dim = 32
    config.model.intermediate_size = 384
    config.model.rope_theta = 10000.0
    config.model.max_position_embeddings = 128
    config.model.dtype = "float32"
    # Storage of the params' matrices (what the forward, the sampler and evaluation read): "bfloat16"
    # keeps float32 master weights in the optimizer state (memory per parameter: docs/scaling.md)
    config.model.param_dtype = "float32"
    # How the model runs at scale (docs/scaling.md): per-layer rematerialisation ("none" | "full" |
    # "save_dots"), the attention kernel ("auto" | "xla" | "dot_product" | "splash"), and completion positions
    # per chunk of the output projection in log-prob passes (0 = all at once, -1 = auto: 8 on CPU with
    # a vocabulary of 4096 or more, where it is faster, else all at once); scan_layers runs the
    # layers as one `lax.scan` over stacked parameters (compile time independent of depth).
    config.model.remat = "none"
    config.model.attention = "auto"
    config.model.logprob_chunk = -1
    config.model.scan_layers = False
    # LoRA (docs/lora.md): rank > 0 adds adapters `alpha/rank * B A` to the `targets` projections ("all", or
    # some of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, comma-separated) and trains only them
    config.model.lora = ml_collections.ConfigDict()
    config.model.lora.rank = 0
    config.model.lora.alpha = 16.0
    config.model.lora.dropout = 0.0
    config.model.lora.targets = "all"
    # "q8_0", "q4_0" or "q4_1": the frozen base's projections kept in llama.cpp blocks (docs/lora.md#quantized-base)
    config.model.lora.base_quantization = ""

    config.sft = ml_collections.ConfigDict()
    config.sft.steps = 300
    config.sft.batch_size = 64
    config.sft.learning_rate = 3e-3
    config.sft.warmup_steps = 20

    config.rl = ml_collections.ConfigDict()
    config.rl.algorithm = "grpo"
    config.rl.reward = "verifier"  # the recipe that rewards completions (jaxrl_self/methods)
    config.rl.steps = 120
    config.rl.prompts_per_step = 16
    config.rl.group_size = 8
    config.rl.max_new_tokens = 40
    config.rl.temperature = 1.0
    # truncation, in transformers' and vLLM's order: the top_k largest logits (0 = off), then the nucleus
    # of that set's renormalised distribution reaching top_p (1 = off); jaxrl_self/sampling/processors.py
    config.rl.top_k = 0
    config.rl.top_p = 1.0
    # rollout rows decoded at once: 0 = all prompts_per_step * group_size rows in one static batch; S > 0 =
    # continuous batching over S slots, a finished row's slot taking the next waiting row (docs/rollouts.md)
    config.rl.sampler_slots = 0
    # decode segments, each attending only to the cache slots filled by its last step, the cache growing
    # between them (1 = one loop over the whole cache: less peak memory, more cache read; docs/rollouts.md)
    config.rl.sampler_windows = 4
    config.rl.learning_rate = 5e-4
    config.rl.moments_dtype = "float32"  # Adam's first moment: "bfloat16" halves it (docs/scaling.md)
    config.rl.warmup_steps = 0
    config.rl.lr_schedule = "cosine"  # after the warmup: "cosine" decay to 10% over rl.steps, or "constant" (docs/runs.md)
    config.rl.kl_coef = 0.04
    config.rl.eps_low = 0.2
    config.rl.eps_high = 0.2
    config.rl.std_ddof = 1
    config.rl.advantage_eps = 1e-6
    config.rl.entropy_coef = 0.0
    config.rl.loss_aggregation = ""  # "" = the algorithm's default (docs/algorithms.md#loss-aggregation-modes)
    config.rl.epochs = 1
    config.rl.minibatches = 1
    config.rl.micro_batches = 1
    config.rl.max_grad_norm = 1.0  # global-norm gradient clipping of the RL optimizer
    config.rl.weight_decay = 0.0  # AdamW decoupled weight decay
    config.rl.ref_refresh_every = 0  # copy the policy into the KL reference every N RL steps; 0 = never
    # options of one algorithm each
    config.rl.reinforce_pp = ml_collections.ConfigDict()
    config.rl.reinforce_pp.group_baseline = True  # subtract the group mean reward first (REINFORCE++-baseline)
    # PPO (docs/algorithms.md#ppo-value-head-and-gae): value head on the policy's hidden states, GAE, clipped value loss
    config.rl.ppo = ml_collections.ConfigDict()
    config.rl.ppo.gamma = 1.0
    config.rl.ppo.gae_lambda = 0.95
    config.rl.ppo.value_coef = 0.1  # c_v
    config.rl.ppo.value_clip_eps = 0.2  # eps_v
    # DAPO (docs/algorithms.md#dynamic-sampling-and-group-filtering): dynamic sampling resamples prompts until every
    # group has reward signal, at most this many extra rounds per step (groups still without signal are masked out)
    config.rl.dapo = ml_collections.ConfigDict()
    config.rl.dapo.max_resample_rounds = 3
    # NFT (docs/algorithms.md#nft-and-negative-sample-reinforcement): an implicit negative policy trains on negatives
    config.rl.nft = ml_collections.ConfigDict()
    config.rl.nft.weighting = "dr_grpo"  # omega(r_q): "unit" (1) | "dr_grpo" (1 - r_q) | "grpo" (sqrt((1 - r_q) / r_q))
    config.rl.nft.neg_weight = 1.0  # weight of the negatives' loss; 0 with weighting "unit" = rejection-sampling fine-tuning
    config.rl.nft.neg_floor = 1.0  # c_neg: floor of the negative policy's ratio (1 - r_q R) / (1 - r_q), in (0, 1]
    config.rl.nft.mean_clamp = 0.02  # r_q, the group's fraction of positives, is clamped to [mean_clamp, 1 - mean_clamp]
    # negative-sample reinforcement / weighted REINFORCE: advantage pos_weight for positives, -neg_weight for negatives
    # LaSeR (docs/algorithms.md#laser-last-token-self-reward): the policy learns to predict the verifier's
    # verdict as the log-prob of a reserved token after its answer's EOS, with the RL recipe's verifier reward
    config.rl.self_verify = ml_collections.ConfigDict()
    config.rl.self_verify.coef = 0.0  # alpha, the weight of the self-verification loss; 0 = off
    config.rl.self_verify.beta = 0.1  # beta_v: self-reward r_s = beta * (lz - c_ref)
    config.rl.self_verify.c_ref = -23.0  # the reserved token's log-prob before training; keep c_ref + 1/beta <= -7
    config.rl.self_verify.token = "<|verify|>"  # the reserved token, added to the vocabulary when absent; never sampled
    config.rl.self_verify.warmup_steps = 0  # RL steps before the loss starts
    config.rl.self_verify.advantage_coef = 0.0  # lambda: blend of the self-reward's group advantage into A; 0 = off
    config.rl.self_verify.advantage_warmup_steps = 0  # further RL steps (after warmup_steps) before blending
    config.rl.self_verify.min_std = 0.1  # tau: a group whose self-rewards vary less keeps the verifier's advantage
    # RISE (docs/algorithms.md#rise-generated-self-verification): each step, this many of its own solutions (half
    # correct, half wrong when it has both) become verification prompts "problem + solution + marker", answered
    # by group_size one-token verdicts (yes / no) rewarded against the verifier, in the same batch; 0 = off.
    # Strings the tokenizer lacks (a verdict: as one token) are added as reserved tokens, never sampled.
    config.rl.rise = ml_collections.ConfigDict()
    config.rl.rise.prompts = 0
    config.rl.rise.marker = "<verify>"
    config.rl.rise.yes = "<yes>"
    config.rl.rise.no = "<no>"

    config.rl.nsr = ml_collections.ConfigDict()
    config.rl.nsr.pos_weight = 0.1  # 0 = negatives only (NSR); W-REINFORCE's 0.1
    config.rl.nsr.neg_weight = 1.0  # 0 = positives only: rejection-sampling fine-tuning (RFT)
    # for any algorithm
    config.rl.overlong_max_len = 0  # L_max of the overlong reward shaping (any algorithm); 0 = off
    config.rl.overlong_cache_len = 0  # L_cache: the penalty ramps from 0 to -1 over the last L_cache tokens
    config.rl.filter_zero_advantage_groups = False  # mask groups whose rewards are all equal out of the loss

    # which training problems each RL step draws (docs/curricula.md): "uniform" = shuffled passes over the
    # training split; "sec" = the Self-Evolving Curriculum, a bandit over the task's problem categories
    config.curriculum = ml_collections.ConfigDict()
    config.curriculum.name = "uniform"
    config.curriculum.step_size = 0.5  # SEC's alpha: weight of a step's learnability in each category's value
    config.curriculum.temperature = 0.2  # SEC's tau: softmax temperature over the values (mean |advantage|, in [0, 1])
    # guidance: a group whose samples all fail is sampled again with the first hint_fraction of the problem's
    # worked solution given, and trained on without the hint's tokens in the loss (docs/curricula.md#hints)
    config.curriculum.hint_all_fail = False
    config.curriculum.hint_fraction = 0.5

    config.method = ml_collections.ConfigDict()
    # the recipe (jaxrl_self/recipes, docs/recipes.md): "" = RL with rl.reward; star | rest_em | spin |
    # self_rewarding | score | absolute_zero | spiral (game self-play, docs/games.md); or a recipe of your
    # own as "module:Class"
    config.method.loop = ""
    # label-free rewards (rl.reward = ttrl | intuitor | rent | co_reward; jaxrl_self/methods/label_free.py)
    config.method.answer_max_tokens = 8  # answers compared for voting are cut to this many tokens
    config.method.ttrl_train_samples = 0  # TTRL: completions per prompt trained on, of the G voted (0 = all G)
    # test-time training: RL on the unlabeled held-out prompts themselves (the first eval.num_examples
    # of the test split); pass@1 and maj@G on them are reported before and after
    config.method.test_time = False

    config.eval = ml_collections.ConfigDict()
    config.eval.num_examples = 200
    config.eval.batch_size = 200
    config.eval.every = 20

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every = 20
    config.checkpoint.max_to_keep = 3  # the last N; the best by eval accuracy is kept apart (best_checkpoint/)

    config.mesh = ml_collections.ConfigDict()  # device mesh (jaxrl_self/parallel); -1 = the remaining devices
    config.mesh.num_devices = 1  # devices the mesh spans: 1 = this CPU job on one device; 0 = all devices of all hosts
    config.mesh.data = -1  # data parallel: parameters replicated
    config.mesh.fsdp = 1  # data parallel with parameters and optimizer state sharded (FSDP / ZeRO-3)
    config.mesh.tensor = 1  # tensor parallel over heads, MLP and vocabulary

    config.distributed = ml_collections.ConfigDict()  # multi-process runs (jaxrl_self/parallel/distributed.py)
    config.distributed.coordinator_address = ""  # "host:port" of process 0; "" = single process (unless auto)
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.distributed.auto = False  # jax.distributed.initialize() finds everything (Cloud TPU pod, SLURM, MPI, GKE)

    config.faults = ml_collections.ConfigDict()  # what a run does when training goes wrong (jaxrl_self/train/faults.py)
    config.faults.max_consecutive_nonfinite = 10  # stop (exit code 3) after this many skipped steps in a row
    return config
