"""Long documents: truncation at 128 tokens against `model=hierarchical` (windows of 128 tokens), at an equal
training budget, on "threads" built from GoEmotions.

    python benchmarks/long_documents.py [--data-dir ../shared/data/goemotions] [--train-threads 1500]
        [--val-threads 320] [--k 16] [--epochs 1] [--max-chunks 4] [--aggregate mean]
        [--emotional N [--reuse-fillers]] [--taxonomy original|ekman|sentiment] [--init CKPT]

A thread is k GoEmotions comments joined by newlines, its labels the union of theirs, so most of a thread's label
evidence lies beyond its first 128 tokens (the measured token lengths are printed). Train threads come from
train.tsv, val threads from dev.tsv, every comment used at most once, shuffled by --seed. Both arms are
`src.train data=jsonl` runs over the same JSONL files, in their own subprocess (clean peak RSS), with the same
epochs, seed, optimiser and batch size in documents (the hierarchical arm's `model.max_chunks_per_batch` is set
to batch size x max chunks, so its batches are never cut to fewer documents): (1) `model=minilm
data.max_length=128`, (2) `model=hierarchical data.max_length=128 model.max_chunks=K`. Prints val macro-F1 (per-label
thresholds tuned on val, and cross-fitted: tuned on one half, scored on the other), train samples/s (training
batches only) and peak memory; the last line says by how much hierarchical beats truncation.

``--emotional N`` builds sparse threads instead (N emotional comments among neutral-only ones, labelled by those);
``--taxonomy`` labels threads with the Ekman or sentiment groups; ``--init CKPT`` starts both arms from a trained
labelwise model (``init_from``, e.g. an ``experiment=goemotions_ekman`` run), so a CPU budget is spent on reading
long documents rather than on learning emotions from scratch (docs/long_documents.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import DEFAULT_DATA, MODEL, ROOT, TrainTimer, hardware

WINDOW = 128
ARMS = {"truncation": ["model=minilm"], "hierarchical": ["model=hierarchical"]}


def read_comments(path: Path) -> list[tuple[str, list[int]]]:
    """GoEmotions rows as (text, label ids)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(text, [int(i) for i in ids.split(",")])
                for text, ids, *_ in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def sample_threads(comments: list[tuple[str, list[int]]], count: int, k: int, seed: int
                   ) -> list[list[tuple[str, list[int]]]]:
    """``count`` threads of ``k`` comments: a seeded shuffle cut into runs of k, so no comment appears twice."""
    if count * k > len(comments):
        raise ValueError(f"{count} threads of {k} comments need {count * k} comments; the file has {len(comments)} "
                         f"(at most {len(comments) // k} threads of {k}). Ask for fewer threads or a smaller --k.")
    order = list(range(len(comments)))
    random.Random(seed).shuffle(order)
    return [[comments[i] for i in order[start:start + k]] for start in range(0, count * k, k)]


def sample_sparse_threads(comments: list[tuple[str, list[int]]], count: int, k: int, emotional: int, neutral: int,
                          seed: int, reuse_fillers: bool = False) -> list[list[tuple[str, list[int]]]]:
    """``count`` threads of ``k`` comments of which ``emotional`` carry an emotion (no neutral) and the rest are
    neutral-only comments, the emotional ones at random positions: a thread's labels are then those of a few comments
    that may sit anywhere in it, as in a long document whose evidence is not at its start. No emotional comment is
    reused; the neutral-only fillers are not either, unless ``reuse_fillers`` (they carry no label, and dev.tsv has
    only 1,592 of them: reuse lifts the cap on val threads from 1,592 / (k - emotional) to the emotional comments)."""
    rng = random.Random(seed)
    calm = [c for c in comments if c[1] == [neutral]]
    moved = [c for c in comments if neutral not in c[1]]
    fillers = k - emotional
    need = {"neutral-only": (fillers if reuse_fillers else count * fillers, len(calm)),
            "emotional": (count * emotional, len(moved))}
    for kind, (wanted, have) in need.items():
        if wanted > have:
            raise ValueError(f"{count} threads need {wanted} {kind} comments; the file has {have}. Ask for fewer "
                             "threads or a smaller --k" + ("" if reuse_fillers else ", or pass --reuse-fillers") + ".")
    rng.shuffle(calm)
    rng.shuffle(moved)
    threads = []
    for t in range(count):
        calm_part = rng.sample(calm, fillers) if reuse_fillers else calm[t * fillers:(t + 1) * fillers]
        members = calm_part + moved[t * emotional:(t + 1) * emotional]
        rng.shuffle(members)
        threads.append(members)
    return threads


