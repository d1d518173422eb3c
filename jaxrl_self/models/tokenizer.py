"""Tokenizers behind one small interface: `encode`, `decode`, `encode_batch`, ids of pad/eos/bos.

`CharTokenizer` serves the procedural tasks (one token per character, plus multi-character special
tokens such as "<answer>"). The Hugging Face wrapper (over the `tokenizers` library) exposes the
same interface, so samplers, tasks and trainers never care which one they hold.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def pad_batch(sequences: Sequence[Sequence[int]], length: int, pad_id: int, side: str = "left"):
    """Pads token lists to `[N, length] int32` plus a `[N, length] bool` mask; raises if one is too long."""
    tokens = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), bool)
    for i, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"sequence {i} has {len(seq)} tokens, more than the padded length {length}")
        if not len(seq):
            continue
        cols = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
        tokens[i, cols] = seq
        mask[i, cols] = True
    return tokens, mask


def bucket_length(n: int, multiple: int = 16) -> int:
    """Smallest multiple of `multiple` >= n: pads shapes to a few buckets to bound recompilation."""
    return max(multiple, -(-n // multiple) * multiple)


class CharTokenizer:
    """Character-level tokenizer over a fixed alphabet plus special tokens (matched first, greedily)."""

    def __init__(self, alphabet: str, special_tokens: Sequence[str] = ()):
        self.special_tokens = [PAD, BOS, EOS, *special_tokens]
        self.vocab = self.special_tokens + list(dict.fromkeys(alphabet))
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        # one piece per match: a special token (longest first) or else any single character
        specials_longest_first = sorted(special_tokens, key=len, reverse=True)
        self._pieces = re.compile("|".join([*map(re.escape, specials_longest_first), "."]), re.DOTALL)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = []
        for match in self._pieces.finditer(text):
            piece = match.group()
            if piece not in self.token_to_id:
                raise ValueError(f"character {piece!r} at offset {match.start()} of {text!r} is not in the tokenizer's alphabet")
            ids.append(self.token_to_id[piece])
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; pad/bos/eos are dropped when `skip_special_tokens` (task tags are kept)."""
        drop = {self.pad_id, self.bos_id, self.eos_id} if skip_special_tokens else set()
        return "".join(self.vocab[i] for i in ids if int(i) not in drop and 0 <= int(i) < len(self.vocab))

    def encode_batch(self, texts: Sequence[str], length: int, side: str = "left", add_eos: bool = False):
        """`[N, length] int32` ids and `[N, length] bool` mask (left padding for prompts)."""
        seqs = [self.encode(t) + ([self.eos_id] if add_eos else []) for t in texts]
        return pad_batch(seqs, length, self.pad_id, side)


class ExtendedTokenizer:
    """`base` with `extra_tokens` appended after its vocabulary (ids base.vocab_size, +1, ...), so
    base token ids are unchanged. Extra tokens are matched in the text before the base encoder."""

    def __init__(self, base, extra_tokens: Sequence[str]):
        self.base, self.extra_tokens = base, tuple(extra_tokens)
        self.pad_id, self.bos_id, self.eos_id = base.pad_id, base.bos_id, base.eos_id
        self.vocab_size = base.vocab_size + len(self.extra_tokens)
        self._ids = {token: base.vocab_size + i for i, token in enumerate(self.extra_tokens)}
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.extra_tokens, key=len, reverse=True)) + ")")

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._split.split(text):
            if piece in self._ids:
                ids.append(self._ids[piece])
            elif piece:
                ids += self.base.encode(piece)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text, run = [], []
        for i in map(int, ids):
            if i < self.base.vocab_size:
                run.append(i)
                continue
            text.append(self.base.decode(run, skip_special_tokens))
            run = []
            if i < self.vocab_size:
                text.append(self.extra_tokens[i - self.base.vocab_size])
        return "".join(text) + self.base.decode(run, skip_special_tokens)


def with_reserved_token(tokenizer, token: str):
    """(tokenizer, id) of `token` as one reserved token: the tokenizer's own when it encodes `token`
    as a single id (a pretrained tokenizer's unused special token), else an `ExtendedTokenizer`
    that adds it after the vocabulary."""
    try:
        ids = tokenizer.encode(token)
    except ValueError:  # a character tokenizer without the token's characters
        ids = []
    if len(ids) == 1:
        return tokenizer, ids[0]
    extended = ExtendedTokenizer(tokenizer, [token])
    return extended, extended.vocab_size - 1
