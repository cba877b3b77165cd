"""benchmarks/: long_documents.py's GoEmotions threads and its skip without the data; throughput.py's ISA cap."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.fixture
def long_documents(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports throughput.py beside it
    spec = importlib.util.spec_from_file_location("long_documents", ROOT / "benchmarks" / "long_documents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_thread_labels_are_the_union_of_its_comments(long_documents):
    names = ["anger", "joy", "fear", "neutral"]
    row = long_documents.thread_row([("so unfair", [0]), ("yay", [1, 3]), ("ok", [3]), ("argh", [0])], names)
    assert row == {"text": "so unfair\nyay\nok\nargh", "labels": ["anger", "joy", "neutral"]}


def test_threads_are_seeded_and_never_reuse_a_comment(long_documents):
    comments = [(f"comment {i}", [i % 3]) for i in range(50)]
    threads = long_documents.sample_threads(comments, count=6, k=8, seed=1)
    texts = [text for members in threads for text, _ in members]
    assert [len(members) for members in threads] == [8] * 6
    assert len(set(texts)) == 48
    assert threads == long_documents.sample_threads(comments, count=6, k=8, seed=1)
    assert threads != long_documents.sample_threads(comments, count=6, k=8, seed=2)
    with pytest.raises(ValueError, match="at most 6 threads of 8"):
        long_documents.sample_threads(comments, count=7, k=8, seed=1)


def test_first_window_labels_counts_comments_starting_inside_it(long_documents):
    from transformers import AutoTokenizer

    from src.pretrained import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(long_documents.MODEL))
    # "a" is one token: the comments start at tokens 0, 100 and 130 of a 126-token window (128 less [CLS], [SEP])
    thread = [(" ".join(["a"] * 100), [0]), (" ".join(["a"] * 30), [1]), ("a a", [1, 2])]
    assert long_documents.first_window_labels([thread], tokenizer) == pytest.approx(2 / 3)  # {0, 1} of {0, 1, 2}
    assert long_documents.first_window_labels([thread[1:]], tokenizer) == 1.0


def test_skips_without_the_data(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_documents.py"), "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"skipped: no GoEmotions train.tsv, dev.tsv and labels.txt in {tmp_path}")


def test_every_label_baseline_matches_sklearn(long_documents):
    import numpy as np
    from sklearn.metrics import f1_score

    names = ["anger", "joy", "fear", "neutral"]
    rows = [{"labels": ["anger", "neutral"]}, {"labels": ["joy", "neutral"]}, {"labels": ["neutral"]},
            {"labels": ["anger", "joy"]}, {"labels": ["neutral"]}]
    truth = np.array([[name in row["labels"] for name in names] for row in rows])
    expected = f1_score(truth, np.ones_like(truth), average="macro", zero_division=0)  # fear: never present, F1 0
    assert long_documents.every_label_macro_f1(rows, names) == pytest.approx(expected)


def test_sparse_threads_keep_emotional_comments_unique_and_reuse_only_fillers(long_documents):
    neutral = 3
    calm = [(f"calm {i}", [neutral]) for i in range(10)]
    moved = [(f"moved {i}", [i % 3]) for i in range(40)]
    comments = calm + moved + [("mixed", [0, neutral])]  # neither a filler nor an emotional comment
    with pytest.raises(ValueError, match="or pass --reuse-fillers"):
        long_documents.sample_sparse_threads(comments, count=30, k=5, emotional=1, neutral=neutral, seed=1)
    threads = long_documents.sample_sparse_threads(comments, count=30, k=5, emotional=1, neutral=neutral, seed=1,
                                                    reuse_fillers=True)
    emotional = [text for members in threads for text, labels in members if neutral not in labels]
    assert len(emotional) == len(set(emotional)) == 30 and "mixed" not in emotional
    for members in threads:
        fillers = [text for text, labels in members if labels == [neutral]]
        assert len(fillers) == len(set(fillers)) == 4  # no filler twice within one thread
    assert len({text for members in threads for text, labels in members if labels == [neutral]}) <= 10
    with pytest.raises(ValueError, match="need 41 emotional comments; the file has 40"):
        long_documents.sample_sparse_threads(comments, count=41, k=5, emotional=1, neutral=neutral, seed=1,
                                              reuse_fillers=True)


def test_regroup_follows_the_papers_ekman_mapping(long_documents):
    from src.data.sources.goemotions import LABELS

    mapping = {"anger": ["anger", "annoyance", "disapproval"], "disgust": ["disgust"], "fear": ["fear", "nervousness"],
               "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief",
                       "pride", "admiration", "desire", "caring"],
               "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
               "surprise": ["surprise", "realization", "confusion", "curiosity"]}  # ekman_mapping.json, by hand
    names = list(LABELS)
    comments = [("a", [names.index("grief"), names.index("remorse")]), ("b", [names.index("neutral")]),
                ("c", [names.index("curiosity"), names.index("annoyance")])]
    regrouped, groups = long_documents.regroup(comments, names, "ekman")
    assert groups == [*mapping, "neutral"]
    assert [[groups[i] for i in ids] for _, ids in regrouped] == [["sadness"], ["neutral"], ["anger", "surprise"]]
    assert long_documents.regroup(comments, names, "original") == (comments, names)



def test_init_starts_both_arms_from_the_checkpoint(long_documents, tmp_path):
    import argparse

    args = argparse.Namespace(batch_size=4, loss="bce", lr=1e-4, epochs=1, seed=1, max_chunks=2, aggregate="max",
                              override=[], init=tmp_path / "best.ckpt")
    for arm in long_documents.ARMS:
        assert f"init_from={tmp_path / 'best.ckpt'}" in long_documents.arm_overrides(arm, args, tmp_path, ["a"])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the AVX2 cap is x86's")
def test_throughput_cap_isa_runs_torch_as_on_an_avx2_cpu():
    """--cap-isa avx2 sets the caps before any kernel runs: torch dispatches AVX2 kernels, bf16 counts as not native
    (so both peers train fp32) and the hardware line says so."""
    code = ("import sys, os; sys.argv = ['throughput.py', '--cap-isa', 'avx2', '--data-dir', sys.argv[1]];"
            "import throughput; throughput.main();"
            "import torch; print(torch.backends.cpu.get_cpu_capability(), throughput.native_bf16());"
            "print(throughput.hardware())")
    done = subprocess.run([sys.executable, "-c", code, "/nonexistent"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT / "benchmarks", env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    skipped, capability, hardware = done.stdout.splitlines()
    assert skipped.startswith("skipped: no GoEmotions train.tsv")
    assert capability == "AVX2 False"
    assert hardware.endswith("capped to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "
                             "MKL_ENABLE_INSTRUCTIONS=AVX2)")
