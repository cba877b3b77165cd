"""Helpers shared by the tests: paths, the compose API, tiny keyword datasets, the CLI as a subprocess, and the
numpy reference formulas of the losses."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GOEMOTIONS = ROOT.parent / "shared" / "data" / "goemotions"  # a local copy on development machines; tests skip without
QUIET = ["trainer.enable_progress_bar=false"]

# ---------------------------------------------------------------- configs


def compose_train(tmp_path: Path, overrides: list[str]):
    """The train config as the CLI would build it, with every path under ``tmp_path``."""
    import src.train  # noqa: F401  (registers the lw.* resolvers)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


# ---------------------------------------------------------------- tiny keyword datasets

WORDS = {
    "joy": ["sunny", "party", "great", "wonderful"],
    "anger": ["furious", "rude", "unfair", "yelling"],
    "fear": ["scary", "dark", "alone", "shaking"],
}
FILLER = ["the", "day", "was", "and", "then", "we", "it", "really", "so"]


def write_dataset(directory: Path, multilabel: bool, rows: int = 96, seed: int = 0, lead: int = 0) -> dict[str, Path]:
    """JSONL splits whose label is signalled by keywords, so even a tiny model can learn something. ``lead > 0``:
    the keywords come last, after that many filler words (long texts whose evidence lies beyond a short window)."""
    rng = random.Random(seed)
    names = list(WORDS)
    paths = {}
    for split, count in (("train", rows), ("val", rows // 3), ("test", rows // 3)):
        lines = []
        for _ in range(count):
            labels = rng.sample(names, rng.choice([1, 2]) if multilabel else 1)
            if lead:
                words = [rng.choice(FILLER) for _ in range(lead)] + [rng.choice(WORDS[name]) for name in labels]
            else:
                words = [rng.choice(WORDS[name]) for name in labels] + rng.sample(FILLER, 4)
                rng.shuffle(words)
            lines.append(json.dumps({"text": " ".join(words), "labels": labels if multilabel else labels[0]}))
        paths[split] = directory / f"{split}.jsonl"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


def on_tiny(tiny_bert: str, paths: dict[str, Path]) -> list[str]:
    """Overrides that train the tiny BERT on JSONL splits."""
    return ["data=jsonl", *(f"data.source.{split}={path}" for split, path in paths.items()),
            f"model.name_or_path={tiny_bert}"]


def quick(tiny_bert: str, paths: dict[str, Path], *extra: str) -> list[str]:
    return [*on_tiny(tiny_bert, paths), "trainer.max_epochs=3", *QUIET, "optim.lr=1e-3", "data.batch_size=16", *extra]


def assert_same_fit_without_dropout(tmp_path: Path, tiny_bert: str, plain: str, other: str) -> None:
    """Two real fits of the tiny BERT with every dropout at 0, in fp32, differing only in one override (``plain``,
    ``other``): a training option that acts through dropout masks alone must leave the best weights as they are
    (up to the order of floating-point sums)."""
    import torch

    from src.train import train

    paths = write_dataset(tmp_path, multilabel=True)
    no_dropout = ("model.dropout=0",
                  "model.encoder_overrides={hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}",
                  "trainer.precision=32-true", "trainer.max_epochs=2", "logger=csv", "report=false")
    weights = []
    for name, override in (("plain", plain), ("other", other)):
        summary = train(compose_train(tmp_path / name, quick(tiny_bert, paths, *no_dropout, override)))
        weights.append(torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=2e-5, rtol=1e-4)


def tiny_data_args(tmp_path: Path, tiny_bert: str, multilabel: bool) -> list[str]:
    return [*on_tiny(tiny_bert, write_dataset(tmp_path, multilabel=multilabel)), "optim.lr=1e-3", *QUIET]


# ---------------------------------------------------------------- the CLI


def run_cli(cwd: Path, *args: str, module: str = "src.train", check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, input=stdin,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Until ``url`` answers 200; an AssertionError with the server's log when it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{process.args[:4]} did not come up on {url}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def runs_in(store: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


# ---------------------------------------------------------------- loss references (numpy)


def np_bce(logits: np.ndarray, targets: np.ndarray, pos_weight: np.ndarray | None = None) -> float:
    """mean over B x C of -(w_pos * y * log sigmoid(x) + (1 - y) * log(1 - sigmoid(x)))."""
    x = logits.astype(np.float64)
    y = targets.astype(np.float64)
    w = np.ones(x.shape[-1]) if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    log_sig = -np.logaddexp(0.0, -x)  # log sigmoid(x)
    log_one_minus_sig = -np.logaddexp(0.0, x)  # log(1 - sigmoid(x))
    return float(np.mean(-(w * y * log_sig + (1.0 - y) * log_one_minus_sig)))


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_ce(logits: np.ndarray, targets: np.ndarray, class_weights=None, smoothing: float = 0.0) -> float:
    """Per example -sum_c w_c q_c log p_c with q = (1 - eps) one_hot + eps / C, summed and divided by
    sum_n w_{y_n} (PyTorch's documented weighted mean; plain mean when there are no weights). ``targets``: class ids."""
    num_classes = logits.shape[1]
    w = np.ones(num_classes) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    q = np.full(logits.shape, smoothing / num_classes)
    q[np.arange(len(targets)), targets] += 1.0 - smoothing
    per_example = -(w[None, :] * q * np_log_softmax(logits)).sum(axis=1)
    return float(per_example.sum() / w[targets].sum())


def one_hot(class_ids, num_classes: int):
    """Class ids as the float one-hot rows every loss takes (a torch tensor)."""
    import torch

    return torch.nn.functional.one_hot(torch.as_tensor(class_ids).long(), num_classes).float()


# ---------------------------------------------------------------- tiny encoders of every shipped architecture

#: Each shipped ``model=`` option's encoder (conf/model/*.yaml ``name_or_path``) and its Hugging Face model type.
SHIPPED_ENCODERS = {
    "sentence-transformers/all-MiniLM-L6-v2": "bert",
    "bert-base-uncased": "bert",
    "distilbert/distilbert-base-uncased": "distilbert",
    "FacebookAI/roberta-base": "roberta",
    "FacebookAI/roberta-large": "roberta",
    "microsoft/deberta-v3-base": "deberta-v2",
    "microsoft/deberta-v3-large": "deberta-v2",
}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 130}


