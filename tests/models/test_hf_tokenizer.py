"""HFTokenizer against transformers' fast tokenizer on a BPE tokenizer trained here (nothing downloaded)."""
import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from jaxrl_self.models.hf_config import CheckpointError
from jaxrl_self.models.hf_tokenizer import HFTokenizer

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    "{% if tools is not none %}{{ raise_exception('no tools here') }}{% endif %}"
)
CORPUS = ["hello world, the quick brown fox jumps over the lazy dog", "What is 12 + 30? The answer is 42.",
          "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."]
TEXTS = ["hello world", "The answer is 42.", "  spaces\tand\nnewlines ", "unseen wörds ✓ <|im_end|> inline", ""]
MESSAGES = [{"role": "user", "content": "What is 2 + 3?  "}, {"role": "assistant", "content": "5"},
            {"role": "user", "content": "And 4 + 4?"}]


def _save_bpe(directory, with_bos: bool):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    kwargs = dict(eos_token="<|im_end|>", chat_template=CHATML)
    if with_bos:
        bos = tokenizer.token_to_id("<s>")
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
        kwargs.update(bos_token="<s>", pad_token="<|endoftext|>")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module", params=["chatml-no-bos-no-pad", "with-bos-and-pad"])
def tokenizers_pair(request, tmp_path_factory):
    directory = _save_bpe(tmp_path_factory.mktemp(request.param), with_bos=request.param == "with-bos-and-pad")
    return HFTokenizer(directory), AutoTokenizer.from_pretrained(directory), request.param


def test_encode_decode_match_transformers(tokenizers_pair):
    ours, theirs, _ = tokenizers_pair
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special_tokens=True) == theirs.encode(text, add_special_tokens=True)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ours.encode("hello world")) == "hello world"
    assert ours.vocab_size == len(theirs)


def test_special_token_ids(tokenizers_pair):
    ours, theirs, name = tokenizers_pair
    assert ours.eos_id == theirs.eos_token_id
    assert ours.bos_id == theirs.bos_token_id
    if name == "with-bos-and-pad":
        assert ours.pad_id == theirs.pad_token_id != ours.eos_id
    else:
        assert theirs.pad_token_id is None and ours.pad_id == ours.eos_id and ours.bos_id is None


def test_chat_template_matches_transformers(tokenizers_pair):
    ours, theirs, _ = tokenizers_pair
    for add_generation_prompt in (True, False):
        expected = theirs.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=False)
        assert ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt) == expected
    assert ours.apply_chat_template(MESSAGES).endswith("<|im_start|>assistant\n")


def test_encode_batch_pads_left_and_right(tokenizers_pair):
    ours, _, _ = tokenizers_pair
    texts = ["hello world", "The answer is 42."]
    lengths = [len(ours.encode(t)) for t in texts]
    tokens, mask = ours.encode_batch(texts, length=12, side="left")
    assert tokens.shape == mask.shape == (2, 12) and tokens.dtype == np.int32
    assert mask.sum(axis=1).tolist() == lengths
    assert tokens[0, -lengths[0]:].tolist() == ours.encode(texts[0]) and (tokens[0, :-lengths[0]] == ours.pad_id).all()
    tokens, mask = ours.encode_batch(texts, length=12, side="right", add_eos=True)
    assert tokens[1, :lengths[1] + 1].tolist() == ours.encode(texts[1]) + [ours.eos_id] and not mask[1, lengths[1] + 1:].any()


def test_chat_template_in_tokenizer_config_is_read(tmp_path):
    directory = _save_bpe(tmp_path, with_bos=False)
    os.remove(os.path.join(directory, "chat_template.jinja"))
    with open(os.path.join(directory, "tokenizer_config.json")) as f:
        config = json.load(f)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({**config, "chat_template": "{{ messages[0]['content'] }}!"}, f)
    assert HFTokenizer(directory).apply_chat_template(MESSAGES) == "What is 2 + 3?  !"


def test_missing_files_and_tokens(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json in tokenizer directory"):
        HFTokenizer(str(tmp_path))
    directory = _save_bpe(tmp_path / "t", with_bos=False)
    os.remove(os.path.join(directory, "tokenizer_config.json"))
    with pytest.raises(CheckpointError, match="no eos_token"):
        HFTokenizer(directory)
