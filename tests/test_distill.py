"""distill.teacher: the KD term against numpy formulas, the teacher's scores aligned with the rows a sampler
picked, the cache, and a teacher with other labels refused."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from src.distill import Distillation, aligned, kd_loss, teacher_logits
from src.errors import ConfigError
from src.inference import Predictor
from src.labels import LabelSpace
from src.train import train
from tests.helpers import compose_train, quick, write_dataset


def numpy_kd(student, teacher, temperature, exclusive):
    s, t = student / temperature, teacher / temperature
    if exclusive:
        def log_softmax(x):
            return x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
        q = np.exp(log_softmax(t))
        return temperature**2 * (q * (log_softmax(t) - log_softmax(s))).sum(1).mean()
    q = 1 / (1 + np.exp(-t))
    p = 1 / (1 + np.exp(-s))
    return temperature**2 * -(q * np.log(p) + (1 - q) * np.log(1 - p)).mean()


@pytest.mark.parametrize("exclusive", [False, True], ids=["sigmoid", "softmax"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_term_matches_the_formula(exclusive, temperature):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 2, (8, 5)), rng.normal(0, 2, (8, 5))
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature, exclusive)
    assert float(got) == pytest.approx(numpy_kd(student, teacher, temperature, exclusive), rel=1e-5)


def test_teacher_logits_give_the_scores_back():
    scores = np.array([[0.1, 0.5, 0.99], [0.7, 0.2, 0.1]])
    assert np.allclose(1 / (1 + np.exp(-teacher_logits(scores, False))), scores)
    softmax = np.array([[0.2, 0.3, 0.5]])
    logits = teacher_logits(softmax, True)
    assert np.allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), softmax)


def test_a_teacher_with_other_labels_is_refused():
    with pytest.raises(ConfigError, match=r"missing \['fear'\], extra \['calm'\]"):
        aligned(LabelSpace("multilabel", ("anger", "calm", "joy")), LabelSpace("multilabel", ("anger", "fear", "joy")))
    assert aligned(LabelSpace("multilabel", ("b", "a")), LabelSpace("multilabel", ("a", "b"))) == [1, 0]


class Capture(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.distillation = next(c for c in trainer.callbacks if isinstance(c, Distillation))
        self.rows = trainer.datamodule.dataset("train").rows
        self.texts = trainer.datamodule.data.splits["train"].texts


def test_student_learns_from_the_teachers_scores_of_the_rows_it_sees(tmp_path, tiny_bert):
    """Oversampling repeats rows: each training item's teacher logits are the teacher's own scores of that item's
    text (recomputed here with the teacher), and the scores are cached for the next run."""
    paths = write_dataset(tmp_path, multilabel=True)
    rows = paths["train"].read_text().splitlines()  # fear made rare, so that oversampling repeats its rows
    kept = [row for i, row in enumerate(rows) if "fear" not in json.loads(row)["labels"] or i % 4 == 0]
    paths["train"].write_text("\n".join(kept) + "\n")
    teacher = train(compose_train(tmp_path / "teacher", quick(tiny_bert, paths, "report=false", "test=false")))
    capture = Capture()
    summary = train(compose_train(tmp_path, quick(
        tiny_bert, paths, f"distill.teacher={teacher['best_checkpoint']}", "distill.alpha=0.7",
        "sampler=oversample", "report=false", "test=false", "trainer.max_epochs=1")), extra_callbacks=[capture])
    assert summary["metrics"]["train"]["loss"] > 0

    distillation = capture.distillation
    assert len(capture.rows) > len(set(capture.rows.tolist()))  # the sampler repeated rows
    predictor = Predictor.load(teacher["best_checkpoint"])
    for item in (0, len(capture.rows) // 2, len(capture.rows) - 1):
        expected = teacher_logits(predictor.scores([capture.texts[capture.rows[item]]]), exclusive=False)[0]
        assert np.allclose(distillation.logits[item].numpy(), expected, atol=2e-2)  # bf16 where native
    cached = list((tmp_path / "outputs" / ".cache" / "teacher").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (len(capture.texts), 3)
    assert json.dumps(summary["metrics"]["val"]["macro_f1"])  # evaluated like any run
