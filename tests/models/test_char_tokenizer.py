"""CharTokenizer: special tokens matched first (longest first), one token per other character."""
import pytest

from jaxrl_self.models.tokenizer import CharTokenizer


def test_specials_longest_first_and_round_trip():
    tokenizer = CharTokenizer("ab<>/", ["<a>", "<ab>", "</a>"])
    ids = tokenizer.encode("<ab>a<a>b</a><")
    pieces = [tokenizer.vocab[i] for i in ids]
    assert pieces == ["<ab>", "a", "<a>", "b", "</a>", "<"]
    assert tokenizer.decode(ids) == "<ab>a<a>b</a><"
    assert tokenizer.encode("") == []


def test_unknown_character_names_it_and_its_offset():
    tokenizer = CharTokenizer("ab", ["<x>"])
    with pytest.raises(ValueError, match=r"character 'c' at offset 4 of '<x>ac'"):
        tokenizer.encode("<x>ac")