def regroup(comments: list[tuple[str, list[int]]], names: list[str], taxonomy: str
            ) -> tuple[list[tuple[str, list[int]]], list[str]]:
    """Comments (label ids into ``names``, GoEmotions' labels.txt) relabelled into a coarser taxonomy by the data
    source's own ``regroup`` (Ekman / sentiment groups, neutral kept, last) and the new label names; ``original``
    returns them as they are."""
    from src.data.records import Split
    from src.data.sources import goemotions

    mapping = goemotions.TAXONOMIES[taxonomy]
    if mapping is None:
        return comments, names
    canonical = [[goemotions.LABELS.index(names[i]) for i in ids] for _, ids in comments]
    data = goemotions.regroup({"train": Split([text for text, _ in comments], canonical)}, mapping)
    return list(zip(data.splits["train"].texts, data.splits["train"].labels)), data.label_names


def thread_row(members: list[tuple[str, list[int]]], names: list[str], separator: str = "\n",
               labels: list[str] | None = None) -> dict:
    """A thread as a data=jsonl row: the texts joined by ``separator``, the labels the union of the comments' label
    names (in vocabulary order)."""
    ids = sorted({i for _, ids in members for i in ids})
    return {"text": separator.join(text for text, _ in members),
            "labels": [names[i] for i in ids if labels is None or names[i] in labels]}


def label_names(args) -> list[str]:
    """The comments' label names: GoEmotions' 28, or the --taxonomy groups and neutral."""
    names = (args.data_dir / "labels.txt").read_text(encoding="utf-8").split()
    return regroup([], names, args.taxonomy)[1]


def vocabulary(args) -> list[str]:
    """The labels threads are classified into: the comments' labels, less neutral with --emotional (every such
    thread has it)."""
    return [n for n in label_names(args) if not (args.emotional and n == "neutral")]


def first_window_labels(threads: list[list[tuple[str, list[int]]]], tokenizer, ignore: int | None = None) -> float:
    """The share of the threads' (thread, label) pairs with a comment carrying the label that starts inside the first
    window: what truncation can see at all (label id ``ignore`` left out)."""
    visible = total = 0
    for members in threads:
        lengths = [len(ids) for ids in tokenizer([text for text, _ in members], add_special_tokens=False)["input_ids"]]
        seen, position = set(), 0
        for (_, labels), length in zip(members, lengths):
            if position < WINDOW - 2:
                seen.update(labels)
            position += length
        union = {i for _, labels in members for i in labels} - {ignore}
        visible, total = visible + len(seen - {ignore}), total + len(union)
    return visible / total


def every_label_macro_f1(rows: list[dict], names: list[str]) -> float:
    """Macro-F1 of predicting every label on every thread (2p / (1 + p) per label of prevalence p): the score a
    model reaches from label frequencies alone, since tuned thresholds can always pick it."""
    shares = [sum(name in row["labels"] for row in rows) / len(rows) for name in names]
    return sum(2 * p / (1 + p) for p in shares) / len(names)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def describe(threads: list[list[tuple[str, list[int]]]], rows: list[dict], max_chunks: int,
             ignore: int | None = None) -> str:
    """The threads' MiniLM token lengths, how much of them the first window and ``max_chunks`` windows cover (the
    framework's own tokenisation, hierarchical.yaml's stride) and how many of their labels the first window holds."""
    import numpy as np
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from src.data.token_cache import tokenize_with_lengths
    from src.pretrained import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(MODEL))
    texts = [row["text"] for row in rows]
    stride = OmegaConf.load(ROOT / "conf" / "model" / "hierarchical.yaml").chunk_stride
    _, lengths, first = tokenize_with_lengths(tokenizer, texts, WINDOW)
    _, _, covered = tokenize_with_lengths(tokenizer, texts, WINDOW, stride=stride, max_chunks=max_chunks)
    low, median, high = np.percentile(lengths, [25, 50, 75])
    labels = first_window_labels(threads, tokenizer, ignore)
    return (f"MiniLM tokens per thread: median {median:.0f} (quartiles {low:.0f}-{high:.0f}, max {lengths.max()}), "
            f"{np.mean(lengths > WINDOW):.0%} longer than {WINDOW}\n"
            f"first window of {WINDOW}: {first.sum() / lengths.sum():.0%} of the tokens, {labels:.0%} of the (thread, "
            f"label) pairs; {max_chunks} windows (stride {stride}): {covered.sum() / lengths.sum():.1%} of the tokens\n"
            f"labels per thread: mean {np.mean([len(row['labels']) for row in rows]):.1f}")


