"""SPIRAL (docs/games.md): one policy plays both seats of a two-player zero-sum text game and learns
from the outcomes, with role-conditioned advantages (RAE).

One step: `method.games_per_step` games of `method.game` (`envs.GAMES`) are played to the end by
the policy in both seats (`envs.base.play`): each turn one sampler call over every live game's
acting context, whose sampled response is appended to it, followed by the next observation. Each
(game, player) becomes one training row: the prompt is the player's first observation, the
completion its transcript after that, in which its responses carry the loss (completion_mask) and
the observations in between are read but never trained on (env_mask). The game's return for that
player minus the (game, seat) moving-average baseline read before the game updates it
(`algorithms.rae`, games in the order they ended) is the advantage of all its tokens; rows of
advantage exactly 0 are masked out. One update of the shared learner
(`train.rl_step.make_rl_update`, `rl.algorithm`'s clipped surrogate and aggregation); with
`method.decision_kl_coef` >= 0 the rows carry a per-token KL coefficient `[N, T]`: that value on
each response's first token (the move's letter in Kuhn Poker), `rl.kl_coef` on its other tokens.
The baselines live in the checkpointed `extra`.

Warm start: SFT on uniformly random legal moves in the answer format (`Env.demonstration`:
"\\boxed{Move}", in Kuhn Poker "Bet \\boxed{Bet}" or "Pass \\boxed{Check}"), one turn of a random game per demonstration. Evaluation: the invalid-move rate, response length and mean
advantage per seat of sampled self-play games; Kuhn Poker: the exact NashConv of the policy's
probabilities of the canonical answers at the 12 information sets and its exact win rate against
a uniformly random player; TicTacToe: win / draw / loss against a minimax and a random player
(greedy policy); negotiation: against a random player.
"""
from __future__ import annotations

import string

import jax
import numpy as np
from flax import nnx

from jaxrl_self.algorithms.rae import rae_advantages
from jaxrl_self.algorithms.registry import algorithm_of
from jaxrl_self.config import ConfigError
from jaxrl_self.envs import GAMES, Piece, play
from jaxrl_self.envs.base import EVAL_INVALID_RETURNS, TRAIN_INVALID_RETURNS, completion_order, random_legal_act
from jaxrl_self.envs.kuhn_poker import CARDS, NAMES, information_sets
from jaxrl_self.eval import games as game_eval
from jaxrl_self.models.tokenizer import CharTokenizer, pad_batch
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.loop import Recipe
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.rl_step import make_reference_scorer, make_rl_update, needs_old_logp, needs_reference

SFT_POOL = 1 << 16  # random games the warm start draws its demonstrations from


def make_tokenizer() -> CharTokenizer:
    """The char tokenizer of a model from scratch: printable ASCII."""
    return CharTokenizer(string.printable[:95] + "\n")


def role_advantages(episodes, baselines, alpha: float):
    """RAE over `episodes` of one game: (advantages `[G, P]` numpy, in the episodes' order, new
    baselines `[P]` numpy), the games taken in the order they ended."""
    order = completion_order(episodes)
    advantages, baselines = rae_advantages(np.array([episodes[g].returns for g in order]), np.asarray(baselines, np.float32), alpha)
    out = np.zeros((len(episodes), len(baselines)), np.float32)
    out[order] = np.asarray(advantages)
    return out, np.asarray(baselines)


def seat_metrics(episodes, advantages=None, prefix: str = "") -> dict:
    """Invalid-move rate (invalid responses / responses), game outcomes, and per seat the mean
    response length (tokens) and, given `advantages [G, P]`, the mean advantage."""
    players = len(episodes[0].returns)
    responses = [[piece for piece in e.contexts[p] if piece.by_policy] for e in episodes for p in range(players)]
    turns = sum(len(r) for r in responses)
    metrics = {f"{prefix}invalid_rate": sum(e.invalid_player is not None for e in episodes) / max(turns, 1),
               f"{prefix}truncated": float(np.mean([e.truncated for e in episodes])),
               f"{prefix}turns_per_game": turns / len(episodes)}
    for p in range(players):
        lengths = [len(piece.tokens or ()) for e in episodes for piece in e.contexts[p] if piece.by_policy]
        metrics[f"{prefix}seat{p}/response_length"] = float(np.mean(lengths)) if lengths else 0.0
        metrics[f"{prefix}seat{p}/return"] = float(np.mean([e.returns[p] for e in episodes]))
        if advantages is not None:
            metrics[f"{prefix}seat{p}/advantage"] = float(np.mean(advantages[:, p]))
    if players == 2:
        results = np.array([e.returns[0] for e in episodes])
        metrics[f"{prefix}seat0/win"] = float(np.mean(results > 0))
        metrics[f"{prefix}draw"] = float(np.mean([e.returns[0] == e.returns[1] for e in episodes]))
    return metrics


