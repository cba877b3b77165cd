"""labelwise from Python: ``from src.api import train, load, predict``.

    summary = train(["data=jsonl", "data.source.train=train.jsonl", "loss=asymmetric"])   # the CLI's key=value list
    model = load(summary["best_checkpoint"])            # or an exported directory (hf or onnx)
    model.predict(["what a day!"])                      # [{"text", "labels", "scores"}]
    predict(["what a day!"], "exported/")               # load + predict in one call

``train`` composes the same configs as ``python -m src.train`` (Hydra's compose API) and runs the same training;
without Hydra's app there is no run directory from it, so it makes one as the CLI would
(``outputs/<date>/<time>`` under the working directory) unless ``paths.output_dir=`` is among the overrides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from src.inference import Predictor

__all__ = ["load", "predict", "train"]


def train(overrides: Sequence[str] = (), config_name: str = "train") -> dict[str, Any]:
    """Train with ``key=value`` / ``group=option`` overrides; returns the run summary (also in
    ``<output_dir>/summary.json``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from src import CONFIG_PATH
    from src.resolvers import unique_time
    from src.tracking.naming import override_key
    from src.train import train as run

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    given = {override_key(item) for item in overrides}
    with open_dict(cfg):  # what ${hydra:...} gives inside the Hydra app
        if "paths.root_dir" not in given:
            cfg.paths.root_dir = os.getcwd()
        if "paths.output_dir" not in given:
            now = datetime.now()
            cfg.paths.output_dir = str(Path(cfg.paths.root_dir) / "outputs" / f"{now:%Y-%m-%d}" / unique_time(now))
    return run(cfg)


def load(path: str | Path, engine: str | None = None, quantize: str | None = None, device: str = "cpu") -> Predictor:
    """A trained model with ``.predict(texts)`` and ``.scores(texts)``: from a checkpoint, or a directory written by
    ``src.export`` (Hugging Face or ONNX); ``engine="onnx"`` (``quantize="int8"``) runs it on ONNX Runtime."""
    return Predictor.load(path, engine, quantize, device)


def predict(texts: Iterable[str], model: Predictor | str | Path) -> list[dict[str, Any]]:
    """``{"text", "labels", "scores"}`` per text, in order; ``model`` is a loaded model or a path for :func:`load`."""
    if not isinstance(model, Predictor):
        model = load(model)
    return model.predict(list(texts))
