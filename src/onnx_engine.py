"""Fast CPU inference with ONNX Runtime: the model traced to ONNX, optionally with its Linear layers quantized to
dynamic int8, run behind the torch model's interface so :class:`~src.inference.Predictor` batches, scores and
decides for it exactly as for the torch model.

Dynamic int8 (``onnxruntime.quantization.quantize_dynamic``) stores the weights of every Linear layer (the ONNX
MatMul/Gemm nodes with a constant weight) as int8, one scale per output channel, and quantizes their inputs per
batch at run time; embeddings, LayerNorm, attention and softmax stay fp32. It changes the scores a little, so the
change in macro-F1 (with the model's own decision thresholds) is measured on the run's validation split at export
time, stored in ``labelwise.json`` and the model card, and an export that loses more than ``max_f1_loss`` is
refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from src.errors import ConfigError
from src.inference import MAX_F1_LOSS, Predictor
from src.io import atomic_directory, write_json
from src.metrics.classification import decision_metrics
from src.metrics.thresholds import CROSSFIT_REPEATS, cross_fitted_change
from src.models.modeling_labelwise import LabelwiseConfig
from src.parity import check_parity, parity_batch
from src.pretrained import fingerprint, load_tokenizer
from src.runtime import cpu_int8

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export (dynamo) needs onnxscript
ONNX_TOLERANCE = 1e-3
QUANTIZE = ("int8",)
MODEL_FILE = "model.onnx"
INFO_FILE = "labelwise.json"
DEFAULT_CACHE = "outputs/.cache/onnx"
CACHE_FORMAT = 3  # part of the cache key: bump when the export itself changes
# 23 has ONNX's own Attention op, which the exporter maps SDPA to: one ONNX Runtime kernel per layer instead of ~20
# nodes (MiniLM on GoEmotions dev, 2-core AVX512 EPYC: int8 682 -> 823 texts/s, fp32 322 -> 350; docs/speed.md)
OPSET = 23


class QuantizationError(ConfigError):
    """An int8 export that loses more validation macro-F1 than allowed."""


def require_onnx(option: str = "format=onnx") -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{option} needs the optional ONNX packages ({', '.join(missing)} not installed): "
            'pip install -e ".[onnx]"'
        )


def check_options(quantize: str | None, max_f1_loss: float | None) -> None:
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize={quantize}: must be one of {', '.join(QUANTIZE)}, or null for fp32.")
    if max_f1_loss is not None and not (isinstance(max_f1_loss, (int, float)) and max_f1_loss >= 0):
        raise ConfigError(f"max_f1_loss={max_f1_loss}: the macro-F1 an int8 export may lose on val, a number >= 0 "
                          "(e.g. 0.005), or null to export without measuring it.")


class Logits(torch.nn.Module):
    """The model with plain tensor inputs and output, for tracing."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits


class OnnxNet(torch.nn.Module):
    """An ONNX Runtime session behind the torch model's interface (``config``, ``device``, ``forward(...).logits``)."""

    def __init__(self, session, config: LabelwiseConfig):
        super().__init__()
        self.session = session
        self.config = config
        self.device = torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> SequenceClassifierOutput:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids.cpu().numpy(),
                                                  "attention_mask": attention_mask.cpu().numpy()})
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about graph rewrites
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx(directory: str | Path) -> Predictor:
    """The predictor of an ONNX export directory (``src.export format=onnx``)."""
    require_onnx("engine=onnx")
    directory = Path(directory)
    metadata = json.loads((directory / INFO_FILE).read_text()) if (directory / INFO_FILE).is_file() else {}
    if "config" not in metadata:
        raise ConfigError(f"{directory}: an ONNX export without the model config in {INFO_FILE} (written by an older "
                          "labelwise): export it again with python -m src.export format=onnx.")
    check_cpu(directory, metadata.get("quantization"))
    net = OnnxNet(session(directory / MODEL_FILE), LabelwiseConfig.from_dict(metadata["config"]))
    return Predictor(net=net, tokenizer=load_tokenizer(str(directory)), metadata=metadata)


