"""Tokenise once: the cache returns what the tokenizer returns, and any change makes a new entry."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.token_cache import tokenize, tokenize_with_lengths
from src.pretrained import load_tokenizer

TEXTS = ["I love this!", "What a terrible, terrible day.", "ok", "[NAME] said it was fine"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")


def test_cached_ids_equal_fresh_tokenisation(tmp_path, tokenizer, monkeypatch):
    first = tokenize(tokenizer, TEXTS, 8, tmp_path)
    expected = tokenizer(TEXTS, truncation=True, max_length=8)["input_ids"]
    assert [row.tolist() for row in first] == expected
    assert len(list(tmp_path.glob("*.npz"))) == 1

    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenised again"))
    second = tokenize(tokenizer, TEXTS, 8, tmp_path)
    assert [row.tolist() for row in second] == expected


def test_an_empty_split_stays_empty_through_the_cache(tmp_path, tokenizer):
    assert tokenize(tokenizer, [], 8, tmp_path) == [] and tokenize(tokenizer, [], 8, tmp_path) == []


def test_changed_text_or_length_gets_a_new_entry(tmp_path, tokenizer):
    tokenize(tokenizer, TEXTS, 8, tmp_path)
    edited = tokenize(tokenizer, TEXTS[:-1] + ["[RELIGION] said it was fine"], 8, tmp_path)
    longer = tokenize(tokenizer, TEXTS, 32, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert edited[-1].tolist() != tokenize(tokenizer, TEXTS, 8, tmp_path)[-1].tolist()
    assert len(longer[1]) > 8 and all(len(row) <= 8 for row in tokenize(tokenizer, TEXTS, 8, tmp_path))


def test_without_cache_dir_nothing_is_written(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = tokenize(tokenizer, TEXTS, 8, None)
    assert all(isinstance(row, np.ndarray) for row in rows) and not list(tmp_path.iterdir())


def roberta_style_tokenizer():
    """A word-level fast tokenizer with RoBERTa's layout (``<s> A </s>``), unlike BERT's ``[CLS] A [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in TEXTS for w in text.lower().replace(",", " ").replace(".", " ").split()})
    vocab = {token: i for i, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1),
                                                                                                   ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


@pytest.mark.parametrize("kind", ["bert", "roberta-style"])
@pytest.mark.parametrize("max_length", [3, 5, 64])
def test_lengths_before_truncation_in_one_pass(tmp_path, tokenizer, kind, max_length):
    """The ids equal plain truncated tokenisation and the lengths equal untruncated tokenisation, also cached."""
    tok = tokenizer if kind == "bert" else roberta_style_tokenizer()
    texts = [*TEXTS, " ".join(TEXTS * 9)]
    truncated = tok(texts, truncation=True, max_length=max_length)["input_ids"]
    whole = [len(ids) for ids in tok(texts, verbose=False)["input_ids"]]
    for _ in range(2):  # fresh, then from the cache
        ids, lengths, covered = tokenize_with_lengths(tok, texts, max_length, tmp_path)
        assert [row.tolist() for row in ids] == truncated and lengths.tolist() == whole
        assert covered.tolist() == [min(n, max_length) for n in whole]
    assert whole[-1] > 64  # the long text really overflows every max_length here
