"""python -m src.export ckpt_path=PATH format=hf|onnx output_dir=DIR: a trained model for use outside labelwise.

``hf`` is the model artifact's own ``save_pretrained`` (config with labels and thresholds, weights, its modeling file,
the tokenizer); ``onnx`` is the same model traced to ONNX. Every export is checked against the checkpoint: the
exported model's logits on a few texts of different lengths (so padding and masking are exercised) must match, or
the command fails. The directory is written under a temporary name and swapped in when complete.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from src import CONFIG_PATH, resolvers
from src.errors import ConfigError, LabelwiseError, reported_to_user
from src.inference import Predictor
from src.io import atomic_directory, write_json
from src.progress import progress

resolvers.register()

FORMATS = ("hf", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export (dynamo) needs onnxscript
HF_TOLERANCE = 1e-4
ONNX_TOLERANCE = 1e-3
PARITY_TEXTS = (
    "I can't believe how wonderful this day turned out!",
    "ok",
    "This is the most unfair, rude and infuriating thing anyone has said to me, and I am still shaking with anger.",
    "Not sure how I feel about it.",
)


class ParityError(LabelwiseError):
    """The exported model does not reproduce the checkpoint's logits."""


class Logits(torch.nn.Module):
    """The model with plain tensor inputs and output, for tracing."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits


def parity_batch(predictor: Predictor) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """A padded batch of :data:`PARITY_TEXTS` and our model's fp32 logits on it."""
    batch = predictor.tokenizer(list(PARITY_TEXTS), padding=True, truncation=True, max_length=predictor.max_length,
                                return_tensors="pt")
    batch = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        logits = predictor.net.float().cpu().eval()(**batch).logits.numpy()
    return batch, logits


def check_parity(name: str, exported: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(np.asarray(exported, dtype=np.float64) - reference).max())
    print(f"parity ({name}): max |logit difference| = {diff:.2e} on {len(reference)} texts (tolerance {tolerance:g})")
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"the {name} export disagrees with the checkpoint (max |logit difference| {diff:.3g} > {tolerance:g}); "
            "nothing was written. Please report this with the model name."
        )
    return diff


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
    net.save_pretrained(output_dir)
    predictor.tokenizer.save_pretrained(output_dir)
    reloaded = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        logits = reloaded(**batch).logits.float().numpy()
    return check_parity("hf", logits, reference, HF_TOLERANCE)


def require_onnx() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"format=onnx needs the optional ONNX packages ({', '.join(missing)} not installed): "
            'pip install -e ".[onnx]"'
        )


def export_onnx(predictor: Predictor, output_dir: Path, opset: int = 18) -> float:
    """``model.onnx`` (+ its external weights file) with dynamic batch and sequence axes, the tokenizer, and
    ``labelwise.json`` (labels, task, thresholds, max_length); returns onnxruntime's parity difference."""
    require_onnx()
    if opset < 17:
        raise ConfigError(f"opset={opset}: use 17 or newer (needed for LayerNormalization).")
    import onnxruntime

    batch, reference = parity_batch(predictor)
    inputs = (batch["input_ids"], batch["attention_mask"])
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    path = output_dir / "model.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
            torch.onnx.export(Logits(predictor.net), inputs, str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                              opset_version=opset, dynamo=True, verbose=False)
    except Exception as error:
        raise ConfigError(f"torch.onnx.export failed for this model: {str(error).splitlines()[0]}") from None
    predictor.tokenizer.save_pretrained(output_dir)
    labels = predictor.labels
    write_json(output_dir / "labelwise.json", {
        "label_names": list(labels.names),
        "task": labels.task,
        "scores": "softmax" if labels.exclusive else "sigmoid",
        "thresholds": predictor.net.config.thresholds,
        "max_length": predictor.max_length,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
    })
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input_ids": inputs[0].numpy(), "attention_mask": inputs[1].numpy()})
    return check_parity("onnx", logits, reference, ONNX_TOLERANCE)


def export(cfg: DictConfig) -> Path:
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path= is required: pass ckpt_path=<run dir>/checkpoints/last.ckpt (or best-*.ckpt).")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: must be one of {', '.join(FORMATS)}.")
    if not cfg.output_dir:
        raise ConfigError("output_dir= is required: pass output_dir=<directory to write the exported model to>.")
    if cfg.format == "onnx":
        require_onnx()  # before the model load
    output_dir = Path(to_absolute_path(str(cfg.output_dir)))
    predictor = Predictor.from_checkpoint(to_absolute_path(str(cfg.ckpt_path)), "cpu")
    with progress(f"exporting ({cfg.format}) and checking parity") as advance, atomic_directory(output_dir) as staging:
        if cfg.format == "hf":
            export_hf(predictor, staging)
        else:
            export_onnx(predictor, staging, int(cfg.opset))
        advance(1)
    if cfg.format == "hf":
        print(f"exported to {output_dir}: load with AutoModelForSequenceClassification.from_pretrained(")
        print(f"    {str(output_dir)!r}, trust_remote_code=True)  # the modeling code is in the directory")
    else:
        print(f"exported to {output_dir}: model.onnx (inputs input_ids, attention_mask; output logits)")
    return output_dir


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        export(cfg)


if __name__ == "__main__":
    main()
