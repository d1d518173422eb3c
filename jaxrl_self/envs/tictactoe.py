"""TicTacToe (docs/games.md#tictactoe): player 0 is X and moves first; cells 0-8 row by row.

A state is `(board, to_move)`: board a 9-character string over "x", "o", "." (empty). An action
is "[c]" for an empty cell c. Returns: win +1, loss -1, draw 0.
"""
from __future__ import annotations

import numpy as np

from jaxrl_self.envs.base import Env

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
MARKS = "xo"
RULES = "TicTacToe, cells 0-8, 3 in a row wins. Reply \\boxed{cell}."
EMPTY = "." * 9


def winner(board: str):
    """0 or 1 when that player has three in a row, else None."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return MARKS.index(board[a])
    return None


def is_over(board: str) -> bool:
    return winner(board) is not None or "." not in board


def board_text(board: str) -> str:
    """"x1o|345|67x": the rows, separated, each empty cell shown as its number (the move that takes
    it), so that a legal answer is a digit of the board (docs/games.md#tictactoe)."""
    cells = "".join(str(i) if mark == "." else mark for i, mark in enumerate(board))
    return "|".join(cells[i : i + 3] for i in (0, 3, 6))


class TicTacToe(Env):
    """TicTacToe (module docstring)."""

    name = "tictactoe"
    num_players = 2

    def reset(self, rng: np.random.Generator):
        return EMPTY, 0

    def current_player(self, state) -> int:
        return state[1]

    def legal_actions(self, state) -> list[str]:
        return [f"[{i}]" for i, cell in enumerate(state[0]) if cell == "."]

    def step(self, state, action: str):
        board, player = state
        cell = int(action[1:-1])
        board = board[:cell] + MARKS[player] + board[cell + 1 :]
        return (board, 1 - player), is_over(board)

    def returns(self, state):
        w = winner(state[0])
        return (0.0, 0.0) if w is None else ((1.0, -1.0) if w == 0 else (-1.0, 1.0))

    def observation(self, state, player: int) -> str:
        board = state[0]
        head = f"{RULES}\nYou are Player {player} ({MARKS[player]}).\n" if board.count(MARKS[player]) == 0 else "\n"
        return f"{head}Board: {board_text(board)}\n"
