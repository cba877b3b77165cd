"""python -m src.thresholds ckpt_path=PATH policy=... [value=...]: choose a trained model's operating point.

Scores a labelled split once (the validation split the model was trained with by default), chooses thresholds by the
policy (:func:`src.metrics.thresholds.operating_point`) and writes a new checkpoint with them beside the old one,
which is never modified (for an export directory, Hugging Face or ONNX, which carries no training data so
``data=...`` is needed, a new directory beside it, its model card's thresholds section rewritten): ``src.eval``,
``src.predict`` and ``src.export`` of the new model use the new operating point. The output directory gets
``thresholds.json`` (per-label thresholds, precision, recall and F1 on the split, before and after) and
``thresholds.png`` (each label's precision / recall / F1 against the threshold, both operating points marked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from src import resolvers
from src.data.datamodule import TextDataModule
from src.errors import ConfigError, reported_to_user
from src.eval import source_config
from src.inference import Predictor
from src.io import atomic_directory, atomic_path, write_json
from src.metrics.counts import confusion
from src.metrics.plots import threshold_curves
from src.metrics.thresholds import Thresholds, macro_f1, operating_point
from src.model_card import thresholds_section
from src.models.module import CHECKPOINT_KEY
from src.onnx_engine import INFO_FILE
from src.predict import plain
from src.schema import app, validate
from src.tracking.checkpoint import is_deepspeed_checkpoint, read_checkpoint

resolvers.register()
CARD_SECTION = "## Labels and decision thresholds"


def split_to_tune(cfg: DictConfig, predictor: Predictor) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 targets of ``cfg.split``: of ``data=...`` when given, else of the checkpoint's own data with
    the validation split carved from train as in training (same fraction and seed)."""
    if not cfg.get("data") and "data" not in predictor.metadata.get("config", {}):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: an export carries no training data to tune on. Pass the "
                          "labelled data, e.g. data=jsonl data.source.train=val.jsonl split=train.")
    stored = predictor.metadata.get("config", {}).get("data", {})
    carve = None if cfg.get("data") else stored.get("val_fraction")
    datamodule = TextDataModule(instantiate(source_config(cfg, predictor), _convert_="all"),
                                tokenizer=predictor.net.config.base_model, max_length=predictor.max_length,
                                val_fraction=carve, seed=int(stored.get("seed", 42)), labels=predictor.labels)
    data = datamodule.load()
    if cfg.split not in data.splits:
        raise ConfigError(f"split={cfg.split}: the data has only {sorted(data.splits)}. Pick one of them.")
    split = data.splits[cfg.split]
    return split.texts, predictor.labels.targets(split.labels)


def new_path(cfg: DictConfig, ckpt_path: Path) -> Path:
    if cfg.output:
        path = Path(to_absolute_path(str(cfg.output))).expanduser()
    else:
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", f"{cfg.policy}_{cfg.value}" if cfg.value is not None else cfg.policy)
        path = ckpt_path.with_name(f"{ckpt_path.stem}.{slug.strip('_')}{'.global' if cfg.scope == 'global' else ''}"
                                   f"{ckpt_path.suffix}")
    if path.resolve() == ckpt_path.resolve():
        raise ConfigError(f"output={path}: that is ckpt_path itself; thresholds are never rewritten in place. "
                          "Name another file.")
    return path


def per_label(names, targets: np.ndarray, decisions: np.ndarray, thresholds: Thresholds | None) -> list[dict]:
    counts = confusion(targets.astype(bool), decisions).numpy()
    cut = thresholds.per_label if thresholds and thresholds.top_k is None else [None] * len(names)
    return [{"label": name, "threshold": None if t is None else round(float(t), 6),
             "precision": float(p), "recall": float(r), "f1": float(f), "positives": int(n)}
            for name, t, p, r, f, n in zip(names, cut, counts.precision(), counts.recall(), counts.f1(),
                                           counts.support)]


