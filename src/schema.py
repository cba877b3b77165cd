"""Validation at the boundary: every composed config is checked against declarative rules before anything runs.

Hydra's struct mode already refuses a key that does not exist; this adds the types, ranges and choices of the keys
that do, whatever set them (the command line, a preset, a ``--multirun`` grid, a search space), so a bad value stops
with one ``error:`` line naming the key, the value and what is allowed, before any data loads or any MLflow run is
created. Rules are kept two ways:

- per ``_target_`` (``TARGETS``): the keyword arguments of the class or function a node instantiates, wherever the
  node sits (``loss.first.gamma_neg`` of a combined loss, ``data.sampler.ratio``). A node's keys must also be
  arguments its target accepts, so a ``+key=value`` addition the target cannot take is refused here, not deep inside
  instantiation; a ``_target_`` swapped for another class gets that class's signature check (and rules, if any).
- per key path (``APPS``): the keys of each entry point's own config (``seed``, ``cv.*``, ``thresholds.*``, ...).

Keys without a rule are accepted as they are (paths, names). ``SweepValidation`` (a Hydra callback) checks every job
of a ``--multirun`` before the first one launches.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hydra
from hydra.errors import CompactHydraException, HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from src import CONFIG_PATH
from src.errors import ConfigError

# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a value may be: ``allowed`` says it to the user, ``ok`` decides."""

    allowed: str
    ok: Callable[[Any], bool]

    def __or__(self, other: Rule) -> Rule:
        return Rule(f"{self.allowed} or {other.allowed}", lambda v: self.ok(v) or other.ok(v))

    def said(self, allowed: str) -> Rule:
        """The same rule, told another way."""
        return Rule(allowed, self.ok)


def _show(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, str) and value == "":
        return "''"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(gt=None, ge=None, lt=None, le=None) -> tuple[str, Callable[[float], bool]]:
    low = "" if gt is None and ge is None else ("(" if gt is not None else "[")
    high = "" if lt is None and le is None else (")" if lt is not None else "]")
    lo, hi = (gt if gt is not None else ge), (lt if lt is not None else le)

    def inside(v: float) -> bool:
        return ((gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt)
                and (le is None or v <= le))

    if low and high:
        return f" in {low}{lo}, {hi}{high}", inside
    if low:
        return f" {'>' if gt is not None else '>='} {lo}", inside
    if high:
        return f" {'<' if lt is not None else '<='} {hi}", inside
    return "", inside


def real(gt=None, ge=None, lt=None, le=None) -> Rule:
    text, inside = _bounds(gt, ge, lt, le)
    return Rule(f"a number{text}", lambda v: _is_number(v) and inside(v))


def integer(ge=None, le=None) -> Rule:
    text, inside = _bounds(ge=ge, le=le)
    return Rule(f"an integer{text}", lambda v: isinstance(v, int) and not isinstance(v, bool) and inside(v))


def one_of(*options: Any) -> Rule:
    shown = ", ".join(_show(o) for o in options)
    return Rule(f"one of {shown}", lambda v: any(v == o and type(v) is type(o) for o in options))


def reals(gt=None, ge=None, lt=None, le=None, length: int | None = None) -> Rule:
    item = real(gt, ge, lt, le)
    size = f"{length} " if length else ""
    return Rule(f"a list of {size}numbers{item.allowed.removeprefix('a number')}",
                lambda v: isinstance(v, (list, ListConfig)) and (length is None or len(v) == length)
                and all(item.ok(x) for x in v) and len(v) > 0)


def texts(choices: tuple[str, ...] | None = None) -> Rule:
    within = f" from {', '.join(choices)}" if choices else ""
    return Rule(f"a non-empty list of names{within}",
                lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0
                and all(isinstance(x, str) and x and (choices is None or x in choices) for x in v))


NULL = Rule("null", lambda v: v is None)
BOOL = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
MAPPING = Rule("a mapping of keys", lambda v: isinstance(v, DictConfig))
SEED = integer(ge=0, le=2**32 - 1)
FRACTION = real(gt=0, lt=1)
POSITIVE = real(gt=0)
NON_NEGATIVE = real(ge=0)
SMOOTHING = real(ge=0, lt=1)  # label smoothing of every loss that has it
COUNT = integer(ge=1)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64",
              32, 16, 64)
