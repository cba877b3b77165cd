"""The model card (``README.md``) of an export, through ``huggingface_hub.ModelCard``: what the model is (base model,
labels, decision thresholds), what it was trained on (data fingerprint, a summary of the training config), how well
it did (the run's ``summary.json``: macro-F1 with its bootstrap interval per split), how it was compressed (the int8
F1 change) and how to load it. What the checkpoint and its run directory do not hold is written as "not available",
never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.inference import Predictor
from src.losses.auto import chosen_loss
from src.metrics.thresholds import CROSSFIT_REPEATS

NA = "not available"


def run_summary(predictor: Predictor, checkpoint: Path | None) -> dict[str, Any] | None:
    """The training run's ``summary.json``: in its run directory (the config's ``paths.output_dir``, or the directory
    above ``checkpoints/``), if it is still there. For a seed ensemble (``ensemble.ckpt``, in its run directory),
    the ensemble's own val/test metrics from ``ensemble_summary.json``."""
    if predictor.metadata.get("kind") == "ensemble":
        path = Path(predictor.metadata.get("config", {}).get("paths", {}).get("output_dir", "")) / \
            "ensemble_summary.json"
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        return {"metrics": {split: result["metrics"][f"ensemble_{split}"] for split in ("val", "test")
                            if f"ensemble_{split}" in result["metrics"]},
                "thresholds": result["thresholds"], "best_checkpoint": result["checkpoint"]}
    candidates = []
    output_dir = predictor.metadata.get("config", {}).get("paths", {}).get("output_dir")
    if output_dir:
        candidates.append(Path(output_dir))
    if checkpoint is not None:
        candidates.append(checkpoint.resolve().parent.parent)
    for directory in candidates:
        if (directory / "summary.json").is_file():
            return json.loads((directory / "summary.json").read_text())
    return None


def ensemble_note(predictor: Predictor) -> str:
    """How a seed ensemble differs from one model, for the card's first sentence."""
    members = getattr(predictor.net.config, "ensemble", None)
    return (f": a seed ensemble of {len(members)} such models, whose probabilities are averaged" if members
            else "")


def data_fingerprint(predictor: Predictor) -> str | None:
    """The run's ``labelwise.data_fingerprint`` tag, read from its MLflow store when that is a local SQLite file
    (opening a missing one would create it; a remote server may be unreachable)."""
    run_id = predictor.metadata.get("mlflow_run_id")
    uri = predictor.metadata.get("config", {}).get("paths", {}).get("mlflow_uri", "")
    if not run_id or not uri.startswith("sqlite:///") or not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(uri).get_run(run_id).data.tags.get("labelwise.data_fingerprint")
    except MlflowException:
        return None


def short(node: Any) -> str:
    """A config node in one line: ``AsymmetricLoss(gamma_neg=4.0, clip=0.05)`` for a ``_target_`` node."""
    if not isinstance(node, Mapping):
        return "none" if node is None else str(node)
    name = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    arguments = ", ".join(f"{key}={value}" for key, value in node.items()
                          if not str(key).startswith("_") and not isinstance(value, Mapping))
    return f"{name}({arguments})"


def training_rows(config: Mapping[str, Any], exclusive: bool = False) -> list[tuple[str, str]]:
    """The run's settings; ``loss=auto`` shows the loss it chose for the task (``exclusive``: multi-class)."""
    data, model, trainer = config.get("data", {}), config.get("model", {}), config.get("trainer", {})
    source = data.get("source", {})
    return [
        ("data source", short(source)),
        ("encoder", f"{model.get('name_or_path', NA)} (pooling {model.get('pooling', NA)}, "
                    f"head hidden layer {model.get('hidden', 0) or 'none'})"),
        ("loss", short(chosen_loss(config.get("loss"), exclusive))),
        ("optimizer", short(config.get("optim"))),
        ("scheduler", short(config.get("scheduler"))),
        ("sampler / augmentation", f"{short(data.get('sampler'))} / {short(data.get('augment'))}"),
        ("epochs (max)", str(trainer.get("max_epochs", NA))),
        ("batch size", f"{data.get('batch_size', NA)} x {trainer.get('accumulate_grad_batches', 1)} accumulated"),
        ("max sequence length", str(data.get("max_length", NA))),
        ("precision", str(trainer.get("precision", NA))),
        ("seed", str(config.get("seed", NA))),
    ]


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else NA


