"""The environment interface and the batched multi-turn driver (docs/games.md#the-environment-interface).

An environment is host-side Python over immutable states:

    reset(rng)                -> state
    current_player(state)     -> p in range(num_players)
    observation(state, p)     -> str   what player p sees before acting: at its first turn the rules,
                                       its role ("You are Player p") and its private information, at
                                       later turns what happened since its last turn; the driver
                                       appends it to p's context
    legal_actions(state)      -> list[str]   e.g. ["[Check]", "[Bet]"]
    is_legal(state, action)   -> bool        default: `action in legal_actions(state)`
    step(state, action)       -> (state, done)
    returns(state)            -> tuple of one float per player, at the end
    demonstration(state, action) -> str      the canonical response playing `action`

A policy's response is free text; its action is the content of the last `\\boxed{...}`, written
`[content]` (`parse_action`). `play` runs a batch of games turn by turn: each turn one call of the
policy for every live game (`act`), whose response is appended to the acting player's context.
A response without a legal action ends the game with the offender at `invalid_returns[0]` and
every other player at `invalid_returns[1]`; a game reaching `max_turns` turns, or whose context no
longer fits (`fits`), ends as a draw (all returns 0).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional, Sequence

import numpy as np

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
TRAIN_INVALID_RETURNS = (-1.5, 0.5)  # offender, others: the training penalty
EVAL_INVALID_RETURNS = (-1.0, 1.0)  # a forfeit, for evaluation


def parse_action(text: str) -> Optional[str]:
    """"[Bet]" from "I bet. \\boxed{Bet}" (the last box, stripped); None without a box."""
    boxes = BOXED.findall(text)
    return f"[{boxes[-1].strip()}]" if boxes else None


def boxed(action: str) -> str:
    """The canonical response of an action: "[Bet]" -> "\\boxed{Bet}"."""
    return "\\boxed{" + action[1:-1] + "}"


class Env:
    """Base class of the environments (module docstring); subclasses set `name`, `num_players`."""

    name = "env"
    num_players = 2

    def reset(self, rng: np.random.Generator):
        raise NotImplementedError

    def current_player(self, state) -> int:
        raise NotImplementedError

    def observation(self, state, player: int) -> str:
        raise NotImplementedError

    def legal_actions(self, state) -> list[str]:
        raise NotImplementedError

    def is_legal(self, state, action: str) -> bool:
        return action in self.legal_actions(state)

    def step(self, state, action: str):
        raise NotImplementedError

    def returns(self, state) -> tuple:
        raise NotImplementedError

    def demonstration(self, state, action: str) -> str:
        """A response playing `action`, as the warm start's demonstrations and the canonical
        answers of evaluation write it: `boxed(action)` unless a game writes something first."""
        return boxed(action)


@dataclasses.dataclass
class Piece:
    """A span of a player's context: environment text, or a policy response (its text, and its
    token ids when the policy is a language model)."""

    text: str
    by_policy: bool
    tokens: Optional[list] = None


@dataclasses.dataclass
class Episode:
    """One finished game: per-player returns and contexts, and how it ended.

    returns: one float per player. contexts[p]: player p's pieces in order. actions: (player,
    action or None) per turn. invalid_player: the offender of an invalid response, else None.
    truncated: ended by the turn limit or a context that no longer fits. end_turn: the driver turn
    in which it ended (games are ordered by it for the baselines: docs/games.md#rae).
    """

    returns: tuple
    contexts: list
    actions: list
    invalid_player: Optional[int] = None
    truncated: bool = False
    end_turn: int = 0
    state: object = None


@dataclasses.dataclass
class Request:
    """A turn to play: `contexts[player]` of game `game`, which ends with the new observation."""

    game: int
    player: int
    context: list
    state: object


def play(env: Env, states: Sequence, act: Callable, *, max_turns: int = 50, invalid_returns=TRAIN_INVALID_RETURNS,
         fits: Callable = lambda context: True) -> list[Episode]:
    """Plays the games `states` to the end; returns their `Episode`s (in the order of `states`).

    act(requests: list[Request]) -> list[Piece]: one response per request, all live games in one
    call per turn. fits(context) -> bool: whether a context (with room for one more response) can
    still be sampled from; a game whose acting context does not fit ends as a draw.
    """
    n = len(states)
    states = list(states)
    contexts = [[[] for _ in range(env.num_players)] for _ in range(n)]
    actions = [[] for _ in range(n)]
    episodes: list[Optional[Episode]] = [None] * n

    def finish(g, returns, turn, invalid_player=None, truncated=False):
        episodes[g] = Episode(tuple(float(r) for r in returns), contexts[g], actions[g], invalid_player, truncated, turn, states[g])

    for turn in range(max_turns + 1):
        live = [g for g in range(n) if episodes[g] is None]
        if not live:
            break
        requests = []
        for g in live:
            player = env.current_player(states[g])
            contexts[g][player].append(Piece(env.observation(states[g], player), by_policy=False))
            if turn == max_turns or not fits(contexts[g][player]):
                finish(g, [0.0] * env.num_players, turn, truncated=True)
            else:
                requests.append(Request(g, player, contexts[g][player], states[g]))
        if not requests:
            break
        for request, response in zip(requests, act(requests)):
            g, player = request.game, request.player
            request.context.append(response)
            action = parse_action(response.text)
            actions[g].append((player, action))
            if action is None or not env.is_legal(states[g], action):
                finish(g, [invalid_returns[0] if p == player else invalid_returns[1] for p in range(env.num_players)], turn,
                       invalid_player=player)
                continue
            states[g], done = env.step(states[g], action)
            if done:
                finish(g, env.returns(states[g]), turn)
    return episodes


def completion_order(episodes: Sequence[Episode]) -> list[int]:
    """Indices of `episodes` in the order they ended (driver turn, then index)."""
    return sorted(range(len(episodes)), key=lambda g: (episodes[g].end_turn, g))


def random_legal_act(env: Env, rng: np.random.Generator) -> Callable:
    """A policy answering every request with a uniformly random legal action (`env.demonstration`)."""
    def act(requests):
        return [Piece(env.demonstration(r.state, str(rng.choice(env.legal_actions(r.state)))), by_policy=True)
                for r in requests]
    return act