METRIC = Rule("a metric logged while training, val/<name> or train/<name> (e.g. val/macro_f1)",
              lambda v: isinstance(v, str) and re.fullmatch(r"(val|train)/\S+", v) is not None)
BATCHES = NULL | integer(ge=1) | real(gt=0, le=1)  # Lightning: a count of batches, or a fraction of them


def _codec(value: Any) -> bool:
    import codecs

    try:
        return isinstance(value, str) and (value == "auto" or bool(codecs.lookup(value)))
    except LookupError:
        return False


ENCODING = Rule("auto or a Python codec name (utf-8, gb18030, latin-1, cp1252, utf-16, ...)", _codec)


SPLIT_NAMES = Rule(
    "a mapping of train (a split name), val and test (a split name, auto or null) to the dataset's splits",
    lambda v: isinstance(v, DictConfig) and set(v) <= {"train", "val", "test"}
    and isinstance(v.get("train"), str) and v.get("train").strip() not in ("", "auto")
    and all(v.get(k) is None or (isinstance(v.get(k), str) and v.get(k).strip()) for k in ("val", "test")))


def _precision() -> Rule:
    return NULL | one_of(*PRECISIONS)


CHECKPOINT_RULES = {
    "monitor": NULL | TEXT, "mode": one_of("min", "max"), "save_top_k": integer(ge=-1),
    "save_last": NULL | BOOL | one_of("link"), "save_weights_only": (BOOL | one_of("best")).said("true, false or best"),
    "every_n_epochs": NULL | integer(ge=0),
}
# rules per _target_: the keyword arguments of what the node instantiates, wherever it sits
TARGETS: dict[str, dict[str, Rule]] = {
    "src.data.datamodule.TextDataModule": {
        "tokenizer": TEXT, "max_length": integer(ge=3), "batch_size": COUNT, "eval_batch_size": COUNT,
        "val_fraction": NULL | FRACTION, "seed": SEED, "num_workers": integer(ge=0), "group_by_length": BOOL,
        "pad_to_multiple_of": COUNT, "features": one_of("tokens", "embeddings"), "encoding": ENCODING,
        "on_leakage": one_of("warn", "error", "drop_from_train"),
    },
    "src.data.sources.tabular.TabularSource": {
        "train": TEXT, "val": NULL | TEXT, "test": NULL | TEXT, "format": one_of("auto", "csv", "tsv", "jsonl"),
        "text_column": TEXT, "label_column": TEXT, "label_delimiter": NULL | Rule("a string", lambda v: isinstance(
            v, str) and v != ""), "labels": NULL | texts(), "task": one_of("auto", "multilabel", "multiclass"),
    },  # encoding: ${data.encoding}, checked there (a rule here would say it twice)
    "src.data.sources.documents.DocumentSource": {
        "train": TEXT, "val": NULL | TEXT, "test": NULL | TEXT, "path_column": TEXT, "label_column": TEXT,
        "label_delimiter": NULL | Rule("a string", lambda v: isinstance(v, str) and v != ""),
        "labels": NULL | texts(), "task": one_of("auto", "multilabel", "multiclass"), "workers": NULL | COUNT,
        "cache_dir": NULL | TEXT, "on_unreadable": one_of("error", "skip_and_report"), "report": NULL | TEXT,
    },  # encoding: ${data.encoding}, as for TabularSource
    "src.data.sources.hf.HuggingFaceSource": {
        "name": TEXT, "config": NULL | TEXT, "splits": SPLIT_NAMES, "text_column": TEXT, "label_column": TEXT,
        "label_delimiter": NULL | Rule("a string", lambda v: isinstance(v, str) and v != ""),
        "labels": NULL | texts(), "task": one_of("auto", "multilabel", "multiclass"), "revision": NULL | TEXT,
        "cache_dir": NULL | TEXT, "trust_remote_code": BOOL,
    },
    "src.data.sources.goemotions.GoEmotionsSource": {
        "data_dir": NULL | TEXT, "taxonomy": one_of("original", "ekman", "sentiment"),
    },
    "src.data.sources.folds.FoldSource": {"folds": integer(ge=2), "fold": integer(ge=0), "seed": SEED},
    "src.data.sampling.RandomResampler": {
        "mode": one_of("over", "under"), "ratio": real(gt=0, le=1), "proxy": one_of("rarest", "powerset"),
        "seed": SEED,
    },
    "src.data.smote.SmoteResampler": {
        "k_neighbors": COUNT, "ratio": real(gt=0, le=1), "max_new": NULL | POSITIVE, "seed": SEED,
    },
    "src.data.augment.EasyDataAugmentation": {
        "rate": FRACTION, "copies": COUNT, "minority_below": real(gt=0, le=1),
        "operations": texts(("swap", "delete", "insert")), "seed": SEED,
    },
    "src.models.build.classifier": {
        "name_or_path": TEXT, "pooling": one_of("mean", "cls", "cls_mean", "pooler"), "dropout": real(ge=0, lt=1),
        "hidden": integer(ge=0), "freeze_encoder": BOOL, "fast_dropout": BOOL, "pretrained": BOOL,
        "freeze_layers": NULL | integer(ge=0), "gradient_checkpointing": BOOL, "encoder_overrides": NULL | MAPPING,
        "peft": NULL | one_of("lora"), "lora": MAPPING, "max_chunks": NULL | COUNT, "chunk_stride": integer(ge=0),
        "aggregate": one_of("mean", "max", "attention"), "max_chunks_per_batch": NULL | COUNT,
    },
    "src.losses.bce.BinaryCrossEntropy": {
        "pos_weight": NULL | one_of("auto") | reals(gt=0), "max_pos_weight": POSITIVE, "weight": NULL | reals(ge=0),
        "label_smoothing": SMOOTHING,
    },
    "src.losses.ce.CrossEntropy": {
        "class_weights": NULL | one_of("auto") | reals(gt=0), "label_smoothing": SMOOTHING,
    },
    "src.losses.asymmetric.AsymmetricLoss": {
        "gamma_neg": NON_NEGATIVE, "gamma_pos": NON_NEGATIVE, "clip": NULL | real(ge=0, lt=1), "eps": POSITIVE,
        "detach_focusing": BOOL, "weight": NULL | reals(ge=0), "label_smoothing": SMOOTHING,
    },
    "src.losses.focal.FocalLoss": {"gamma": NON_NEGATIVE, "alpha": NULL | real(ge=0, le=1),
                                   "weight": NULL | reals(ge=0), "label_smoothing": SMOOTHING},
    "src.losses.combined.CombinedLoss": {"ratio": real(ge=0, le=1)},
    "src.losses.auto.by_task": {"multilabel": MAPPING, "multiclass": MAPPING},
    "src.losses.class_balanced.ClassBalancedLoss": {"beta": real(ge=0, lt=1)},
    "src.models.optimization.adamw": {
        "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "head_lr_multiplier": POSITIVE,
        "betas": reals(ge=0, lt=1, length=2), "eps": POSITIVE, "layer_decay": real(gt=0, le=1),
    },
    "src.models.optimization.warmup_schedule": {
        "name": one_of("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"),
        "warmup_ratio": real(ge=0, lt=1),
    },
    "lightning.pytorch.Trainer": {
        "accelerator": one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu"),
        "devices": one_of("auto", -1) | integer(ge=1) | Rule("a list of device ids or a string like '0,1'",
                                                             lambda v: isinstance(v, (str, list, ListConfig))),
        "num_nodes": COUNT, "precision": _precision(),
        "max_epochs": (integer(ge=1) | one_of(-1)).said("an integer >= 1 (0 trains nothing), or -1 with "
                                                        "trainer.max_steps"), "min_epochs": NULL | integer(ge=0),
        "max_steps": integer(ge=1) | one_of(-1), "accumulate_grad_batches": COUNT,
        "gradient_clip_val": NULL | NON_NEGATIVE, "gradient_clip_algorithm": NULL | one_of("norm", "value"),
        "log_every_n_steps": COUNT, "num_sanity_val_steps": integer(ge=-1),
        "deterministic": NULL | BOOL | one_of("warn"), "enable_progress_bar": NULL | BOOL,
        "enable_checkpointing": NULL | BOOL, "enable_model_summary": NULL | BOOL, "use_distributed_sampler": BOOL,
        "fast_dev_run": BOOL | COUNT, "overfit_batches": integer(ge=0) | real(ge=0, le=1),
        "limit_train_batches": BATCHES, "limit_val_batches": BATCHES, "limit_test_batches": BATCHES,
        "val_check_interval": BATCHES, "check_val_every_n_epoch": NULL | COUNT,
    },
    "lightning.pytorch.callbacks.ModelCheckpoint": CHECKPOINT_RULES,
    "src.tracking.checkpoint.EpochCheckpoint": CHECKPOINT_RULES,  # ModelCheckpoint with a last.ckpt fix, same options
    "src.tracking.checkpoint.PeriodicCheckpoint": {"train_time_interval": NON_NEGATIVE | Rule(
        "a duration HH:MM:SS", lambda v: isinstance(v, str) and re.fullmatch(r"\d+:\d+:\d+(\.\d+)?", v) is not None)},
    "lightning.pytorch.callbacks.EarlyStopping": {
        "monitor": TEXT, "mode": one_of("min", "max"), "patience": COUNT, "min_delta": NON_NEGATIVE,
    },
    "src.callbacks.health.TrainingHealth": {"max_bad_steps": integer(ge=0),
                                            "max_train_val_gap": NULL | real(ge=0, le=1)},
    "src.callbacks.unfreezing.GradualUnfreezing": {"every_n_epochs": COUNT},
    "src.callbacks.averaging.WeightEMA": {"decay": real(gt=0, lt=1), "update_every_n_steps": COUNT},
    "lightning.pytorch.callbacks.LearningRateMonitor": {"logging_interval": NULL | one_of("step", "epoch")},
    "lightning.pytorch.loggers.MLFlowLogger": {"experiment_name": TEXT, "run_id": NULL | TEXT,
                                               "log_model": BOOL | one_of("all")},
    "lightning.pytorch.strategies.DDPStrategy": {"find_unused_parameters": BOOL},
    "lightning.pytorch.strategies.DeepSpeedStrategy": {"stage": one_of(0, 1, 2, 3), "offload_optimizer": BOOL,
                                                       "offload_parameters": BOOL},
    "lightning.pytorch.strategies.FSDPStrategy": {
        "sharding_strategy": one_of("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"),
        "state_dict_type": one_of("full", "sharded"), "use_orig_params": BOOL, "cpu_offload": BOOL,
    },
}

