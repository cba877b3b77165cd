"""Training and inference speed of labelwise's default path against Hugging Face's Trainer, at its defaults and as an
informed user tunes it.

    python benchmarks/throughput.py [--data-dir ../shared/data/goemotions] [--train-size 4000] [--epochs 2]

Same model (bundled MiniLM), same GoEmotions subset, batch size, max length, learning rate and number of
optimizer steps: (a) HF Trainer + DataCollatorWithPadding at its defaults, (b) the same tuned
(`train_sampling_strategy="group_by_length"`, `optim="adamw_torch_fused"`, `bf16=True` only where the hardware has
native bf16), (c) `src.train` with its defaults. Each run is a subprocess (clean peak RSS), alternating a, b, c, a, b,
c. The output names the hardware class (CPU model and flags avx2 / avx512_bf16 / amx, or the GPU) and the precision
each arm ran in, measures the matmul roofline in the same run (a large fp32 matmul, and bf16 where native) and gives
each arm's share of it, counting 6 x (non-embedding parameters) + 6 x layers x length x width FLOPs per trained token
(Kaplan et al. 2020) over the subset's real token lengths. Then inference: `Predictor.scores` (the engine behind
`src.predict`) on torch and, with the onnx extra, on ONNX Runtime fp32 and dynamic int8 (`engine=onnx
[quantize=int8]`), each against `pipeline("text-classification")` on the same texts. Last line:
`train speedup: X.XX  inference speedup: Y.YY`, training against the tuned HF arm and inference for the fastest
engine. `--inference-only` skips the training runs.

`--cap-isa avx2` runs everything as on a CPU with AVX2 only (no AVX-512, no bf16), on a newer CPU: it caps torch's own
kernels (`ATEN_CPU_CAPABILITY`), oneDNN (`ONEDNN_MAX_CPU_ISA`) and MKL's matmuls (`MKL_ENABLE_INSTRUCTIONS`), so
bf16 is emulated there and both peers train in fp32. Clock, caches and memory stay the faster host's, so compare
the ratios, not the rates, with a real AVX2 CPU. ONNX Runtime has no such cap: its engines are skipped then.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "goemotions"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def read_tsv(path: Path, limit: int) -> list[tuple[str, list[int]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [(text, [int(i) for i in ids.split(",")]) for text, ids, *_ in rows]


def write_subset(args, directory: Path) -> None:
    """The first ``train_size`` / ``val_size`` rows of train.tsv / dev.tsv, in GoEmotions' own format."""
    for name, limit in (("train.tsv", args.train_size), ("dev.tsv", args.val_size)):
        with (args.data_dir / name).open(encoding="utf-8") as source, (directory / name).open("w") as target:
            for line_number, line in enumerate(source):
                if line_number == limit:
                    break
                target.write(line)


def macro_f1(scores, rows) -> float:
    import numpy as np
    from sklearn.metrics import f1_score

    truth = np.zeros_like(scores)
    for row, (_, ids) in enumerate(rows):
        truth[row, ids] = 1
    return float(f1_score(truth, scores > 0.5, average="macro", zero_division=0))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def native_bf16() -> bool:
    import torch

    from src.runtime import cpu_has_native_bf16

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_native_bf16()