def metrics_section(summary: dict[str, Any] | None, checkpoint: Path | None) -> str:
    if summary is None:
        return f"Metrics: {NA} (the training run's summary.json was not found next to its checkpoints)."
    tuned = bool(summary.get("thresholds"))
    rows = []
    for split in ("val", "test"):  # train's numbers come from the training loop (dropout on, no thresholds)
        row = summary.get("metrics", {}).get(split)
        if not row:
            continue
        interval = row.get("macro_f1_ci95")
        rows.append((split, number(row.get("macro_f1_tuned" if tuned else "macro_f1")),
                     f"{interval[0]:.4f} - {interval[1]:.4f}" if interval else NA, number(row.get("macro_f1")),
                     number(row.get("micro_f1_tuned" if tuned else "micro_f1")),
                     number(row.get("macro_f1_tuned_crossfit")) if split == "val" else ""))
    text = table(("split", "macro-F1", "95% bootstrap interval", "macro-F1 at 0.5", "micro-F1",
                  "macro-F1, thresholds cross-fitted"), rows) if rows else f"Metrics: {NA}."
    text += ("\n\nmacro-F1 and micro-F1 use the model's decision rule (its tuned thresholds)" if tuned else
             "\n\nmacro-F1 and micro-F1 decide at 0.5 (no tuned thresholds)")
    text += ("; the val row's cross-fitted column tunes thresholds on one half of val and scores the other (both ways, "
             f"mean of {CROSSFIT_REPEATS} random halvings), an honest estimate where the plain val numbers are "
             "flattered by tuning on val.")
    best = summary.get("best_checkpoint")
    if checkpoint is not None and best and Path(best).resolve() != checkpoint.resolve():
        text += (f"\n\nThese are the metrics of the run's best checkpoint (`{Path(best).name}`); this model was "
                 f"exported from `{checkpoint.name}`.")
    return text


def thresholds_section(predictor: Predictor) -> str:
    space, stored = predictor.labels, predictor.thresholds
    counts = space.counts or [NA] * space.num_labels
    if space.exclusive:
        rows = [(name, count) for name, count in zip(space.names, counts)]
        return ("Multi-class: each text gets the label with the highest softmax score.\n\n"
                + table(("label", "training rows"), rows))
    if stored and stored.top_k:
        rows = [(name, count) for name, count in zip(space.names, counts)]
        return (f"Multi-label: each text gets its {stored.top_k} best-scoring labels (operating point "
                f"{stored.policy}).\n\n" + table(("label", "training rows"), rows))
    cut = stored.per_label if stored else [0.5] * space.num_labels
    rows = [(name, count, f"{value:.3f}") for name, count, value in zip(space.names, counts, cut)]
    rule = ("Multi-label: a text gets every label whose sigmoid score is above the label's threshold"
            + (", tuned on the validation split (per-label thresholds shrunk toward one global threshold, "
               f"{stored.global_threshold:.2f})" if stored else " (0.5: no thresholds were tuned)")
            + (", and its top label when none passes" if stored and stored.at_least_one else "")
            + (f" (operating point {stored.policy}, chosen after training)." if stored and stored.policy != "max_f1"
               else "."))
    return rule + "\n\n" + table(("label", "training rows", "threshold"), rows)