ENGINE = NULL | one_of("torch", "onnx")
QUANTIZE = NULL | one_of("int8")
SPLIT = one_of("train", "val", "test")
THRESHOLDS = (NULL | real(ge=0, le=1) | reals(ge=0, le=1) | MAPPING).said(
    "a threshold in [0, 1], a list of them (one per label) or {top_k: k}")

# rules per key path of each entry point's own config (its groups' nodes are covered by TARGETS)
APPS: dict[str, dict[str, Rule]] = {
    "train": {
        "task_name": TEXT, "seed": SEED, "ckpt_path": NULL | TEXT, "init_from": NULL | TEXT, "test": BOOL,
        "report": BOOL, "compile": BOOL, "rdrop": NON_NEGATIVE, "dropout_samples": COUNT,
        "optimized_metric": METRIC, "cv": NULL | MAPPING, "cv.folds": NULL | integer(ge=2),
        "cv.fold": NULL | integer(ge=0), "ensemble": NULL | MAPPING, "ensemble.members": NULL | integer(ge=2),
        "thresholds": NULL | MAPPING,
        "thresholds.shrinkage": one_of("auto") | real(ge=0, le=1), "thresholds.prior_strength": POSITIVE,
        "thresholds.at_least_one": one_of("auto", True, False), "thresholds.min_gain": NON_NEGATIVE,
        "thresholds.grid": reals(gt=0, lt=1), "export": NULL | MAPPING, "export.mlflow": BOOL,
        "export.registered_model_name": NULL | TEXT, "export.push_to_hub": NULL | TEXT,
        "scheduler": NULL | MAPPING,
        "calibration": NULL | MAPPING, "calibration.per_label": BOOL, "tune": NULL | MAPPING,
        "tune.mode": one_of("lr_find", "batch_size"), "tune.min_lr": POSITIVE, "tune.max_lr": POSITIVE,
        "tune.num_training": COUNT, "tune.max_val": COUNT, "trial": NULL | MAPPING, "trial.storage": NULL | TEXT,
        "trial.study": NULL | TEXT, "trial.id": NULL | integer(ge=0),
        "distill": NULL | MAPPING, "distill.teacher": NULL | TEXT, "distill.alpha": real(ge=0, le=1),
        "distill.temperature": POSITIVE,
        "model.lora.r": COUNT, "model.lora.alpha": POSITIVE, "model.lora.dropout": real(ge=0, lt=1),
        "model.lora.target_modules": NULL | texts(),
    },
    "eval": {"task_name": TEXT, "ckpt_path": NULL | TEXT, "split": SPLIT, "report": BOOL, "batch_size": COUNT,
             "precision": _precision(), "thresholds": THRESHOLDS},
    "predict": {
        "ckpt_path": NULL | TEXT, "input": NULL | TEXT, "output": NULL | TEXT, "text_column": TEXT,
        "encoding": ENCODING, "batch_size": COUNT, "chunk_size": COUNT, "precision": _precision(), "engine": ENGINE,
        "quantize": QUANTIZE,
        "max_f1_loss": NULL | NON_NEGATIVE, "thresholds": THRESHOLDS,
        "device": Rule("auto, cpu, cuda, cuda:<index> or mps",
                       lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None),
    },
    "export": {
        "ckpt_path": NULL | TEXT, "format": one_of("hf", "onnx", "mlflow"), "output_dir": NULL | TEXT,
        "opset": integer(ge=17), "quantize": QUANTIZE, "max_f1_loss": NULL | NON_NEGATIVE,
        "push_to_hub": NULL | TEXT, "registered_model_name": NULL | TEXT, "mlflow_uri": NULL | TEXT,
        "allow_default_thresholds": BOOL,
    },
    "thresholds": {
        "ckpt_path": NULL | TEXT, "policy": one_of("max_f1", "precision_at_least", "recall_at_least", "top_k",
                                                   "fixed"),
        "value": NULL | real(ge=0, le=1) | integer(ge=1) | reals(ge=0, le=1), "scope": one_of("per_label", "global"),
        "split": SPLIT, "output": NULL | TEXT, "batch_size": COUNT, "precision": _precision(),
    },
    "demo": {"ckpt_path": NULL | TEXT, "host": TEXT, "port": NULL | integer(ge=1, le=65535),
             "examples": integer(ge=0), "engine": ENGINE, "quantize": QUANTIZE},
    "compare": {"sweep": TEXT | texts(),
                "metric": Rule("<split>/<metric>, e.g. test/macro_f1", lambda v: isinstance(v, str)
                               and re.fullmatch(r"\w+/\S+", v) is not None),
                "higher_is_better": BOOL, "bootstrap.resamples": COUNT, "bootstrap.seed": SEED,
                "output_dir": NULL | TEXT},
}

