"""A trained model ready to label texts: the artifact, its tokenizer, its labels and decision thresholds.

Texts are tokenised as in training (same truncation), scored in length-sorted batches under bf16 autocast where the
hardware is fast at it, and returned in input order. :meth:`Predictor.load` takes what labelwise writes: a
checkpoint, an exported Hugging Face directory or an exported ONNX directory, on the torch or the ONNX Runtime engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig

from src.data.batching import map_sorted_batches
from src.data.token_cache import tokenize
from src.errors import ConfigError, LabelwiseError
from src.labels import LabelSpace
from src.metrics.thresholds import Thresholds, override
from src.models.build import from_stored, labels_of
from src.models.modeling_labelwise import LabelwiseConfig, LabelwiseForSequenceClassification
from src.models.module import CHECKPOINT_KEY
from src.pretrained import load_tokenizer
from src.runtime import fast_precision, pad_multiple
from src.tracking.checkpoint import is_deepspeed_checkpoint, read_checkpoint

ENGINES = ("torch", "onnx")
# An export's config.json names model_type "labelwise" with remote code (auto_map): known locally, loading its config
# or tokenizer here needs no trust_remote_code (nor asks for it)
AutoConfig.register(LabelwiseConfig.model_type, LabelwiseConfig, exist_ok=True)
MAX_F1_LOSS = 0.005  # default limit on the val macro-F1 an int8 ONNX model may lose (src/onnx_engine.py)


@dataclass
class Predictor:
    net: LabelwiseForSequenceClassification  # eval mode, on its device
    tokenizer: Any
    metadata: dict[str, Any]  # the checkpoint's labelwise entry (run config, MLflow run id ...)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """The model a checkpoint holds (built from its stored config: no pretrained weights are read)."""
        checkpoint = read_checkpoint(path)
        metadata = checkpoint[CHECKPOINT_KEY]
        prefix = "net."
        state = {key.removeprefix(prefix): value for key, value in checkpoint["state_dict"].items()
                 if key.startswith(prefix)}
        net = from_stored(metadata["net_config"], state).to(device)
        return cls(net=net, tokenizer=load_tokenizer(net.config.base_model), metadata=metadata)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """An exported Hugging Face directory (``src.export format=hf``); it carries no training run metadata."""
        net = LabelwiseForSequenceClassification.from_pretrained(directory).eval().to(device)
        return cls(net=net, tokenizer=load_tokenizer(str(directory)), metadata={})

    @classmethod
    def load(cls, path: str | Path, engine: str | None = None, quantize: str | None = None,
             device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
             max_f1_loss: float | None = MAX_F1_LOSS) -> Predictor:
        """A checkpoint (``.ckpt``; a seed ensemble's ``ensemble.ckpt`` loads as one model), an exported Hugging Face
        directory or an exported ONNX directory.

        ``engine``: ``torch`` or ``onnx`` (None: onnx for an ONNX export, torch otherwise). ``engine="onnx"`` on a
        checkpoint or Hugging Face export exports it to ONNX once into ``cache_dir`` and reuses that while the model
        file is unchanged; ``quantize="int8"`` makes that export dynamic int8, refused when it loses more than
        ``max_f1_loss`` macro-F1 on the run's validation split (see :mod:`src.onnx_engine`).
        """
        from src import onnx_engine

        path = Path(path).expanduser()
        onnx_dir = path.is_dir() and (path / onnx_engine.MODEL_FILE).is_file()
        engine = engine or ("onnx" if onnx_dir else "torch")
        if engine not in ENGINES:
            raise ConfigError(f"engine={engine}: must be one of {', '.join(ENGINES)}.")
        onnx_engine.check_options(quantize, max_f1_loss)
        if quantize and engine != "onnx":
            raise ConfigError(f"quantize={quantize} runs on ONNX Runtime: add engine=onnx.")
        if engine == "onnx":
            onnx_engine.require_onnx("engine=onnx")
        if onnx_dir:
            return cls.from_onnx_export(path, engine, quantize)
        export_dir = path.is_dir() and not is_deepspeed_checkpoint(path)  # a DeepSpeed checkpoint is a directory
        if export_dir and not (path / "config.json").is_file():
            raise ConfigError(f"{path}: a directory, but neither a Hugging Face export (config.json) nor an ONNX "
                              "export (model.onnx). Pass a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt) or a "
                              "directory written by python -m src.export.")
        predictor = cls.from_pretrained(path, device) if export_dir else cls.from_checkpoint(path, device)
        if engine == "torch":
            return predictor
        return onnx_engine.load_onnx(onnx_engine.cached_export(predictor, path, quantize, cache_dir, max_f1_loss))

    @staticmethod
    def from_onnx_export(path: Path, engine: str, quantize: str | None) -> Predictor:
        from src import onnx_engine

        if engine != "onnx":
            raise ConfigError(f"{path} is an ONNX export: it runs with engine=onnx (engine=torch takes the "
                              "checkpoint or a Hugging Face export).")
        quantized = (json.loads((path / onnx_engine.INFO_FILE).read_text()).get("quantization")
                     if (path / onnx_engine.INFO_FILE).is_file() else None)
        if quantize and not quantized:
            raise ConfigError(f"quantize={quantize}: the ONNX export in {path} is fp32, and quantizing happens at "
                              "export: python -m src.export ckpt_path=<checkpoint> format=onnx quantize=int8.")
        return onnx_engine.load_onnx(path)

    @property
    def labels(self) -> LabelSpace:
        return labels_of(self.net.config)

    @property
    def thresholds(self) -> Thresholds | None:
        stored = self.net.config.thresholds
        return Thresholds.from_dict(stored) if stored else None

    def tuning_options(self) -> dict[str, Any] | None:
        """The threshold options of the training run when the model decides with the ``max_f1`` thresholds that run
        tuned on its validation rows (so any score on those rows at them is in-sample); None when it decides
        otherwise (0.5, argmax, ``thresholds=`` given, an operating point chosen with ``src.thresholds``)."""
        thresholds = self.thresholds
        options = (self.metadata.get("config") or {}).get("thresholds")
        if not self.labels.thresholded or thresholds is None or thresholds.policy != "max_f1" or not options:
            return None
        return dict(options)

    def use_thresholds(self, value) -> None:
        """``thresholds=`` of ``src.eval`` / ``src.predict`` (:func:`src.metrics.thresholds.override`): decide with
        these instead of the stored ones; None keeps the stored ones."""
        if value is None:
            return
        if self.labels.exclusive:
            raise ConfigError("thresholds=: decision thresholds apply to multi-label models only; this one is "
                              "multi-class (it decides by the top-scoring class). Drop thresholds=.")
        self.net.config.thresholds = override(value, self.labels.num_labels).to_dict()

    @property
    def max_length(self) -> int:
        return int(self.net.config.max_seq_length)

    def save_tokenizer(self, directory: str | Path) -> None:
        """The tokenizer, with ``model_max_length`` set to the model's truncation length so that ``truncation=True``
        alone truncates as training did."""
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(directory)

    def carve_options(self) -> dict[str, Any]:
        """How the training run carved its validation split from train when its data had none (``val_fraction``,
        ``seed``): its data read again with these gives the same rows."""
        data = (self.metadata.get("config") or {}).get("data") or {}
        return {"val_fraction": data.get("val_fraction"), "seed": data.get("seed", 42)}

    def validation_split(self) -> tuple[list[str], np.ndarray]:
        """The training run's validation texts and 0/1 targets, read again through the run's data config (a
        validation split carved from train is carved again, with the run's seed); a ConfigError saying why when
        they cannot be."""
        from hydra.utils import instantiate

        from src.data.datamodule import TextDataModule

        config = self.metadata.get("config")
        if not config:
            raise ConfigError("this model carries no training run config (an exported directory), so its validation "
                              "split is unknown: use the run's checkpoint instead.")
        data = config["data"]
        try:
            datamodule = TextDataModule(instantiate(dict(data["source"]), _convert_="all"),
                                        tokenizer=self.net.config.base_model, labels=self.labels,
                                        **self.carve_options())
            split = datamodule.data.splits.get("val")
        except LabelwiseError as error:
            raise ConfigError(f"the run's validation split cannot be read again ({error}).") from None
        if split is None or not split.texts:
            raise ConfigError("the run's data has no validation rows.")
        return list(split.texts), self.labels.targets(split.labels)

    def scores(self, texts: list[str], batch_size: int = 128, precision: str | None = None,
               description: str | None = None) -> np.ndarray:
        """``[len(texts), C]`` probabilities in input order; a hierarchical model reads each text as windows, as in
        training."""
        chunking = self.net.config.chunking or {}
        ids = tokenize(self.tokenizer, texts, self.max_length, stride=chunking.get("stride", 0),
                       max_chunks=chunking.get("max_chunks", 1))
        space = self.labels
        device = self.net.device
        return map_sorted_batches(lambda padded: space.scores(self.net(**padded).logits), ids,
                                  self.tokenizer.pad_token_id, batch_size, space.num_labels, device,
                                  precision or fast_precision(), pad_multiple(), description,
                                  chunking.get("max_chunks_per_batch"))

    def predict(self, texts: list[str], batch_size: int = 128, precision: str | None = None) -> list[dict]:
        """``{"text", "labels", "scores"}`` per text, in order; blank texts never reach the model and get none."""
        records: list[dict[str, Any]] = [{"text": text, "labels": [], "scores": {}} for text in texts]
        rows = [i for i, text in enumerate(texts) if text.strip()]
        if not rows:
            return records
        space = self.labels
        scores = self.scores([texts[i] for i in rows], batch_size, precision)
        for row, probabilities, chosen in zip(rows, scores, space.decide(scores, self.thresholds)):
            records[row]["labels"] = [space.names[j] for j in np.flatnonzero(chosen)]
            records[row]["scores"] = {name: round(float(p), 6) for name, p in zip(space.names, probabilities)}
        return records