def quantization_section(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    f1 = record.get("val_macro_f1")
    measured = (f"val macro-F1 {f1['fp32']:.4f} (fp32) -> {f1['int8']:.4f} (int8) at the model's thresholds on "
                f"{record['val_rows']:,} rows; change {record['macro_f1_change']:+.4f} {record['change_estimate']} "
                f"(allowed loss: {record['max_f1_loss']})"
                if f1 else "F1 change not measured (exported with max_f1_loss=null)")
    cpu = record.get("cpu") or {}
    where = ""
    if f1 and cpu.get("vnni") is not None:
        where = f" Measured on an {cpu['machine']} CPU {'with' if cpu['vnni'] else 'without'} VNNI"
        where += ("; on x86 CPUs without it (AVX2, early AVX-512) ONNX Runtime's int8 kernels add in saturating "
                  "16-bit and can score differently, so measure the change again on such a machine before serving "
                  "there." if cpu["vnni"] else ".")
    return f"\n## Quantization\n\n{record['method']}: {measured}.{where}\n"


def usage_section(model_ref: str, kind: str) -> str:
    if kind == "onnx":
        return f"""```python
import json, numpy as np, onnxruntime
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{model_ref}")
info = json.load(open("{model_ref}/labelwise.json"))  # labels, thresholds, max_length
session = onnxruntime.InferenceSession("{model_ref}/model.onnx")
batch = tokenizer(["What a wonderful day!"], truncation=True, max_length=info["max_length"], padding=True,
                  return_tensors="np")
(logits,) = session.run(["logits"], {{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}})
```

`logits` are sigmoid (multi-label) or softmax (multi-class) scores before the squashing (`info["scores"]`); decide
with `info["thresholds"]`. With labelwise: `python -m src.predict ckpt_path={model_ref} input=texts.txt`
(ONNX Runtime engine)."""
    return f"""```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

classify = pipeline("text-classification", model="{model_ref}", trust_remote_code=True, top_k=None)
classify("What a wonderful day!")  # every label with its score (truncated at max_seq_length, as in training)

model = AutoModelForSequenceClassification.from_pretrained("{model_ref}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{model_ref}", trust_remote_code=True)  # it reads config.json
batch = tokenizer(["What a wonderful day!"], truncation=True, max_length=model.config.max_seq_length,
                  padding=True, return_tensors="pt")
scores = model.probabilities(model(**batch).logits)
labels = [[model.config.id2label[i] for i in row.nonzero().flatten().tolist()] for row in model.decide(scores)]
```

`trust_remote_code=True` runs `modeling_labelwise.py` from this directory (torch and transformers only; read it
first): no stock head pools tokens by a masked mean as this model does, so a plain load would change its
predictions. `model.decide` applies the decision thresholds above. With labelwise:
`python -m src.predict ckpt_path={model_ref} input=texts.txt`."""


def model_card(predictor: Predictor, checkpoint: Path | None, model_ref: str, kind: str = "hf",
               quantization: dict[str, Any] | None = None):
    """A ``huggingface_hub.ModelCard`` for the export of ``predictor`` (loaded from ``checkpoint``); ``model_ref`` is
    what the usage snippet loads (the hub repo or the directory), ``kind`` ``hf`` or ``onnx``."""
    from huggingface_hub import ModelCard, ModelCardData

    from src import __version__

    config = predictor.metadata.get("config") or {}
    space, base = predictor.labels, predictor.net.config.base_model
    hub_base = base if base and not Path(base).expanduser().exists() else None  # a local path is no hub id
    summary = run_summary(predictor, checkpoint)
    data = ModelCardData(library_name="transformers", pipeline_tag="text-classification", base_model=hub_base,
                         tags=["labelwise", "text-classification", space.task] + (["onnx"] if kind == "onnx" else []))
    run_id = predictor.metadata.get("mlflow_run_id")
    fingerprint = data_fingerprint(predictor)
    training = (table(("setting", "value"), training_rows(config, space.exclusive)) if config
                else f"Training configuration: {NA} (this model carries no training run config).")
    body = f"""# {model_ref.rstrip("/").rsplit("/", 1)[-1]}

A {space.task} text classifier over {space.num_labels} labels, fine-tuned from `{base or NA}` with
labelwise {__version__}{ensemble_note(predictor)}.

- base model: `{base or NA}`
- labels: {", ".join(f"`{name}`" for name in space.names)}
- data fingerprint: `{fingerprint or NA}` (a hash of every split's texts and labels: same data, same value)
- training rows: {space.num_train if space.num_train is not None else NA}
- MLflow run: `{run_id or NA}`

## Labels and decision thresholds

{thresholds_section(predictor)}

## Evaluation

{metrics_section(summary, checkpoint)}

## Training

{training}
{quantization_section(quantization)}
## How to use

{usage_section(model_ref, kind)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