# what a required (???) key is, for the message that asks for it
REQUIRED = {"src.data.sources.tabular.TabularSource.train": "PATH/TO/train.csv (the training file of data=csv/jsonl; "
                                                           "data.source.val and data.source.test are optional)",
            "src.data.sources.hf.HuggingFaceSource.name": "NAME (a hub id such as go_emotions or owner/name, or "
                                                          "a directory written by save_to_disk or of data files)",
            "src.data.sources.documents.DocumentSource.train": "PATH/TO/DIR (one sub-folder per label) or "
                                                               "PATH/TO/manifest.csv (the files of data=documents)"}
REFERENCE = re.compile(r"\$\{[\w.]+\}")  # ${seed}: the value of another key, checked where it is set
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


# ---------------------------------------------------------------- checking


@functools.cache
def _parameters(target: str) -> tuple[frozenset[str] | None, str | None]:
    """The keyword arguments ``target`` takes (None when it takes ``**kwargs``), or an import error's text."""
    from hydra._internal.utils import _locate  # what instantiate uses (hydra.utils.get_object also logs an error)

    try:
        obj = _locate(target)
        parameters = inspect.signature(obj).parameters.values()
    except Exception as error:  # an unimportable target: ImportError, AttributeError, a ValueError of get_object
        cause = error.__cause__ or error
        return None, " ".join(f"{type(cause).__name__}: {cause}".split())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None, None
    return frozenset(p.name for p in parameters), None