def check_cpu(directory: Path, record: dict[str, Any] | None) -> None:
    """A note when an int8 export's F1 change was measured with VNNI and this x86 CPU has none: its int8 kernels
    add in saturating 16-bit, so the measured change need not hold here."""
    measured = (record or {}).get("cpu") or {}
    if measured.get("vnni") and cpu_int8()["vnni"] is False:
        print(f"note: {directory} is int8, and its val macro-F1 change ({record['macro_f1_change']:+.4f}) was measured "
              "on a CPU with VNNI. This CPU has none, so ONNX Runtime's int8 kernels add in saturating 16-bit here and "
              "can score differently: measure it on this machine (python -m src.export ckpt_path=<checkpoint> "
              "format=onnx quantize=int8, or src.predict with the checkpoint and engine=onnx quantize=int8) or use "
              "the fp32 export.", file=sys.stderr)


def export_onnx(predictor: Predictor, output_dir: Path, opset: int = OPSET, quantize: str | None = None,
                max_f1_loss: float | None = MAX_F1_LOSS) -> dict[str, Any]:
    """``model.onnx`` (dynamic batch and sequence axes; a hierarchical model's ids are ``[batch, chunks, sequence]``),
    the tokenizer and ``labelwise.json`` (labels, task,
    thresholds, max_length, quantization, the model config) into ``output_dir``; returns what
    ``labelwise.json`` holds. The fp32 graph must match the checkpoint (parity); ``quantize="int8"`` then
    quantizes it and measures the val macro-F1 change (the split is read first, so a missing one fails early)."""
    require_onnx()
    check_options(quantize, max_f1_loss)
    if opset < 17:
        raise ConfigError(f"opset={opset}: use 17 or newer (needed for LayerNormalization).")
    validation = predictor.validation_split() if quantize and max_f1_loss is not None else None

    batch, reference = parity_batch(predictor)
    inputs = (batch["input_ids"], batch["attention_mask"])
    names = ("batch", "chunks", "sequence") if batch["input_ids"].dim() == 3 else ("batch", "sequence")
    axes = {axis: torch.export.Dim(name) for axis, name in enumerate(names)}
    path = output_dir / MODEL_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
            torch.onnx.export(Logits(predictor.net), inputs, str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                              opset_version=opset, dynamo=True, verbose=False)
    except Exception as error:
        raise ConfigError(f"torch.onnx.export failed for this model: {str(error).splitlines()[0]}") from None
    predictor.save_tokenizer(output_dir)
    try:
        graph = session(path)
    except Exception as error:  # onnxruntime's own exception types (InvalidGraph, Fail, ...)
        raise ConfigError(f"opset={opset}: ONNX Runtime cannot load the exported graph ({str(error).splitlines()[0]}). "
                          f"Use an opset this onnxruntime supports: the default opset={OPSET} does.") from None
    (logits,) = graph.run(["logits"], {key: value.numpy() for key, value in batch.items()})
    check_parity("onnx", logits, reference, ONNX_TOLERANCE)
    labels = predictor.labels
    info = {
        "label_names": list(labels.names),
        "task": labels.task,
        "scores": "softmax" if labels.exclusive else "sigmoid",
        "thresholds": predictor.net.config.thresholds,
        "max_length": predictor.max_length,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
        "quantization": None,
        # the model config without its pointers to modeling code, which this directory does not ship (a config.json
        # naming it would make AutoTokenizer ask for remote code)
        "config": {key: value for key, value in predictor.net.config.to_dict().items()
                   if key not in ("auto_map", "custom_pipelines")},
    }
    if quantize:
        write_json(output_dir / INFO_FILE, info)  # what load_onnx reads
        quantize_int8(path)
        info["quantization"] = int8_change(predictor, load_onnx(output_dir), validation, max_f1_loss)
    write_json(output_dir / INFO_FILE, info)
    return info


