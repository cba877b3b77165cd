"""python -m src.export ckpt_path=PATH format=hf|onnx|mlflow [output_dir=DIR]: a trained model for use outside
labelwise.

``hf`` is the model artifact's own ``save_pretrained`` (config with labels and thresholds, weights, its modeling file,
the tokenizer truncating at the training length) with a model card; ``pipeline("text-classification", model=DIR,
trust_remote_code=True)`` loads it. ``onnx`` is the same model traced to ONNX (``quantize=int8``: dynamic int8,
its val macro-F1 change measured and limited). ``mlflow`` logs the hf export as an ``mlflow.pyfunc`` model to the
training run (``registered_model_name=NAME`` registers it, for ``mlflow models serve``). Every export is checked
against the checkpoint's logits; a directory is written under a temporary name and swapped in when complete, and
``push_to_hub=REPO`` uploads it (checked for network and a token before any work).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from src import resolvers
from src.errors import ConfigError, reported_to_user
from src.hub import check_hub, push
from src.inference import Predictor
from src.io import atomic_directory, write_text
from src.model_card import model_card
from src.models.ensemble import LabelwiseEnsemble
from src.onnx_engine import OPSET, check_options, export_onnx, require_onnx
from src.parity import check_parity, parity_batch
from src.progress import progress
from src.registry import check_registered_name, check_thresholds, log_mlflow_model
from src.schema import app, validate

resolvers.register()

FORMATS = ("hf", "onnx", "mlflow")
HF_TOLERANCE = 1e-4
# pipeline("text-classification", model=<export>, trust_remote_code=True) builds this class (modeling_labelwise.py)
CUSTOM_PIPELINES = {"text-classification": {"impl": "modeling_labelwise.LabelwisePipeline",
                                            "pt": ["AutoModelForSequenceClassification"], "type": "text"}}


def export_hf(predictor: Predictor, output_dir: Path) -> float:
    """A Hugging Face directory with the modeling code inside (``trust_remote_code=True``, offline); returns the
    parity check's max |logit difference| after loading it back through ``AutoModelForSequenceClassification``.

    No stock ``*ForSequenceClassification`` head computes our masked-mean pooling (they classify from [CLS]), so a
    plain load without remote code would silently change the model's predictions.
    """
    from transformers import AutoModelForSequenceClassification

    batch, reference = parity_batch(predictor)
    net = predictor.net
    type(net.config).register_for_auto_class()
    type(net).register_for_auto_class("AutoModelForSequenceClassification")
    net.config.custom_pipelines = CUSTOM_PIPELINES
    net.save_pretrained(output_dir)
    predictor.save_tokenizer(output_dir)
    reloaded = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        logits = reloaded(**batch).logits.float().numpy()
    return check_parity("hf", logits, reference, HF_TOLERANCE)


def write_export(predictor: Predictor, checkpoint: Path | None, directory: Path, kind: str, model_ref: str,
                 opset: int = OPSET, quantize: str | None = None, max_f1_loss: float | None = None) -> None:
    """An ``hf`` or ``onnx`` export with its model card into ``directory`` (a staging directory)."""
    quantization = None
    if kind == "hf":
        export_hf(predictor, directory)
    else:
        quantization = export_onnx(predictor, directory, opset, quantize, max_f1_loss)["quantization"]
    card = model_card(predictor, checkpoint, model_ref, kind, quantization)
    write_text(directory / "README.md", str(card))


def check_request(cfg: DictConfig) -> str | None:
    """Every option checked before the model is loaded; returns the hub token when pushing."""
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path= is required: pass ckpt_path=<run dir>/checkpoints/last.ckpt (or best-*.ckpt).")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: must be one of {', '.join(FORMATS)}.")
    if not cfg.output_dir and cfg.format != "mlflow":
        raise ConfigError("output_dir= is required: pass output_dir=<directory to write the exported model to>.")
    check_options(cfg.quantize, cfg.max_f1_loss)
    for key, needs in (("quantize", "onnx"), ("registered_model_name", "mlflow"), ("allow_default_thresholds",
                                                                                   "mlflow")):
        if cfg.get(key) and cfg.format != needs:
            raise ConfigError(f"{key}={cfg.get(key)} applies to format={needs} only (this is format={cfg.format}).")
    if cfg.push_to_hub and cfg.format == "mlflow":
        raise ConfigError("push_to_hub goes with format=hf or format=onnx; format=mlflow logs to MLflow.")
    if cfg.format == "onnx":
        require_onnx()
    check_registered_name(cfg.registered_model_name)
    return check_hub(cfg.push_to_hub) if cfg.push_to_hub else None


def export(cfg: DictConfig) -> Path | Any:
    token = check_request(cfg)
    checkpoint = Path(to_absolute_path(str(cfg.ckpt_path)))
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    if isinstance(predictor.net, LabelwiseEnsemble) and cfg.format != "onnx":
        raise ConfigError(f"format={cfg.format}: {checkpoint} is an ensemble of {len(predictor.net.members)} models, "
                          "which a Hugging Face directory does not hold as one model; export it with format=onnx "
                          "(one graph holding every member).")
    if cfg.format == "mlflow":
        return export_mlflow(predictor, checkpoint, cfg)
    output_dir = Path(to_absolute_path(str(cfg.output_dir)))
    with progress(f"exporting ({cfg.format}) and checking parity") as advance, atomic_directory(output_dir) as staging:
        write_export(predictor, checkpoint, staging, cfg.format, cfg.push_to_hub or str(output_dir), int(cfg.opset),
                     cfg.quantize, cfg.max_f1_loss)
        advance(1)
    if cfg.format == "hf":
        print(f"exported to {output_dir}: load with AutoModelForSequenceClassification.from_pretrained(")
        print(f"    {str(output_dir)!r}, trust_remote_code=True)  # the modeling code is in the directory")
    else:
        print(f"exported to {output_dir}: model.onnx (inputs input_ids, attention_mask; output logits)"
              + (", dynamic int8" if cfg.quantize else ""))
    if token:
        print(f"pushed to {push(output_dir, cfg.push_to_hub, token)}")
    return output_dir


def export_mlflow(predictor: Predictor, checkpoint: Path | None, cfg: DictConfig | dict, uri: str | None = None):
    """Log (and register) the model as an ``mlflow.pyfunc`` model; the hf export it wraps is written to
    ``cfg.output_dir`` when given (else a temporary directory)."""
    check_thresholds(predictor, bool(cfg.get("allow_default_thresholds")))
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(to_absolute_path(str(cfg["output_dir"]))) if cfg.get("output_dir") else Path(temporary)
        with progress("exporting (hf) and checking parity") as advance, atomic_directory(directory) as staging:
            write_export(predictor, checkpoint, staging, "hf", str(directory))
            advance(1)
        info = log_mlflow_model(predictor, directory, checkpoint, uri or cfg.get("mlflow_uri"),
                                cfg.get("registered_model_name"))
    print(f"logged the MLflow model to run {info.run_id}: {info.model_uri}")
    if info.registered_model_version:
        name, version = cfg["registered_model_name"], info.registered_model_version
        print(f"registered as {name} version {version}: mlflow models serve -m models:/{name}/{version} "
              "--env-manager local")
    return info


def check_before_training(options: DictConfig | None) -> str | None:
    """``src.train``'s ``export.*`` options, checked before training starts; returns the hub token when pushing."""
    if not options:
        return None
    check_registered_name(options.get("registered_model_name"))
    return check_hub(options.push_to_hub) if options.get("push_to_hub") else None


def after_training(options: DictConfig | None, summary: dict[str, Any], token: str | None = None) -> None:
    """``export.mlflow=true`` logs the run's best checkpoint as an MLflow model to the run itself;
    ``export.push_to_hub=REPO`` writes its hf export to ``<run dir>/export/hf`` and pushes it."""
    if not options or not (options.get("mlflow") or options.get("push_to_hub")):
        return
    checkpoint = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    if not checkpoint:
        raise ConfigError("export.mlflow / export.push_to_hub need a saved checkpoint, but this run saved none "
                          "(callbacks.model_checkpoint=null?).")
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    if options.get("push_to_hub"):
        directory = Path(summary["output_dir"]) / "export" / "hf"
        with atomic_directory(directory) as staging:
            write_export(predictor, Path(checkpoint), staging, "hf", options.push_to_hub)
        print(f"pushed to {push(directory, options.push_to_hub, token)}")
    if options.get("mlflow"):
        export_mlflow(predictor, Path(checkpoint), options, summary["mlflow"].get("tracking_uri"))


@app("export")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        validate(cfg, "export")
        export(cfg)


if __name__ == "__main__":
    main()