def _raw(node: DictConfig, key: str) -> str:
    return str(OmegaConf.to_container(node, resolve=False)[key])


def _value(node: DictConfig, key: str, path: str) -> tuple[Any, str | None]:
    try:
        return node[key], None
    except Exception as error:  # an interpolation that does not resolve
        return None, f"{path}: {str(error).splitlines()[0]}"


def _walk(node: DictConfig, path: str, paths: dict[str, Rule]) -> Iterator[str]:
    target = node.get("_target_") if "_target_" in node else None
    rules: dict[str, Rule] = {}
    accepted: frozenset[str] | None = None
    if isinstance(target, str):
        rules = TARGETS.get(target, {})
        accepted, failure = _parameters(target)
        if failure:
            yield f"{path}._target_={target}: cannot be imported ({failure})"
    for key in node:
        if key in HYDRA_KEYS:
            continue
        key = str(key)
        full = f"{path}.{key}" if path else key
        if accepted is not None and key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f" (did you mean {path}.{close[0]}?)" if close else ""
            takes = f"; it takes {', '.join(sorted(accepted))}" if len(accepted) <= 12 else ""
            yield f"{full} is not an option of {target.rsplit('.', 1)[-1]}{hint}{takes}"
            continue
        rule = paths.get(full) or rules.get(key)
        if OmegaConf.is_missing(node, key):
            example = REQUIRED.get(f"{target}.{key}", "<value>")
            yield f"{full} is required: pass {full}={example}"
            continue
        if OmegaConf.is_interpolation(node, key) and (rule is None or REFERENCE.fullmatch(_raw(node, key))):
            continue  # a path built from others (some resolve only inside the Hydra app), or a copy of a checked key
        value, failure = _value(node, key, full)
        if failure:
            yield failure
            continue
        if rule is not None and not rule.ok(value):
            yield f"{full}={_show(value)}: must be {rule.allowed}"
        elif isinstance(value, DictConfig):  # a group, or a mapping key whose rule it passed
            yield from _walk(value, full, paths)