def write_model(source: Path, output: Path, predictor: Predictor, chosen: Thresholds) -> None:
    """The model at ``source`` with ``chosen`` thresholds, written (atomically) to ``output``: a checkpoint, or a copy
    of an export directory with the thresholds in its config (``config.json``; ``labelwise.json`` of an ONNX export)
    and its model card's thresholds section. A DeepSpeed checkpoint directory gives a one-file checkpoint."""
    if source.is_file() or is_deepspeed_checkpoint(source):
        checkpoint = read_checkpoint(source)
        checkpoint[CHECKPOINT_KEY]["net_config"]["thresholds"] = chosen.to_dict()
        with atomic_path(output) as temporary:
            torch.save(checkpoint, temporary)
        return
    predictor.net.config.thresholds = chosen.to_dict()
    with atomic_directory(output) as temporary:
        shutil.copytree(source, temporary, dirs_exist_ok=True)
        for name in ("config.json", INFO_FILE):
            if (temporary / name).is_file():
                content = json.loads((temporary / name).read_text())
                for holder in (content, content.get("config")):
                    if isinstance(holder, dict) and "thresholds" in holder:
                        holder["thresholds"] = chosen.to_dict()
                write_json(temporary / name, content)
        card = temporary / "README.md"
        if card.is_file():
            text = card.read_text()
            start, end = text.find(CARD_SECTION), text.find("\n## ", text.find(CARD_SECTION) + len(CARD_SECTION))
            if start >= 0 and end >= 0:
                card.write_text(f"{text[:start]}{CARD_SECTION}\n\n{thresholds_section(predictor)}\n{text[end:]}")


def choose_thresholds(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required: python -m src.thresholds ckpt_path=<run dir>/checkpoints/<name>.ckpt "
                          "policy=precision_at_least value=0.8")
    ckpt_path = Path(to_absolute_path(str(cfg.ckpt_path))).expanduser()
    predictor = Predictor.load(ckpt_path)
    space = predictor.labels
    if not space.thresholded:
        raise ConfigError(f"ckpt_path={ckpt_path}: a multi-class model decides by arg-max; thresholds apply to "
                          "multi-label models only.")
    value = plain(cfg.value)
    output = new_path(cfg, ckpt_path)
    texts, targets = split_to_tune(cfg, predictor)
    scores = predictor.scores(texts, cfg.batch_size, cfg.precision, description=f"scoring {cfg.split}")
    chosen = operating_point(scores, targets, cfg.policy, value, cfg.scope, space.names)
    before = predictor.thresholds

    write_model(ckpt_path, output, predictor, chosen)

    out_dir = Path(cfg.paths.output_dir)
    result = {"checkpoint": str(output), "from": str(ckpt_path), "split": cfg.split, "rows": len(texts),
              "policy": chosen.policy, "thresholds": chosen.to_dict()}
    marks = {}
    for key, rule in (("before", before), ("after", chosen)):
        decisions = space.decide(scores, rule)
        name = rule.policy if rule else "0.5"
        result[key] = {"policy": name, "macro_f1": macro_f1(targets, decisions),
                       "labels": per_label(space.names, targets, decisions, rule)}
        marks[f"{key}: {name}"] = None if rule and rule.top_k else rule.per_label if rule else [0.5] * len(scores[0])
    write_json(out_dir / "thresholds.json", result)
    threshold_curves(out_dir / "thresholds.png", space.names, scores, targets, marks)
    print_result(result)
    return result


def print_result(result: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(title=f"{result['policy']} on {result['split']} ({result['rows']} rows): before -> after")
    for column in ("label", "positives", "threshold", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == "label" else "right")

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for old, new in zip(result["before"]["labels"], result["after"]["labels"]):
        table.add_row(new["label"], str(new["positives"]),
                      *(f"{number(old[key])} -> {number(new[key])}" for key in ("threshold", "precision", "recall",
                                                                                  "f1")))
    console.print(table)
    console.print(f"macro-F1 on {result['split']}: {result['before']['macro_f1']:.4f} ({result['before']['policy']}) "
                  f"-> {result['after']['macro_f1']:.4f}; tuned and scored on the same rows, so optimistic. "
                  f"Evaluate on held-out data: python -m src.eval ckpt_path={result['checkpoint']}", soft_wrap=True)
    console.print(f"wrote {result['checkpoint']} (the original is unchanged)", soft_wrap=True)


@app("thresholds")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        validate(cfg, "thresholds")
        choose_thresholds(cfg)


if __name__ == "__main__":
    main()
