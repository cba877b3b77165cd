"""Fixtures: a tiny randomly initialised BERT saved with the real MiniLM tokenizer. Helpers are in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # pytest-xdist runs one worker per core: each worker (and the CLI runs it starts) gets its share of the cores,
    # not a thread per core each, which would oversubscribe the machine workers-fold.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT (random weights, seeded: every session tests the same network) saved with the bundled
    MiniLM tokenizer: trains in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from src.pretrained import resolve

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, tiny_bert):
    """``tiny_encoder(model_type)``: a tiny random encoder of that architecture with a real tokenizer, made once."""
    from tests.helpers import save_tiny_encoder

    made = {"bert": tiny_bert}

    def make(model_type: str) -> str:
        if model_type not in made:
            made[model_type] = save_tiny_encoder(tmp_path_factory.mktemp(f"tiny-{model_type}"), model_type)
        return made[model_type]

    return make