def quantize_int8(path: Path) -> None:
    """Dynamic int8 on the Linear layers, in place: ``model.onnx`` and its external weights file become one smaller
    file. Only MatMuls with a constant weight are quantized (attention's query-key products stay fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("model.int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the model first: no gain measured here
    try:
        # per output channel: one scale per column instead of per matrix halves the score error at the same speed
        # (MiniLM on GoEmotions dev, three checkpoints: mean |score change| 0.005-0.006 against 0.011-0.015)
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         per_channel=True, extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    os.replace(quantized, path)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def int8_change(reference: Predictor, quantized: Predictor, validation: tuple[list[str], np.ndarray] | None,
                max_f1_loss: float | None) -> dict[str, Any]:
    """The quantization record: val macro-F1 of the checkpoint (fp32) and of the int8 model, each deciding with the
    model's thresholds, and ``macro_f1_change``, which ``max_f1_loss`` bounds (a QuantizationError past it).

    Thresholds tuned on these same rows (the training run's ``max_f1`` thresholds) sit at fp32's in-sample optimum, so
    any change of the scores loses F1 on them, also one that costs nothing on new rows (a GoEmotions MiniLM: -0.0073
    in-sample against -0.0013 cross-fitted). For those thresholds the change is cross-fitted with the run's
    own threshold options (:func:`~src.metrics.thresholds.cross_fitted_change`); for any other decision rule (0.5,
    argmax, an operating point chosen after training) it is the in-sample change."""
    record: dict[str, Any] = {"method": "dynamic int8 (onnxruntime quantize_dynamic: Linear-layer weights int8 per "
                                        "output channel, activations quantized per batch)",
                              "max_f1_loss": max_f1_loss, "val_rows": None, "val_macro_f1": None,
                              "macro_f1_change": None, "change_estimate": None}
    if validation is None:
        print("quantize=int8 with max_f1_loss=null: the F1 change was not measured", file=sys.stderr)
        return record
    texts, targets = validation
    space, truth = reference.labels, targets.astype(bool)
    scores, f1 = {}, {}
    for name, model in (("fp32", reference), ("int8", quantized)):
        scores[name] = model.scores(texts, precision="32-true", description=f"val macro-F1 ({name})")
        f1[name] = decision_metrics(space, truth, space.decide(scores[name], model.thresholds))["macro_f1"]
    options = reference.tuning_options()
    if options is None:
        change, estimate = f1["int8"] - f1["fp32"], "in-sample"
    else:
        change = cross_fitted_change(scores["fp32"], scores["int8"], truth, **options)
        estimate = f"cross-fitted ({CROSSFIT_REPEATS} halvings)"
    record.update(val_rows=len(texts), val_macro_f1=f1, macro_f1_change=change, change_estimate=estimate,
                  cpu=cpu_int8())
    print(f"int8: val macro-F1 {f1['fp32']:.4f} (fp32) -> {f1['int8']:.4f} (int8) at the model's thresholds on "
          f"{len(texts):,} rows; change {change:+.4f} {estimate} (max_f1_loss {max_f1_loss:g})", file=sys.stderr)
    check_loss(record, max_f1_loss)
    return record


def check_loss(record: dict[str, Any], max_f1_loss: float | None) -> None:
    change = record.get("macro_f1_change")
    if max_f1_loss is not None and change is not None and -change > max_f1_loss:
        f1 = record["val_macro_f1"]
        raise QuantizationError(
            f"quantize=int8 loses {-change:.4f} val macro-F1 ({record['change_estimate']}; at the model's thresholds "
            f"{f1['fp32']:.4f} -> {f1['int8']:.4f}), more than max_f1_loss={max_f1_loss:g}: "
            f"nothing was written. Use the fp32 model (no quantize=), or accept the loss with "
            f"max_f1_loss={math.ceil(-change * 1000) / 1000:g}."
        )


def identity(source: Path) -> list:
    """What identifies a model's files: path, size and modification time (every file of a directory)."""
    if source.is_dir():
        return fingerprint(str(source))
    stat = source.stat()
    return [str(source.resolve()), stat.st_size, stat.st_mtime_ns]


def cached_export(predictor: Predictor, source: Path, quantize: str | None, cache_dir: str | Path | None,
                  max_f1_loss: float | None = MAX_F1_LOSS) -> Path:
    """The ONNX export of ``predictor`` (loaded from ``source``), made once into ``cache_dir`` and reused while
    ``source`` is unchanged; an int8 one is checked against ``max_f1_loss`` again when reused."""
    check_options(quantize, max_f1_loss)
    key = json.dumps([identity(source), quantize, CACHE_FORMAT])
    directory = Path(cache_dir or DEFAULT_CACHE) / hashlib.sha256(key.encode()).hexdigest()[:16]
    info = directory / INFO_FILE
    if info.is_file():
        record = json.loads(info.read_text()).get("quantization") or {}
        if record.get("macro_f1_change") is not None or max_f1_loss is None or not quantize:  # else: measure now
            check_loss(record, max_f1_loss)
            return directory
    print(f"exporting the model to ONNX{' (int8)' if quantize else ''} once, into {directory}", file=sys.stderr)
    with atomic_directory(directory) as staging:
        export_onnx(predictor, staging, quantize=quantize, max_f1_loss=max_f1_loss)
    return directory