def hardware() -> str:
    """The hardware class: the GPU, or the CPU model with the flags that decide the fast precision path."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    shown = [flag for flag in wanted if flag in flags]
    line = f"CPU {model}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"
    capped = {name: os.environ[name] for name in CAPS["avx2"] if name in os.environ}
    if capped:
        line += (f"; capped to {torch.backends.cpu.get_cpu_capability()} kernels ("
                 + " ".join(f"{name}={value}" for name, value in capped.items()) + ")")
    return line


def matmul_roofline(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a square matmul in ``dtype_name`` with torch's current threads (the best of ``repeats``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first warms up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_sample(subset: Path, args) -> float:
    """Training FLOPs of one sample of the subset: 6 N + 6 n_layer L d per real token (Kaplan et al. 2020), N the
    encoder's non-embedding parameters, L the text's own token length (padding is waste, not work)."""
    from transformers import AutoConfig, AutoTokenizer

    from src.pretrained import resolve

    path = resolve(MODEL)
    config = AutoConfig.from_pretrained(path)
    d, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * d * d + 4 * d + 2 * d * config.intermediate_size + config.intermediate_size + d + 4 * d
    non_embedding = layers * per_layer
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [text for text, _ in read_tsv(subset / "train.tsv", args.train_size)]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    return sum(6 * non_embedding * n + 6 * layers * n * n * d for n in lengths) / len(lengths)


def run_hf(args, subset: Path, tuned: bool = False) -> dict:
    """The peer: AutoModelForSequenceClassification + Trainer + DataCollatorWithPadding; ``tuned``: length-grouped
    batches, fused AdamW, and bf16 where native (emulated bf16 is far slower than fp32)."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from src.data.sources.goemotions import LABELS
    from src.pretrained import resolve

    path = resolve(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(LABELS), problem_type="multi_label_classification"
    )
    train_rows, val_rows = read_tsv(subset / "train.tsv", args.train_size), read_tsv(subset / "dev.tsv", args.val_size)

    def encode(rows):
        encoded = tokenizer([text for text, _ in rows], truncation=True, max_length=args.max_length)
        items = []
        for row, (_, ids) in enumerate(rows):
            labels = np.zeros(len(LABELS), dtype=np.float32)
            labels[ids] = 1
            items.append(
                {
                    "input_ids": encoded["input_ids"][row],
                    "attention_mask": encoded["attention_mask"][row],
                    "labels": labels,
                }
            )
        return items

    training_args = TrainingArguments(
        output_dir=str(subset / "hf"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        **({"train_sampling_strategy": "group_by_length", "optim": "adamw_torch_fused", "bf16": native_bf16()}
           if tuned else {}),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encode(train_rows),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logits = trainer.predict(encode(val_rows)).predictions
    return {
        "samples_per_s": len(train_rows) * args.epochs / seconds,
        "train_s": seconds,
        "val_macro_f1": macro_f1(1 / (1 + np.exp(-logits.astype(np.float32))), val_rows),
        "peak_rss_mb": peak_rss_mb(),
        "precision": "bf16-mixed" if tuned and native_bf16() else "32-true",
    }


class TrainTimer(L.Callback):
    """Wall time of training batches only, like the peer's ``trainer.train()`` with evaluation and saving
    off: each stretch runs from an epoch's first batch to the validation (and checkpoint saving) that ends
    it, or to the epoch's end."""

    def __init__(self):
        self.seconds, self.start = 0.0, None

    def on_train_batch_start(self, *_):
        if self.start is None:
            self.start = time.perf_counter()

    def _stop(self):
        if self.start is not None:
            self.seconds += time.perf_counter() - self.start
            self.start = None

    def on_validation_start(self, *_):  # trainer.training is False here: fit's stage is VALIDATING
        self._stop()

    def on_train_epoch_end(self, *_):
        self._stop()


def run_labelwise(args, subset: Path) -> dict:
    """Our default path through the real entry point; only the data, budget and learning rate are set."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import src.train as entry

    timer = TrainTimer()
    overrides = [
        "data=goemotions",
        f"data.source.data_dir={subset}",
        f"data.batch_size={args.batch_size}",
        f"data.max_length={args.max_length}",
        f"optim.lr={args.lr}",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.early_stopping=null",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "report=false",  # plots nobody reads here
        f"seed={args.seed}",
        *args.override,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(subset)
        cfg.paths.output_dir = str(subset / "labelwise")
    summary = entry.train(cfg, extra_callbacks=[timer])
    samples = args.train_size * args.epochs
    return {
        "samples_per_s": samples / timer.seconds,
        "train_s": timer.seconds,
        "val_macro_f1": summary["metrics"]["val"]["macro_f1"],
        "peak_rss_mb": peak_rss_mb(),
        "precision": str(cfg.trainer.precision),
    }


def run_inference(args, subset: Path) -> dict:
    """Texts/s of our engines and of a transformers pipeline on the same texts and model weights."""
    import importlib.util

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from src.data.sources.goemotions import LABELS
    from src.inference import Predictor
    from src.labels import LabelSpace
    from src.models.build import classifier
    from src.pretrained import resolve

    texts = [text for text, _ in read_tsv(subset / "dev.tsv", args.val_size)]
    path = resolve(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    net = classifier(MODEL, labels=LabelSpace("multilabel", LABELS), max_length=args.max_length).eval()
    engines = {"torch": Predictor(net, tokenizer, metadata={})}
    if importlib.util.find_spec("onnxruntime") and not args.cap_isa:  # ONNX Runtime would use the full ISA
        from src.onnx_engine import export_onnx, load_onnx

        for quantize in (None, "int8"):  # the random head makes an F1 check meaningless here: speed only
            directory = subset / f"onnx-{quantize or 'fp32'}"
            directory.mkdir()
            export_onnx(engines["torch"], directory, quantize=quantize, max_f1_loss=None)
            engines[f"onnx {quantize or 'fp32'}"] = load_onnx(directory)
    peer = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS))
    classify = pipeline("text-classification", model=peer, tokenizer=tokenizer, device=-1, top_k=None)
    results = {}

    def timed(name: str, run) -> None:
        start = time.perf_counter()
        run()
        results[name] = max(results.get(name, 0), len(texts) / (time.perf_counter() - start))

    for _ in range(2):  # alternate, keep the better of two
        for name, engine in engines.items():
            timed(name, lambda engine=engine: engine.scores(texts))
        with torch.inference_mode():
            timed("pipeline", lambda: classify(texts, batch_size=args.batch_size, truncation=True,
                                               max_length=args.max_length))
    return results


def child(args) -> None:
    subset = Path(args.subset)
    if args.child == "hf_tuned":
        result = run_hf(args, subset, tuned=True)
    else:
        result = {"hf": run_hf, "labelwise": run_labelwise, "inference": run_inference}[args.child](args, subset)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args, kind: str, subset: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--subset", str(subset), *sys.argv[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=subset)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{kind} run failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=2, help="alternating (HF, labelwise) pairs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--override", nargs="*", default=[], help="extra src.train overrides for labelwise's run")
    parser.add_argument("--inference-only", action="store_true", help="skip the training runs")
    parser.add_argument("--cap-isa", choices=sorted(CAPS), help="run as on a CPU with only this instruction set")
    parser.add_argument("--child", choices=["hf", "hf_tuned", "labelwise", "inference"], help=argparse.SUPPRESS)
    parser.add_argument("--subset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cap_isa:  # before any kernel runs; the children inherit it
        os.environ.update(CAPS[args.cap_isa])
    if args.child:
        return child(args)
    if not (args.data_dir / "train.tsv").is_file():
        print(f"skipped: no GoEmotions train.tsv in {args.data_dir} (pass --data-dir DIR)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp)
        write_subset(args, subset)
        runs = {"hf": [], "hf_tuned": [], "labelwise": []}
        for round_number in range(0 if args.inference_only else args.rounds):
            for kind in runs:
                runs[kind].append(spawn(args, kind, subset))
                print(f"round {round_number + 1} {kind:9s} {runs[kind][-1]}", flush=True)
        inference = spawn(args, "inference", subset)
        per_sample = flops_per_sample(subset, args)
    roofline = {"fp32": matmul_roofline("float32")}
    if native_bf16():
        roofline["bf16"] = matmul_roofline("bfloat16")
    print(f"\nhardware: {hardware()}")
    print("matmul roofline (2048^3, this run): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roofline.items()))

    peer = inference.pop("pipeline")
    print(f"\ninference on {args.val_size} dev texts, batch {args.batch_size}, max length {args.max_length}: "
          f"transformers pipeline {peer:.1f} texts/s")
    for engine, rate in inference.items():
        print(f"  labelwise {engine:10s}{rate:8.1f} texts/s  {rate / peer:5.2f}x the pipeline")
    if args.cap_isa:
        print(f"  (ONNX engines skipped: ONNX Runtime cannot be capped to {args.cap_isa})")
    inference_speedup = max(inference.values()) / peer
    if args.inference_only:
        print(f"inference speedup: {inference_speedup:.2f}")
        return
    print(
        f"\nMiniLM-L6, GoEmotions first {args.train_size} train / {args.val_size} dev rows, batch {args.batch_size}, "
        f"max length {args.max_length}, lr {args.lr}, {args.epochs} epochs, {args.rounds} alternating rounds"
    )
    print(f"training FLOPs per sample (mean real length): {per_sample / 1e9:.2f} GFLOP")
    print(f"{'':30s}{'precision':>11s}{'samples/s':>10s}{'roofline':>9s}{'peak RSS MB':>13s}{'val macro-F1':>14s}")
    rates = {kind: statistics.median(r["samples_per_s"] for r in rows) for kind, rows in runs.items()}
    for kind, label in (("hf", "HF Trainer defaults"), ("hf_tuned", "HF Trainer tuned"),
                        ("labelwise", "labelwise defaults")):
        rows = runs[kind]
        precision = rows[0]["precision"]
        ceiling = roofline["bf16" if precision.startswith("bf16") and "bf16" in roofline else "fp32"]
        print(f"{label:30s}{precision:>11s}{rates[kind]:10.1f}{rates[kind] * per_sample / 1e9 / ceiling:9.0%}"
              f"{max(r['peak_rss_mb'] for r in rows):13.0f}{statistics.mean(r['val_macro_f1'] for r in rows):14.4f}")
    print(f"labelwise / HF defaults: {rates['labelwise'] / rates['hf']:.2f}x   labelwise / HF tuned: "
          f"{rates['labelwise'] / rates['hf_tuned']:.2f}x")
    train_speedup = rates["labelwise"] / rates["hf_tuned"]
    print(f"train speedup: {train_speedup:.2f}  inference speedup: {inference_speedup:.2f}")

if __name__ == "__main__":
    main()