def kuhn_name(key) -> str:
    """"p0_J_cb" for the information set (0, 0, "cb"); "p0_K_start" for (0, 2, "")."""
    player, card, history = key
    return f"p{player}_{CARDS[card]}_{history or 'start'}"


class SPIRAL(Recipe):
    """SPIRAL self-play on the shared loop (module docstring)."""

    name = "SPIRAL"
    config_defaults = dict(
        game="kuhn_poker",  # envs.GAMES: kuhn_poker | tictactoe | negotiation
        games_per_step=64,  # E: games played per step; the sampler's rows and half the train batch's
        transcript_len=64,  # T: tokens of a player's transcript after its first observation (task.max_prompt_len)
        baseline_decay=0.95,  # alpha of the RAE baselines
        max_turns=50,  # a longer game is a draw
        eval_games=64,  # games per held-out measure (self-play; per opponent)
        decision_kl_coef=-1.0,  # the k3 KL coefficient on each response's first token (the move's in Kuhn Poker); -1 = rl.kl_coef
    )

    def __init__(self, config):
        super().__init__(config)
        method, rl = config.method, config.rl
        if method.game not in GAMES:
            raise ConfigError(f"config.method.game: expected one of {sorted(GAMES)}, got {method.game!r}")
        for key in ("games_per_step", "transcript_len", "max_turns", "eval_games"):
            if method[key] < 1:
                raise ConfigError(f"config.method.{key}: must be >= 1, got {method[key]}")
        if not 0.0 <= method.baseline_decay < 1.0:
            raise ConfigError(f"config.method.baseline_decay: must be in [0, 1), got {method.baseline_decay}")
        algorithm = algorithm_of(rl)
        if method.decision_kl_coef != -1.0:
            if method.decision_kl_coef < 0:
                raise ConfigError(f"config.method.decision_kl_coef: must be >= 0 (or -1: rl.kl_coef), got {method.decision_kl_coef}")
            if not needs_reference(rl):
                raise ConfigError("config.method.decision_kl_coef: the KL to the reference needs rl.kl_coef > 0 and an algorithm "
                                  f"with a KL term (rl.kl_coef = {rl.kl_coef}, rl.algorithm = {rl.algorithm!r})")
        if algorithm.value_head or algorithm.kl == "reward" or algorithm.loss != "clipped":
            raise ConfigError(f"config.rl.algorithm: SPIRAL supplies its own advantages to the clipped surrogate; "
                              f"{rl.algorithm!r} needs a critic, a reward-side KL or another loss (use grpo or dr_grpo)")
        rows = 2 * method.games_per_step
        if rows % (rl.minibatches * rl.micro_batches):
            raise ConfigError(f"config.rl.micro_batches: a SPIRAL batch has 2*games_per_step = {rows} rows, not divisible by "
                              f"rl.minibatches*rl.micro_batches = {rl.minibatches}*{rl.micro_batches}")
        needed = config.task.max_prompt_len + method.transcript_len + rl.max_new_tokens
        if needed > config.model.max_position_embeddings and not config.model.get("init_from"):
            raise ConfigError(f"config.model.max_position_embeddings: SPIRAL's contexts need task.max_prompt_len + "
                              f"method.transcript_len + rl.max_new_tokens = {needed} positions, got "
                              f"{config.model.max_position_embeddings}")

    def scratch_tokenizer(self, config):
        return make_tokenizer()

    def setup(self, ctx):
        method, rl = ctx.config.method, ctx.config.rl
        self.env = GAMES[method.game]()
        self.rows = method.games_per_step
        # per-token KL coefficients `[N, T]` (decision_kl_coef on each response's first token), or None: rl.kl_coef everywhere
        self.decision_kl_coef = None if method.decision_kl_coef == -1.0 else float(method.decision_kl_coef)
        self.kl_coef = float(rl.kl_coef)
        self.prompt_len, self.transcript_len = ctx.prompt_len, method.transcript_len
        self.context_len = self.prompt_len + self.transcript_len
        self.tokenizer, self.new_tokens = ctx.tokenizer, ctx.new_tokens
        self.bos = [] if ctx.tokenizer.bos_id is None else [ctx.tokenizer.bos_id]
        self.sampler = ctx.sampler(1, rl.temperature)
        self.update = make_rl_update(ctx.graphdef, ctx.rl_optimizer, rl, ctx.mesh)
        self.with_reference = make_reference_scorer(ctx.graphdef, rl, ctx.mesh) if needs_reference(rl) else None
        graphdef, temperature, mesh = ctx.graphdef, rl.temperature, ctx.mesh

        @jax.jit
        def logprobs(params, batch):
            with activation_mesh(mesh):
                return completion_logprobs(nnx.merge(graphdef, params), batch.prompt_tokens, batch.prompt_mask,
                                           batch.completion_tokens, batch.attended_mask(), temperature)[0]

        self.logprobs = logprobs
        self.eval_key = jax.random.fold_in(ctx.root_key, 2**31 - 1)

    def rl_state(self, ctx, params):
        return ctx.rl_state(params, with_reference=needs_reference(ctx.config.rl))

    def initial_extra(self, ctx):
        return {"baselines": [0.0] * self.env.num_players, "games": 0}

    # ---- contexts as tokens -------------------------------------------------------------------

    def piece_tokens(self, piece: Piece) -> list:
        """A piece's token ids, encoded once when it has none: environment text, or a scripted
        player's response (+ EOS, as the sampler ends one)."""
        if piece.tokens is None:
            piece.tokens = self.tokenizer.encode(piece.text) + ([self.tokenizer.eos_id] if piece.by_policy else [])
        return piece.tokens

    def context_tokens(self, context) -> list:
        return self.bos + [t for piece in context for t in self.piece_tokens(piece)]

    def fits(self, context) -> bool:
        """Whether a context (ending with an observation) can take one more response: its first
        observation within task.max_prompt_len, the rest and the response within transcript_len."""
        first = len(self.bos) + len(self.piece_tokens(context[0]))
        if first > self.prompt_len:
            raise ConfigError(f"config.task.max_prompt_len: {self.env.name}'s first observation takes {first} tokens, "
                              f"more than task.max_prompt_len = {self.prompt_len}")
        rest = sum(len(self.piece_tokens(piece)) for piece in context[1:])
        return rest + self.new_tokens <= self.transcript_len

    def policy_act(self, ctx, params, key, **knobs):
        """An `act` for `envs.base.play`: one sampler call per turn over `games_per_step` rows
        (the requests, padded with copies of the first)."""
        calls = [0]

        def act(requests):
            responses = []
            for start in range(0, len(requests), self.rows):
                chunk = requests[start : start + self.rows]
                rows = [self.context_tokens(r.context) for r in chunk]
                rows += [rows[0]] * (self.rows - len(rows))
                tokens, mask = pad_batch(rows, self.context_len, self.tokenizer.pad_id, side="left")
                samples = ctx.sample(self.sampler, params, tokens, mask, jax.random.fold_in(key, calls[0]), **knobs)
                calls[0] += 1
                out, out_mask = np.asarray(samples.tokens), np.asarray(samples.mask)
                for row, m in zip(out[: len(chunk)], out_mask[: len(chunk)]):
                    ids = [int(t) for t in row[m]]
                    responses.append(Piece(self.tokenizer.decode(ids), by_policy=True, tokens=ids))
            return responses

        return act

    def play(self, ctx, params, num_games: int, seed, key, invalid_returns=TRAIN_INVALID_RETURNS, opponent=None, **knobs):
        """`num_games` games from reset rng `seed` (a list), the policy in every seat, or against
        `opponent` (an `act`) in seat 1 of even games and seat 0 of odd ones. Returns (episodes,
        the policy's seat per game or None)."""
        rng = np.random.default_rng(seed)
        states = [self.env.reset(rng) for _ in range(num_games)]
        act = self.policy_act(ctx, params, key, **knobs)
        seats = None
        if opponent is not None:
            seats = [g % 2 for g in range(num_games)]
            act = game_eval.seat_act(act, opponent, seats)
        episodes = play(self.env, states, act, max_turns=ctx.config.method.max_turns, invalid_returns=invalid_returns,
                        fits=self.fits)
        return episodes, seats

    def training_rows(self, episodes, advantages):
        """A `RolloutBatch` (numpy) of one row per (game, player): prompt = BOS + first observation
        (left-padded to task.max_prompt_len), completion = the rest of the player's context
        (right-padded to method.transcript_len) with completion_mask on its responses where the
        advantage is not 0 and env_mask on its observations. With `method.decision_kl_coef` set,
        kl_coef `[N, T]`: decision_kl_coef on the first token of each response (completion
        position t with by_policy[t] and not by_policy[t-1]), rl.kl_coef on the response's other
        tokens, 0 elsewhere."""
        prompts, completions, policy_flags = [], [], []
        for e in episodes:
            for p in range(self.env.num_players):
                context = e.contexts[p]
                prompts.append(self.bos + (self.piece_tokens(context[0]) if context else []))
                rest = [(t, piece.by_policy) for piece in context[1:] for t in self.piece_tokens(piece)]
                if context and not context[-1].by_policy:  # an observation after the last response is never read
                    rest = rest[: len(rest) - len(self.piece_tokens(context[-1]))]
                completions.append([t for t, _ in rest])
                policy_flags.append([flag for _, flag in rest])
        prompt_tokens, prompt_mask = pad_batch(prompts, self.prompt_len, self.tokenizer.pad_id, side="left")
        completion_tokens, attended = pad_batch(completions, self.transcript_len, self.tokenizer.pad_id, side="right")
        by_policy, _ = pad_batch(policy_flags, self.transcript_len, 0, side="right")
        by_policy = by_policy.astype(bool) & attended
        advantages = np.asarray(advantages, np.float32).reshape(-1)
        completion_mask = by_policy & (advantages != 0)[:, None]
        kl_coef = None
        if self.decision_kl_coef is not None:
            first = by_policy & ~np.pad(by_policy, ((0, 0), (1, 0)))[:, :-1]  # a response's first token
            kl_coef = np.where(first, self.decision_kl_coef, np.where(by_policy, self.kl_coef, 0.0)).astype(np.float32)
        return RolloutBatch(prompt_tokens=prompt_tokens, prompt_mask=prompt_mask, completion_tokens=completion_tokens,
                            completion_mask=completion_mask, env_mask=attended & ~by_policy, advantages=advantages,
                            kl_coef=kl_coef)

    def step(self, ctx, state, extra, rl_step, key, control):
        config, method = ctx.config, ctx.config.method
        episodes, _ = self.play(ctx, state.params, method.games_per_step, [config.seed, 1, rl_step], key)
        advantages, baselines = role_advantages(episodes, extra["baselines"], method.baseline_decay)
        batch = self.training_rows(episodes, advantages)
        if needs_old_logp(config.rl):
            batch = batch.replace(old_logp=np.asarray(self.logprobs(state.params, ctx.shard(batch))))
        batch = ctx.shard(batch)
        if self.with_reference is not None:
            batch = self.with_reference(state, batch)
        state, update_metrics = self.update(state, control.inject_nan(config.sft.steps + rl_step, batch), key)
        metrics = {**seat_metrics(episodes, advantages), **{f"baseline/seat{p}": float(b) for p, b in enumerate(baselines)},
                   "rows/trained": float(np.mean(np.any(np.asarray(batch.completion_mask), axis=1))),
                   **jax.device_get(update_metrics)}
        return state, {"baselines": [float(b) for b in baselines], "games": extra["games"] + len(episodes)}, metrics

    # ---- warm start ---------------------------------------------------------------------------

    def sft_pool_size(self, ctx):
        return SFT_POOL

    def sft_batch(self, ctx, indices, step):
        """One turn of random game `i` per index: (the acting context, a random legal move + EOS)."""
        prompts, targets = [], []
        for i in indices:
            rng = np.random.default_rng([ctx.config.seed, 11, int(i)])
            episode = play(self.env, [self.env.reset(rng)], random_legal_act(self.env, rng),
                           max_turns=ctx.config.method.max_turns, fits=self.fits)[0]
            turns = [(p, k) for p in range(self.env.num_players) for k, piece in enumerate(episode.contexts[p]) if piece.by_policy]
            p, k = turns[int(rng.integers(len(turns)))]
            prompts.append(self.context_tokens(episode.contexts[p][:k]))
            targets.append(self.piece_tokens(episode.contexts[p][k]))
        prompt_tokens, prompt_mask = pad_batch(prompts, self.context_len, self.tokenizer.pad_id, side="left")
        completion_tokens, completion_mask = pad_batch(targets, ctx.new_tokens, self.tokenizer.pad_id, side="right")
        return {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask, "completion_tokens": completion_tokens,
                "completion_mask": completion_mask}

    # ---- evaluation ---------------------------------------------------------------------------

    def evaluate(self, ctx, state, full):
        method = ctx.config.method
        params, key = state.params, self.eval_key
        results = {}
        if method.game == "kuhn_poker":
            policy, canonical = self.kuhn_policy(params)
            value = game_eval.value_against(policy)
            results.update({"eval/kuhn/nash_conv": game_eval.nash_conv(policy), "eval/kuhn/win_vs_random": value["win"],
                            "eval/kuhn/chips_vs_random": value["chips"], "eval/kuhn/canonical_mass": float(np.mean(canonical)),
                            "eval/kuhn/canonical_mass_min": float(np.min(canonical)),
                            **{f"eval/kuhn/p_aggressive/{kuhn_name(key)}": float(p[1]) for key, p in policy.items()}})
        episodes, _ = self.play(ctx, params, method.eval_games, [ctx.config.seed, 2], jax.random.fold_in(key, 1),
                                invalid_returns=EVAL_INVALID_RETURNS)
        results.update(seat_metrics(episodes, prefix="eval/selfplay/"))
        opponents = {"random": game_eval.random_act(self.env, np.random.default_rng([ctx.config.seed, 3]))}
        if method.game == "tictactoe":
            opponents["minimax"] = game_eval.minimax_act(np.random.default_rng([ctx.config.seed, 4]))
        if method.game != "kuhn_poker":  # Kuhn Poker's figures against random are exact (above)
            for i, (name, opponent) in enumerate(opponents.items()):
                episodes, seats = self.play(ctx, params, method.eval_games, [ctx.config.seed, 5, i], jax.random.fold_in(key, 2 + i),
                                            invalid_returns=EVAL_INVALID_RETURNS, opponent=opponent, temperature=0.0)
                results.update({f"eval/vs_{name}/{k}": v for k, v in game_eval.outcome_rates(episodes, seats).items()})
        return results

    def kuhn_policy(self, params):
        """The policy's probabilities of the canonical answers (`demonstration` + EOS) at the 12
        information sets, renormalised over the two legal moves ({infoset: [p, p]}), and each
        information set's canonical mass (the sum before renormalising) `[12]`."""
        contexts, targets = [], []
        for (player, card, history), actions in information_sets():
            cards = (card, (card + 1) % 3) if player == 0 else ((card + 1) % 3, card)
            state, context = (cards, ""), []
            for move in history:  # replay the history with canonical answers
                if self.env.current_player(state) == player:
                    context += [Piece(self.env.observation(state, player), False),
                                Piece(self.env.demonstration(state, NAMES[move]), True)]
                state, _ = self.env.step(state, NAMES[move])
            context.append(Piece(self.env.observation(state, player), False))
            for action in actions:
                contexts.append(self.context_tokens(context))
                targets.append(self.piece_tokens(Piece(self.env.demonstration(state, action), True)))
        prompt_tokens, prompt_mask = pad_batch(contexts, self.context_len, self.tokenizer.pad_id, side="left")
        completion_tokens, completion_mask = pad_batch(targets, self.new_tokens, self.tokenizer.pad_id, side="right")
        batch = RolloutBatch(prompt_tokens=prompt_tokens, prompt_mask=prompt_mask, completion_tokens=completion_tokens,
                             completion_mask=completion_mask, advantages=np.zeros(len(targets), np.float32))
        logp = np.asarray(self.logprobs(params, batch), np.float64)
        answer_logp = (logp * completion_mask).sum(axis=1).reshape(-1, 2)
        # renormalised in log space: an untrained model's answers can be below float64's range
        log_mass = np.logaddexp(answer_logp[:, 0], answer_logp[:, 1])
        probs = np.exp(answer_logp - log_mass[:, None])
        policy = {key: p for (key, _), p in zip(information_sets(), probs)}
        return policy, np.exp(log_mass)

    def progress(self, metrics):
        keys = ("seat0/win", "invalid_rate", "eval/kuhn/nash_conv", "eval/vs_minimax/loss")
        return {k: metrics[k] for k in keys if k in metrics}