def _trained_tokenizer(model_type: str):
    """A real tokenizer of the architecture's own kind, trained on the keyword datasets' words: byte-level BPE for
    RoBERTa, a SentencePiece-style unigram model for DeBERTa-v3; the bundled MiniLM WordPiece for BERT-likes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, DebertaV2Tokenizer, DistilBertTokenizer, RobertaTokenizer

    from src.pretrained import resolve

    corpus = [" ".join(words) for words in WORDS.values()] + [" ".join(FILLER)] * 3
    if model_type in ("bert", "distilbert"):
        minilm = resolve("sentence-transformers/all-MiniLM-L6-v2")
        return AutoTokenizer.from_pretrained(minilm) if model_type == "bert" else DistilBertTokenizer.from_pretrained(
            minilm)
    if model_type == "roberta":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        state = json.loads(bpe.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in state["merges"]]
        return RobertaTokenizer(vocab=state["vocab"], merges=merges)
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], unk_token="[UNK]"))
    return DebertaV2Tokenizer(vocab=[tuple(v) for v in json.loads(unigram.to_str())["model"]["vocab"]], unk_id=1)


def save_tiny_encoder(directory: Path, model_type: str) -> str:
    """A 2-layer, 32-wide encoder of ``model_type`` (random weights, the architecture's own config defaults: e.g.
    DeBERTa-v2's relative attention as DeBERTa-v3 uses it) saved with a real tokenizer; returns the directory."""
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer = _trained_tokenizer(model_type)
    extra = {"intermediate_size": 64}
    if model_type == "distilbert":
        extra = {"hidden_dim": 64}
    elif model_type == "roberta":
        extra |= {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": 0, "eos_token_id": 2, "type_vocab_size": 1}
    elif model_type == "deberta-v2":  # deberta-v3-base's attention settings
        extra |= {"relative_attention": True, "position_buckets": 16, "max_relative_positions": -1,
                  "pos_att_type": ["p2c", "c2p"], "norm_rel_ebd": "layer_norm", "share_att_key": True,
                  "position_biased_input": False, "type_vocab_size": 0, "pad_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **TINY, **extra)
    with torch.random.fork_rng():  # seeded: every session tests the same network
        torch.manual_seed(0)
        AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def hand_folds(n: int, split_seeds) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) rows of each random halving, both ways round, written out apart from src.metrics: numpy's
    permutation of the n rows under each split seed, cut at n // 2."""
    folds = []
    for split_seed in split_seeds:
        order = np.random.default_rng(split_seed).permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        folds += [halves, halves[::-1]]
    return folds
