"""Knowledge distillation: ``distill.teacher=<checkpoint | HF export | ONNX export>`` trains the configured model on
the teacher's scores mixed with the labels.

The teacher scores the training texts once, from the texts themselves (so its tokenizer, architecture and size are
its own), and the scores are cached under ``paths.cache_dir/teacher`` (keyed by the teacher file and the texts). Each
training step then adds the distillation term to the configured loss:

    loss = (1 - alpha) * loss(student logits, labels) + alpha * T^2 * KD(student logits / T, teacher logits / T)

KD is the binary cross-entropy between the sigmoids for multi-label models (each label its own binary problem) and
the KL divergence between the softmaxes for multi-class ones (Hinton et al. 2015); T^2 keeps the gradient scale of
the soft term independent of T. The teacher's logits are recovered from its scores (sigmoid or softmax inverted,
clipped at 1e-6), which also undoes a temperature the teacher was calibrated with only up to that scaling.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from src.errors import ConfigError
from src.io import atomic_path
from src.labels import LabelSpace

log = logging.getLogger(__name__)
EPS = 1e-6


def teacher_logits(scores: np.ndarray, exclusive: bool) -> np.ndarray:
    """Logits that give ``scores`` back: log-odds for sigmoids, log-probabilities for a softmax (a softmax is
    unchanged by the constant its logits lose)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) if exclusive else np.log(p / (1 - p))


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, exclusive: bool) -> torch.Tensor:
    """``T^2 * KD`` between student and teacher logits ``[B, C]``, in float32, averaged like the task losses (over
    rows, and over labels for sigmoids)."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if exclusive:
        return temperature**2 * F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                                         reduction="batchmean")
    return temperature**2 * F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))


def aligned(teacher_space: LabelSpace, student_space: LabelSpace) -> list[int]:
    """The teacher's column of each student label; a ConfigError when the label sets or tasks differ."""
    if set(teacher_space.names) != set(student_space.names) or teacher_space.exclusive != student_space.exclusive:
        missing = sorted(set(student_space.names) - set(teacher_space.names))
        extra = sorted(set(teacher_space.names) - set(student_space.names))
        raise ConfigError(
            f"distill.teacher: the teacher's labels ({teacher_space.task}, {teacher_space.num_labels}) do not match "
            f"this data's ({student_space.task}, {student_space.num_labels}): missing {missing}, extra {extra}. "
            "A teacher must be trained on the same label set and task.")
    return [teacher_space.names.index(name) for name in student_space.names]


class Distillation(L.Callback):
    """Scores the training texts with the teacher when fit starts and hands the module its distillation term."""

    def __init__(self, teacher: str, alpha: float = 0.5, temperature: float = 2.0, batch_size: int = 128,
                 cache_dir: str | None = None):
        self.teacher = Path(teacher).expanduser()
        self.alpha = alpha
        self.temperature = temperature
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) / "teacher" if cache_dir else None
        self.logits: torch.Tensor | None = None  # [train items, C], in the student's label order
        self.exclusive = False

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.logits is not None:
            return
        datamodule = trainer.datamodule
        dataset = datamodule.dataset("train")
        if dataset.rows is None:
            raise ConfigError("distill.teacher reads the training texts, and sampler=smote makes up rows that have "
                              "none: use another sampler with distillation.")
        texts = datamodule.data.splits["train"].texts
        scores = self.teacher_scores(texts, pl_module.labels)
        self.exclusive = pl_module.labels.exclusive
        self.logits = torch.as_tensor(teacher_logits(scores, self.exclusive)[dataset.rows], dtype=torch.float32)
        pl_module.distill = self.mix

    def teacher_scores(self, texts: list[str], space: LabelSpace) -> np.ndarray:
        """The teacher's probabilities ``[N, C]`` of ``texts`` in the student's label order, cached."""
        from src.inference import Predictor

        if not self.teacher.exists():
            raise ConfigError(f"distill.teacher={self.teacher}: no such file or directory. Pass a checkpoint "
                              "(.ckpt) or a directory written by python -m src.export.")
        stat = self.teacher.stat()
        key = json.dumps([str(self.teacher.resolve()), stat.st_size, stat.st_mtime_ns, texts])
        path = self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy" if self.cache_dir else None
        if path is not None and path.is_file():
            log.info(f"distill: teacher scores from the cache {path}")
            return np.load(path)
        predictor = Predictor.load(self.teacher, device="cuda" if torch.cuda.is_available() else "cpu")
        columns = aligned(predictor.labels, space)
        scores = predictor.scores(texts, self.batch_size, description="teacher scores")[:, columns]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temporary:
                with open(temporary, "wb") as handle:
                    np.save(handle, scores)
        return scores

    def mix(self, loss: torch.Tensor, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        teacher = self.logits[index.cpu()].to(logits.device)
        return (1 - self.alpha) * loss + self.alpha * kd_loss(logits, teacher, self.temperature, self.exclusive)