def arm_overrides(arm: str, args, work: Path, labels: list[str]) -> list[str]:
    """One arm's `src.train` overrides: everything but the model group and its chunking keys is shared."""
    overrides = [
        *ARMS[arm],
        "data=jsonl",
        f"data.source.train={work / 'train.jsonl'}",
        f"data.source.val={work / 'val.jsonl'}",
        f"data.source.labels=[{','.join(labels)}]",
        "data.source.task=multilabel",
        f"data.max_length={WINDOW}",
        f"data.batch_size={args.batch_size}",
        f"loss={args.loss}",  # bce by default: a thread of 16 random comments carries ~40% of the labels; with
        #                     loss=auto (asymmetric, for rare positives) both arms gave the same val F1 to 4 decimals
        f"optim.lr={args.lr}",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.early_stopping=null",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "report=false",
        "test=false",
        f"seed={args.seed}",
    ]
    if args.init:
        overrides.append(f"init_from={args.init}")
    if arm == "hierarchical":
        overrides += [f"model.max_chunks={args.max_chunks}", f"model.aggregate={args.aggregate}",
                      f"model.max_chunks_per_batch={args.batch_size * args.max_chunks}"]
    return overrides + args.override


def child(args) -> None:
    """One arm through the real entry point (`src.train.train`, as `python -m src.train` runs it), timed."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import src.train as entry

    work = Path(args.work)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=arm_overrides(args.child, args, work, vocabulary(args)))
    with open_dict(cfg):
        cfg.paths.root_dir = str(work)
        cfg.paths.output_dir = str(work / args.child)
    timer = TrainTimer()
    val = entry.train(cfg, extra_callbacks=[timer])["metrics"]["val"]
    result = {
        "samples_per_s": args.train_threads * args.epochs / timer.seconds,
        "train_s": timer.seconds,
        "macro_f1": val["macro_f1"],
        "macro_f1_tuned": val["macro_f1_tuned"],
        "macro_f1_tuned_crossfit": val["macro_f1_tuned_crossfit"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "precision": str(cfg.trainer.precision),
    }
    print("RESULT " + json.dumps(result), flush=True)


def spawn(arm: str, work: Path, args) -> dict:
    # the child runs in ``work``: its paths go last and absolute (argparse keeps the last value)
    paths = ["--data-dir", str(args.data_dir), *(["--init", str(args.init)] if args.init else [])]
    command = [sys.executable, __file__, "--child", arm, "--work", str(work), *sys.argv[1:], *paths]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{arm} run failed:\n{done.stderr[-4000:]}")
    return {**json.loads(lines[-1].removeprefix("RESULT ")), "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-threads", type=int, default=1200)
    parser.add_argument("--val-threads", type=int, default=320, help="dev.tsv holds 5,426 comments: k x this")
    parser.add_argument("--k", type=int, default=16, help="comments per thread")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-chunks", type=int, default=4, help="model.max_chunks of the hierarchical arm")
    parser.add_argument("--aggregate", choices=["mean", "max", "attention"], default="mean",
                        help="model.aggregate of the hierarchical arm")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per training batch, both arms")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--emotional", type=int, default=0,
                        help="N > 0: each thread is k - N neutral-only comments around N emotional ones at random "
                             "positions (labels: theirs, neutral left out), so the evidence can sit in any window")
    parser.add_argument("--reuse-fillers", action="store_true",
                        help="with --emotional: neutral-only fillers may recur across threads (emotional comments "
                             "never do), so val threads are not capped by dev.tsv's 1,592 neutral-only comments")
    parser.add_argument("--taxonomy", choices=["original", "ekman", "sentiment"], default="original",
                        help="label threads with GoEmotions' 28 labels or its Ekman (6) / sentiment (3) groups")
    parser.add_argument("--init", type=Path, help="a trained labelwise model both arms start from (src.train "
                        "init_from=: its encoder, and its head's rows for labels of the same name), e.g. a "
                        "goemotions_ekman run's best checkpoint with --taxonomy ekman: a model that already knows the "
                        "emotions, so the comparison is about reading long documents, not about learning emotions")
    parser.add_argument("--loss", default="bce", help="the loss of both arms (src.train loss=...)")
    parser.add_argument("--override", action="append", default=[], help="extra src.train override for both arms "
                        "(repeatable)")
    parser.add_argument("--child", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    args.init = args.init.resolve() if args.init else None
    if args.child:
        return child(args)
    if not all((args.data_dir / name).is_file() for name in ("train.tsv", "dev.tsv", "labels.txt")):
        print(f"skipped: no GoEmotions train.tsv, dev.tsv and labels.txt in {args.data_dir} (pass --data-dir DIR)")
        return

    originals = (args.data_dir / "labels.txt").read_text(encoding="utf-8").split()
    names, labels = label_names(args), vocabulary(args)

    def threads_of(comments, count):
        comments = regroup(comments, originals, args.taxonomy)[0]
        if args.emotional:
            return sample_sparse_threads(comments, count, args.k, args.emotional, names.index("neutral"), args.seed,
                                         args.reuse_fillers)
        return sample_threads(comments, count, args.k, args.seed)

    try:
        threads = {split: threads_of(read_comments(args.data_dir / file), count)
                   for split, file, count in (("train", "train.tsv", args.train_threads),
                                              ("val", "dev.tsv", args.val_threads))}
    except ValueError as error:
        sys.exit(f"error: {error}")
    rows = {split: [thread_row(members, names, labels=labels) for members in split_threads]
            for split, split_threads in threads.items()}
    print(f"hardware: {hardware()}")
    print(f"{args.train_threads} train threads (train.tsv) / {args.val_threads} val threads (dev.tsv) of {args.k} "
          f"GoEmotions comments, {len(labels)} labels ({args.taxonomy} taxonomy)"
          + (f", {args.emotional} emotional per thread" if args.emotional else ""))
    ignore = names.index("neutral") if args.emotional else None  # not a label of --emotional threads
    print(describe(threads["train"] + threads["val"], rows["train"] + rows["val"], args.max_chunks, ignore), flush=True)

    results = {}
    with tempfile.TemporaryDirectory(prefix="long_documents-") as tmp:
        work = Path(tmp)
        for split in ("train", "val"):
            write_jsonl(work / f"{split}.jsonl", rows[split])
        for arm in ARMS:
            print(f"training {arm} ...", flush=True)
            results[arm] = spawn(arm, work, args)
            print(f"  {arm}: {results[arm]}", flush=True)

    start = f" (init_from {args.init})" if args.init else ""
    print(f"\nMiniLM-L6{start}, {args.epochs} epochs, batch {args.batch_size} documents, lr {args.lr}, "
          f"seed {args.seed}, windows of {WINDOW} tokens, precision {results['truncation']['precision']}")
    gpu = results["truncation"]["peak_gpu_mb"] is not None
    print(f"{'':34s}{'val macro-F1':>13s}{'tuned':>8s}{'cross-fit':>10s}{'samples/s':>10s}{'peak RSS MB':>12s}"
          + (f"{'peak GPU MB':>12s}" if gpu else "") + f"{'wall s':>8s}")
    for arm, label in (("truncation", f"truncation (first {WINDOW} tokens)"),
                       ("hierarchical", f"hierarchical ({args.max_chunks} x {WINDOW}, {args.aggregate})")):
        row = results[arm]
        print(f"{label:34s}{row['macro_f1']:13.4f}{row['macro_f1_tuned']:8.4f}{row['macro_f1_tuned_crossfit']:10.4f}"
              f"{row['samples_per_s']:10.1f}{row['peak_rss_mb']:12.0f}"
              + (f"{row['peak_gpu_mb']:12.0f}" if gpu else "") + f"{row['wall_s']:8.0f}")
    baseline = every_label_macro_f1(rows["val"], labels)
    print(f"{'every label predicted (no model)':34s}{baseline:13.4f}")
    truncation, hierarchical = results["truncation"], results["hierarchical"]
    gain = hierarchical["macro_f1_tuned_crossfit"] - truncation["macro_f1_tuned_crossfit"]
    print(f"hierarchical - truncation: val macro-F1 cross-fitted {gain:+.4f}, tuned "
          f"{hierarchical['macro_f1_tuned'] - truncation['macro_f1_tuned']:+.4f}; training "
          f"{truncation['samples_per_s'] / hierarchical['samples_per_s']:.2f}x slower, peak memory "
          f"{hierarchical['peak_rss_mb'] / truncation['peak_rss_mb']:.2f}x")
    print(f"verdict: hierarchical {'beats' if gain > 0 else 'does not beat'} truncation: {gain:+.4f} cross-fitted "
          f"val macro-F1 ({gain / truncation['macro_f1_tuned_crossfit']:+.1%})")
    if max(truncation["macro_f1_tuned_crossfit"], hierarchical["macro_f1_tuned_crossfit"]) <= baseline:
        print("  but neither arm beats predicting every label: this budget is too small to compare them (raise "
              "--train-threads / --epochs, or run on a GPU)")


if __name__ == "__main__":
    main()
