"""Report files into every configured logger: MLflow artifacts, TensorBoard images. (CSV and TensorBoard logs live
in the run directory, where the files already are.)"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger


def publish_files(loggers: Iterable[Logger], path: Path, artifact_path: str) -> None:
    """``path`` (a file, or a directory's files) as artifacts under ``artifact_path``; its PNG figures as TensorBoard
    images tagged ``<artifact_path>/<name>``."""
    path = Path(path)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            log = logger.experiment.log_artifacts if path.is_dir() else logger.experiment.log_artifact
            log(logger.run_id, str(path), artifact_path)
        elif isinstance(logger, TensorBoardLogger):
            from matplotlib.image import imread

            for image in sorted(path.glob("*.png") if path.is_dir() else [path] if path.suffix == ".png" else []):
                logger.experiment.add_image(f"{artifact_path}/{image.stem}", imread(image), dataformats="HWC")