def _cross_checks(cfg: DictConfig, app: str) -> Iterator[str]:
    """Rules between keys."""
    cv = cfg.get("cv") if app == "train" else None
    if isinstance(cv, DictConfig) and isinstance(cv.get("fold"), int):
        folds = cv.get("folds")
        if folds is None:
            yield f"cv.fold={cv.fold}: needs cv.folds=K (the number of folds) too"
        elif isinstance(folds, int) and folds >= 2 and cv.fold >= folds:
            yield f"cv.fold={cv.fold}: must be an integer in [0, {folds - 1}] (folds count from 0; cv.folds={folds})"
    if app == "train" and isinstance(cfg.get("dropout_samples"), int) and cfg.dropout_samples > 1 \
            and isinstance(cfg.get("rdrop"), (int, float)) and cfg.rdrop > 0:
        yield (f"dropout_samples={cfg.dropout_samples} with rdrop={cfg.rdrop}: R-Drop already runs each batch under "
               "two dropout masks; use one of them (dropout_samples=1 or rdrop=0)")
    ensemble = cfg.get("ensemble") if app == "train" else None
    if isinstance(ensemble, DictConfig) and ensemble.get("members") is not None and isinstance(cv, DictConfig) \
            and cv.get("folds") is not None:
        yield (f"ensemble.members={ensemble.members} cannot be combined with cv.folds={cv.folds}: cross-validation "
               "already averages its fold models (ensemble_test/...); drop one of them")
    trainer = cfg.get("trainer") if app == "train" else None
    if isinstance(trainer, DictConfig):
        epochs, least, steps = trainer.get("max_epochs"), trainer.get("min_epochs"), trainer.get("max_steps", -1)
        if epochs == -1 and steps == -1:
            yield "trainer.max_epochs=-1: training would never stop; set trainer.max_epochs>=1 or trainer.max_steps>=1"
        if _is_number(least) and _is_number(epochs) and epochs >= 1 and least > epochs:
            yield f"trainer.min_epochs={least}: must be <= trainer.max_epochs={epochs}"
    callbacks = cfg.get("callbacks") if app == "train" else None
    checkpoint = callbacks.get("model_checkpoint") if isinstance(callbacks, DictConfig) else None
    if isinstance(checkpoint, DictConfig) and checkpoint.get("save_weights_only") == "best" \
            and checkpoint.get("save_last") == "link":
        yield ("callbacks.model_checkpoint.save_last=link makes last.ckpt a link to the best checkpoint, which "
               "save_weights_only=best writes without the optimizer state a resume needs: use save_last=true, or "
               "save_weights_only=false with the link")
    model, data = (cfg.get("model"), cfg.get("data")) if app == "train" else (None, None)
    if isinstance(model, DictConfig) and isinstance(data, DictConfig) and model.get("max_chunks") is not None:
        stride, length = model.get("chunk_stride", 0), data.get("max_length")
        if _is_number(stride) and _is_number(length) and stride * 2 > length - 2:
            yield (f"model.chunk_stride={stride}: windows of data.max_length={length} tokens can repeat at most "
                   f"{(length - 2) // 2} tokens of the one before")
    if app == "thresholds":
        policy, value = cfg.get("policy"), cfg.get("value")
        if policy == "top_k" and value is not None and not integer(ge=1).ok(value):
            yield f"value={_show(value)}: policy=top_k takes an integer >= 1 (the labels kept per text)"
        if policy in ("precision_at_least", "recall_at_least") and value is not None and not real(gt=0, le=1).ok(value):
            yield f"value={_show(value)}: policy={policy} takes a number in (0, 1]"


