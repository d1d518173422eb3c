"""A small recursive-descent parser from normalised LaTeX / plain math to a tree of whitelisted
nodes, so that model text reaches sympy without ``eval`` or ``sympy.parsing`` (which needs antlr).

Tree nodes are tuples: ("num", "1.5"), ("sym", "x"), ("const", "pi"|"oo"), ("neg", a),
("add"|"sub"|"mul"|"div"|"pow", a, b), ("func", name, a), ("root", radicand, index).
"""
from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[A-Za-z]+|[A-Za-z]|[-+*/^_(){}\[\]|])")
_FUNCTIONS = {"\\sin": "sin", "\\cos": "cos", "\\tan": "tan", "\\ln": "log", "\\log": "log",
              "\\exp": "exp", "\\sec": "sec", "\\csc": "csc", "\\cot": "cot"}
_CONSTANTS = {"\\pi": "pi", "\\infty": "oo"}
_GREEK = {"\\" + name for name in (
    "alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "phi", "psi", "omega",
    "sigma", "tau", "rho", "eta", "kappa", "nu", "xi", "zeta", "chi")}
_MULTIPLY = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}


def _tokenize(s: str) -> list[str] | None:
    tokens, position = [], 0
    while position < len(s):
        match = _TOKEN.match(s, position)
        if match is None:
            return None if s[position:].strip() else tokens
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _LatexParser:
    """Recursive descent over the token list; raises ValueError on anything unsupported."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.position = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected!r}, got {token!r}")
        self.position += 1
        return token

    def parse(self) -> tuple:
        tree = self.expression()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return tree

    def expression(self) -> tuple:
        tree = self.term()
        while self.peek() in ("+", "-"):
            tree = ("add" if self.take() == "+" else "sub", tree, self.term())
        return tree

    def term(self) -> tuple:
        tree = self.unary()
        while True:
            token = self.peek()
            if token in _MULTIPLY or token in _DIVIDE:
                self.take()
                tree = ("mul" if token in _MULTIPLY else "div", tree, self.unary())
            elif token is not None and self.starts_atom(token):
                tree = ("mul", tree, self.power())
            else:
                return tree

    def starts_atom(self, token: str) -> bool:
        return (token[0].isdigit() or token[0] == "." or token.isalpha() or token in "({|"
                or token in ("\\frac", "\\sqrt") or token in _FUNCTIONS or token in _CONSTANTS
                or token in _GREEK)

    def unary(self) -> tuple:
        if self.peek() in ("+", "-"):
            sign = self.take()
            operand = self.unary()
            return ("neg", operand) if sign == "-" else operand
        return self.power()

    def power(self) -> tuple:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return ("pow", base, self.argument())
        return base

    def argument(self) -> tuple:
        """A LaTeX macro argument: ``{expr}`` or a single token (one digit of a number)."""
        token = self.peek()
        if token == "{":
            return self.atom()
        if token is not None and token[0].isdigit() and len(token) > 1:
            self.tokens[self.position] = token[1:]
            return ("num", token[0])
        if token is not None and token.isalpha() and len(token) == 1:
            self.take()
            return ("sym", token)
        return self.atom()

    def subscript_name(self, name: str) -> str:
        if self.peek() != "_":
            return name
        self.take()
        if self.peek() == "{":
            self.take()
            parts = []
            while self.peek() not in ("}", None):
                parts.append(self.take())
            self.take("}")
        else:
            parts = [self.take()]
        if not all(p.isalnum() for p in parts):
            raise ValueError("unsupported subscript")
        return f"{name}_{''.join(parts)}"

    def atom(self) -> tuple:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return ("num", token)
        if token.isalpha() and len(token) == 1:
            return ("sym", self.subscript_name(token))
        if token in _GREEK:
            return ("sym", self.subscript_name(token[1:]))
        if token in _CONSTANTS:
            return ("const", _CONSTANTS[token])
        if token in ("(", "{", "|"):
            inner = self.expression()
            self.take({"(": ")", "{": "}", "|": "|"}[token])
            return ("func", "Abs", inner) if token == "|" else inner
        if token == "\\frac":
            return ("div", self.argument(), self.argument())
        if token == "\\sqrt":
            index = ("num", "2")
            if self.peek() == "[":
                self.take()
                index = self.expression()
                self.take("]")
            return ("root", self.argument(), index)
        if token in _FUNCTIONS:
            operand = self.atom() if self.peek() in ("(", "{") else self.unary()
            return ("func", _FUNCTIONS[token], operand)
        raise ValueError(f"unsupported token {token!r}")


def parse_latex_expression(s: str) -> tuple | None:
    """Parse a normalised LaTeX/plain math expression into a whitelisted tree, or None."""
    tokens = _tokenize(s)
    if not tokens:
        return None
    try:
        return _LatexParser(tokens).parse()
    except (ValueError, RecursionError):
        return None
