"""Tokenise once: the cache returns what the tokenizer returns, and any change makes a new entry."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.token_cache import tokenize
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