def problems(cfg: DictConfig, app: str = "train") -> list[str]:
    """Every rule ``cfg`` breaks, one phrase each, naming the key, its value and what is allowed."""
    return [*_walk(cfg, "", APPS[app]), *_cross_checks(cfg, app)]


def validate(cfg: DictConfig, app: str = "train") -> None:
    """Raise one ConfigError listing what ``cfg`` breaks (the entry points print it as one ``error:`` line)."""
    found = problems(cfg, app)
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        raise ConfigError(shown)


# ---------------------------------------------------------------- Hydra's side: composition errors, sweeps


def _paths_under(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _paths_under(node._get_node(key), path)


def composition_message(error: CompactHydraException) -> str:
    """Hydra's message for a config that does not compose, as one line; for a key that does not exist, the
    existing keys it most resembles."""
    cause = error.__cause__
    text = " ".join(str(error).split())
    option = re.search(r"Could not find '(.+)/([^/']+)'", text)
    if option:  # Hydra lists the group's options one per line, indented by a tab
        group, name = option.groups()
        listed = str(error).partition("Available options")[2].splitlines()[1:]
        options = [line.strip() for line in listed[:next((i for i, x in enumerate(listed) if not x.startswith("\t")),
                                                         len(listed))]]
        return f"{group}={name} is not an option of {group}; it is one of: {', '.join(options)}"
    if isinstance(cause, OmegaConfBaseException) and "not in struct" in str(cause) and cause.full_key:
        key = str(cause.full_key)
        parent, _, leaf = key.rpartition(".")
        given = re.search(r"\+(\S+)", text)
        known = [f"{parent}.{p}" if parent else p for p in _paths_under(cause.parent_node, "")]
        same = [p for p in known if p.rsplit(".", 1)[-1] == leaf]
        close = same or difflib.get_close_matches(key, known, n=2, cutoff=0.8)
        hint = f" (did you mean {' or '.join(close[:2])}?)" if close else ""
        addition = f"; +{given.group(1)} would add a new key" if given else ""
        return f"{key} is not a key of this config{hint}; --cfg job prints them all{addition}{_swept_group_hint()}"
    extra = " ".join(str(cause).split()) if isinstance(cause, OmegaConfBaseException) else ""
    return f"{text} {extra}".strip()


def _swept_group_hint() -> str:
    """A ``--multirun`` composes its base config without the swept values, so a key that only a swept group option
    defines (``experiment=a,b data.source.data_dir=...``) is missing there: say so, with the fix."""
    if not {"-m", "--multirun"} & set(sys.argv):
        return ""
    swept = [arg for arg in sys.argv[1:] if re.fullmatch(r"[\w/]+=[^=]*,[^=]*", arg) and "." not in arg.split("=")[0]]
    if not swept:
        return ""
    return (f" (a --multirun checks keys against its base config, composed without the swept {', '.join(swept)}: "
            "also select the group that defines the key outside the sweep, e.g. data=goemotions)")


@contextmanager
def _one_line_composition_errors():
    """Hydra prints a config that does not compose over several lines (and with HYDRA_FULL_ERROR=1 as a traceback,
    which stays so); here it becomes one ``error:`` line, as every other bad option does."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except CompactHydraException as error:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise SystemExit(f"error: {composition_message(error)}") from None

        return original(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def app(config_name: str) -> Callable[[Callable], Callable]:
    """``@hydra.main`` of an entry point (``conf/<config_name>.yaml``), with composition errors as one line."""

    def decorate(task: Callable) -> Callable:
        main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(task)

        @functools.wraps(task)
        def run(cfg_passthrough: DictConfig | None = None) -> Any:
            with _one_line_composition_errors():
                return main(cfg_passthrough)

        return run

    return decorate


EXACT_JOBS = 32  # a grid up to this size is checked job by job (a composition takes ~0.3 s), a larger one by value


def planned_jobs(config: DictConfig) -> tuple[list[list[str]], bool]:
    """The overrides of the jobs to check before a ``--multirun`` launches, and whether they are exactly the jobs it
    will run: every job of a grid (Hydra's basic sweeper) of up to ``EXACT_JOBS``; for a larger grid, its first job
    and each other swept value in it; for a search, each swept key at each of its choices or range values, or an
    interval's two ends, beside the fixed overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    sweeper = config.hydra.sweeper
    lines = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(lines)
    by_key = {o.get_key_element(): o for o in overrides}  # the command line's value replaces the configured one
    if sweeper.get("_target_") == f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        grid = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        if len(grid) <= EXACT_JOBS:
            return grid, True
        columns = [[f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
                   for key, o in by_key.items()]
        base = [column[0] for column in columns]
        return [base] + [[*base[:i], entry, *base[i + 1:]] for i, column in enumerate(columns)
                         for entry in column[1:]], False
    fixed = [o.input_line for o in by_key.values() if not o.is_sweep_override()]
    jobs = [fixed]
    for key, override in by_key.items():
        if override.is_sweep_override():
            value = override.value()
            ends = [value.start, value.end] if isinstance(value, IntervalSweep) else override.sweep_string_iterator()
            jobs += [[*fixed, f"{key}={candidate}"] for candidate in ends]
    return jobs, False


def job_problems(job: DictConfig) -> list[str]:
    """:func:`problems` of a sweep job's config as the sweeper composes it (its ``hydra`` node is dropped)."""
    with open_dict(job):
        job.pop("hydra", None)
    return problems(job)


class SweepValidation(Callback):
    """Before a ``--multirun`` launches anything (and before its MLflow parent run exists): every job it will run is
    composed and validated; one bad job stops the sweep with one ``error:`` line naming the job and the key. Listed
    before ``mlflow_sweep`` in ``conf/hydra/default.yaml``, so it runs first."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        jobs, exact = planned_jobs(config)
        for overrides in jobs:
            try:
                job = loader.load_sweep_config(config, overrides)
            except (HydraException, OmegaConfBaseException) as error:
                if not exact:
                    continue  # not a job that will run (a search's trial that does not compose fails alone)
                message = composition_message(error) if isinstance(error, CompactHydraException) else error
                job = " ".join(overrides)
                raise SystemExit(f"error: the sweep's job '{job}' does not compose: {message}") from None
            found = job_problems(job)
            if found:
                raise SystemExit(f"error: the sweep's job '{' '.join(overrides)}' is invalid, nothing was launched: "
                                 + "; ".join(found))
