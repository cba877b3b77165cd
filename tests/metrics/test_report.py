"""full_metrics, bootstrap_ci, write_report and the training-curve figure against scikit-learn and naive
reimplementations."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from src.errors import ConfigError
from src.labels import LabelSpace
from src.metrics.classification import full_metrics
from src.metrics.plots import training_curves
from src.metrics.report import write_report
from src.metrics.statistics import bootstrap_ci
from src.metrics.thresholds import Thresholds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def multilabel_data(n=200, c=6, seed=0, empty_label=None):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < np.linspace(0.08, 0.45, c)).astype(int)
    scores = np.clip(0.35 * targets + rng.random((n, c)) * 0.7, 0, 1)
    if empty_label is not None:
        targets[:, empty_label] = 0
    return scores, targets


def multiclass_data(n=300, c=5, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.2 * np.eye(c)[targets]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return scores, targets


def names(c):
    return [f"label_{i}" for i in range(c)]


def multilabel(c):
    return LabelSpace("multilabel", tuple(names(c)))


def multiclass(c):
    return LabelSpace("multiclass", tuple(names(c)))


def sk_f1(targets, predictions, average):
    return f1_score(targets, predictions, average=average, zero_division=0)


# ---------------------------------------------------------------- full_metrics: multi-label


def check_multilabel_against_sklearn(got, scores, targets, predictions):
    assert got["macro_f1"] == pytest.approx(sk_f1(targets, predictions, "macro"), abs=1e-6)
    assert got["micro_f1"] == pytest.approx(sk_f1(targets, predictions, "micro"), abs=1e-6)
    assert got["weighted_f1"] == pytest.approx(sk_f1(targets, predictions, "weighted"), abs=1e-6)
    assert got["samples_f1"] == pytest.approx(sk_f1(targets, predictions, "samples"), abs=1e-6)
    assert got["exact_match"] == pytest.approx(accuracy_score(targets, predictions), abs=1e-6)
    assert got["hamming_loss"] == pytest.approx(hamming_loss(targets, predictions), abs=1e-6)

    has_pos = targets.sum(0) > 0
    has_both = has_pos & (targets.sum(0) < len(targets))
    ap = average_precision_score(targets[:, has_pos], scores[:, has_pos], average=None)
    auroc = roc_auc_score(targets[:, has_both], scores[:, has_both], average=None)
    assert got["mean_average_precision"] == pytest.approx(ap.mean(), abs=1e-5)
    assert got["macro_auroc"] == pytest.approx(auroc.mean(), abs=1e-5)

    precision, recall, f1, support = precision_recall_fscore_support(targets, predictions, zero_division=0)
    rows = got["per_label"]
    assert [r["label"] for r in rows] == names(targets.shape[1])
    np.testing.assert_allclose([r["precision"] for r in rows], precision, atol=1e-6)
    np.testing.assert_allclose([r["recall"] for r in rows], recall, atol=1e-6)
    np.testing.assert_allclose([r["f1"] for r in rows], f1, atol=1e-6)
    assert [r["support"] for r in rows] == support.tolist()
    assert [r["fp"] for r in rows] == ((predictions == 1) & (targets == 0)).sum(0).tolist()
    assert [r["fn"] for r in rows] == ((predictions == 0) & (targets == 1)).sum(0).tolist()
    np.testing.assert_allclose(
        [r["average_precision"] for r in rows if r["average_precision"] is not None], ap, atol=1e-5
    )
    np.testing.assert_allclose([r["auroc"] for r in rows if r["auroc"] is not None], auroc, atol=1e-5)
    assert got["n_samples"] == len(targets) and got["n_labels"] == targets.shape[1]


def test_multilabel_full_metrics_match_sklearn_at_half():
    scores, targets = multilabel_data(seed=1)
    got = full_metrics(multilabel(6), scores, targets)
    predictions = (scores > 0.5).astype(int)
    assert 0 < predictions.sum() < predictions.size
    check_multilabel_against_sklearn(got, scores, targets, predictions)
    assert {r["threshold"] for r in got["per_label"]} == {0.5}
    assert got["n_labels_without_positives"] == 0


def test_multilabel_full_metrics_with_calibrated_thresholds():
    scores, targets = multilabel_data(seed=2)
    cut = np.array([0.3, 0.4, 0.45, 0.55, 0.6, 0.7])
    thresholds = Thresholds(0.5, cut.tolist(), 0.0, at_least_one=True)
    got = full_metrics(multilabel(6), scores, targets, thresholds)

    predictions = (scores > cut).astype(int)
    empty = predictions.sum(1) == 0
    assert empty.any()
    predictions[np.flatnonzero(empty), scores[empty].argmax(1)] = 1
    check_multilabel_against_sklearn(got, scores, targets, predictions)
    assert [r["threshold"] for r in got["per_label"]] == pytest.approx(cut.tolist())
    assert got["macro_f1"] != pytest.approx(full_metrics(multilabel(6), scores, targets)["macro_f1"])


def test_label_without_positives_is_left_out_of_ranking_averages():
    scores, targets = multilabel_data(seed=3, empty_label=2)
    got = full_metrics(multilabel(6), scores, targets)
    predictions = (scores > 0.5).astype(int)
    assert predictions[:, 2].sum() > 0  # the empty label still gets false positives
    check_multilabel_against_sklearn(got, scores, targets, predictions)

    empty = got["per_label"][2]
    assert empty["average_precision"] is None and empty["auroc"] is None
    assert empty["support"] == 0 and empty["f1"] == 0.0
    assert got["n_labels_without_positives"] == 1
    # counting 0 for the empty label (torchmetrics' own macro) would give a smaller number
    defined = [r["average_precision"] for r in got["per_label"] if r["average_precision"] is not None]
    assert len(defined) == 5
    assert got["mean_average_precision"] > sum(defined) / 6 + 0.01


def test_label_with_only_positives_has_ap_but_no_auroc():
    scores, targets = multilabel_data(seed=14)
    targets[:, 4] = 1
    got = full_metrics(multilabel(6), scores, targets)
    check_multilabel_against_sklearn(got, scores, targets, (scores > 0.5).astype(int))
    assert got["per_label"][4]["auroc"] is None
    assert got["per_label"][4]["average_precision"] == pytest.approx(1.0)
    assert got["n_labels_without_positives"] == 0


def test_multilabel_all_zero_predictions():
    _, targets = multilabel_data(n=50, c=4, seed=4)
    targets[:5] = 0  # a few rows without any label
    scores = np.full(targets.shape, 0.1)
    got = full_metrics(multilabel(4), scores, targets)
    zeros = np.zeros_like(targets)
    for key in ("macro_f1", "micro_f1", "weighted_f1", "samples_f1"):
        assert got[key] == 0.0
    assert got["exact_match"] == pytest.approx(accuracy_score(targets, zeros))
    assert got["exact_match"] == pytest.approx((targets.sum(1) == 0).mean()) and got["exact_match"] >= 0.1
    assert got["hamming_loss"] == pytest.approx(hamming_loss(targets, zeros))
    assert [r["precision"] for r in got["per_label"]] == [0.0] * 4
    # constant scores: AP = prevalence, AUROC = 0.5
    assert got["macro_auroc"] == pytest.approx(0.5)
    assert got["mean_average_precision"] == pytest.approx(average_precision_score(targets, scores), abs=1e-6)


def test_full_metrics_rejects_mismatched_label_names():
    scores, targets = multilabel_data(n=10, c=3)
    with pytest.raises(ValueError):
        full_metrics(multilabel(4), scores, targets)


# ---------------------------------------------------------------- full_metrics: multi-class


def test_multiclass_full_metrics_match_sklearn():
    scores, targets = multiclass_data(seed=5)
    with pytest.raises(ConfigError, match="multi-label models only"):  # arg-max decisions: nothing to threshold
        full_metrics(multiclass(5), scores, np.eye(5)[targets], Thresholds(0.9, [0.99] * 5, 1.0, at_least_one=False))
    got = full_metrics(multiclass(5), scores, np.eye(5)[targets])
    predictions = scores.argmax(1)

    assert 0.2 < accuracy_score(targets, predictions) < 0.95
    assert got["accuracy"] == pytest.approx(accuracy_score(targets, predictions), abs=1e-6)
    assert got["micro_f1"] == pytest.approx(accuracy_score(targets, predictions), abs=1e-6)
    assert got["macro_f1"] == pytest.approx(sk_f1(targets, predictions, "macro"), abs=1e-6)
    assert got["weighted_f1"] == pytest.approx(sk_f1(targets, predictions, "weighted"), abs=1e-6)
    assert got["confusion_matrix"] == confusion_matrix(targets, predictions, labels=range(5)).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=range(5), zero_division=0
    )
    rows = got["per_label"]
    np.testing.assert_allclose([r["precision"] for r in rows], precision, atol=1e-6)
    np.testing.assert_allclose([r["recall"] for r in rows], recall, atol=1e-6)
    np.testing.assert_allclose([r["f1"] for r in rows], f1, atol=1e-6)
    assert [r["support"] for r in rows] == support.tolist()
    assert {r["threshold"] for r in rows} == {None}  # arg-max decisions
    one_vs_rest = roc_auc_score(np.eye(5)[targets], scores, average=None)
    np.testing.assert_allclose([r["auroc"] for r in rows], one_vs_rest, atol=1e-5)


def test_multiclass_absent_class_is_left_out_of_macro_like_sklearn():
    scores, targets = multiclass_data(seed=6, c=4)
    scores = np.concatenate([scores, np.zeros((len(scores), 1))], axis=1)  # class 4: never true, never predicted
    got = full_metrics(multiclass(5), scores, np.eye(5)[targets])
    predictions = scores.argmax(1)
    reference = sk_f1(targets, predictions, "macro")  # sklearn's label set: classes seen in targets or predictions
    assert got["macro_f1"] == pytest.approx(reference, abs=1e-6)
    assert reference != pytest.approx(
        f1_score(targets, predictions, labels=range(5), average="macro", zero_division=0), abs=1e-3
    )
    assert np.asarray(got["confusion_matrix"])[4].sum() == 0 and np.asarray(got["confusion_matrix"])[:, 4].sum() == 0


# ---------------------------------------------------------------- bootstrap_ci


def naive_bootstrap(statistic, num_rows, n, seed):
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, num_rows, size=num_rows)) for _ in range(n)]
    return tuple(np.percentile(values, [2.5, 97.5]))


MULTILABEL_REFERENCE = {
    "macro_f1": lambda t, p: sk_f1(t, p, "macro"),
    "micro_f1": lambda t, p: sk_f1(t, p, "micro"),
    "weighted_f1": lambda t, p: sk_f1(t, p, "weighted"),
    "samples_f1": lambda t, p: sk_f1(t, p, "samples"),
    "exact_match": accuracy_score,
    "hamming_loss": hamming_loss,
}


@pytest.mark.parametrize("metric", sorted(MULTILABEL_REFERENCE))
def test_bootstrap_matches_naive_loop_multilabel(metric):
    scores, targets = multilabel_data(n=60, c=4, seed=7)
    cut = np.array([0.4, 0.5, 0.55, 0.6])
    thresholds = Thresholds(0.5, cut.tolist(), 0.0, at_least_one=False)
    predictions = (scores > cut).astype(int)
    reference = naive_bootstrap(
        lambda rows: MULTILABEL_REFERENCE[metric](targets[rows], predictions[rows]), len(targets), 200, seed=3
    )
    decisions = multilabel(4).decide(scores, thresholds)
    got = bootstrap_ci(multilabel(4), targets, decisions, metric, n=200, seed=3)
    assert got == pytest.approx(reference, abs=1e-6)
    assert got[0] < got[1]


MULTICLASS_REFERENCE = {
    "macro_f1": lambda t, p: sk_f1(t, p, "macro"),
    "micro_f1": lambda t, p: sk_f1(t, p, "micro"),
    "weighted_f1": lambda t, p: sk_f1(t, p, "weighted"),
    "accuracy": accuracy_score,
}


@pytest.mark.parametrize("metric", sorted(MULTICLASS_REFERENCE))
def test_bootstrap_matches_naive_loop_multiclass(metric):
    scores, targets = multiclass_data(n=40, c=6, seed=8)
    # class 5: true and predicted on two rows only, so some resamples have no trace of it (macro over 5 classes)
    targets[targets == 5] = 0
    scores[:, 5] = 0.0
    targets[[3, 17]] = 5
    scores[[3, 17], 5] = 10.0
    predictions = scores.argmax(1)
    rng = np.random.default_rng(5)
    missing = sum(not np.isin([3, 17], rng.integers(0, 40, size=40)).any() for _ in range(200))
    assert missing > 5

    reference = naive_bootstrap(
        lambda rows: MULTICLASS_REFERENCE[metric](targets[rows], predictions[rows]), len(targets), 200, seed=5
    )
    got = bootstrap_ci(multiclass(6), np.eye(6)[targets], multiclass(6).decide(scores), metric, n=200, seed=5)
    assert got == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize(
    "task,metric", [("multilabel", "macro_f1"), ("multilabel", "micro_f1"), ("multiclass", "accuracy")]
)
def test_bootstrap_contains_point_estimate_and_narrows_with_more_rows(task, metric):
    def data(n):
        return multilabel_data(n=n, c=6, seed=9) if task == "multilabel" else multiclass_data(n=n, seed=9)

    widths = []
    for n in (150, 3000):
        scores, targets = data(n)
        space = LabelSpace(task, tuple(names(scores.shape[1])))
        truth = targets if task == "multilabel" else np.eye(scores.shape[1])[targets]
        point = full_metrics(space, scores, truth)[metric]
        low, high = bootstrap_ci(space, truth, space.decide(scores), metric, n=300, seed=0)
        assert low < point < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~ sqrt(20) narrower


def test_bootstrap_depends_on_seed_and_rejects_unknown_metrics():
    scores, targets = multilabel_data(n=100, seed=10)
    decisions = multilabel(6).decide(scores)
    assert bootstrap_ci(multilabel(6), targets, decisions, n=100, seed=0) != bootstrap_ci(
        multilabel(6), targets, decisions, n=100, seed=1
    )
    with pytest.raises(ValueError):
        bootstrap_ci(multilabel(6), targets, decisions, metric="macro_auroc")
    with pytest.raises(ValueError):  # accuracy is multi-class's name for exact match
        bootstrap_ci(multilabel(6), targets, decisions, metric="accuracy")


def test_bootstrap_is_fast_for_goemotions_sized_input():
    scores, targets = multilabel_data(n=5000, c=28, seed=11)
    start = time.perf_counter()
    low, high = bootstrap_ci(multilabel(28), targets, multilabel(28).decide(scores), "macro_f1", n=1000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert 0 < low < high < 1


# ---------------------------------------------------------------- write_report


def read_csv(path):
    with path.open() as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def check_pngs(paths):
    for path in paths:
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data[:8] == PNG_MAGIC and len(data) > 2000, path.name


def test_write_report_multilabel(tmp_path):
    c = 28  # GoEmotions-sized: a grid of PR panels, rotated tick labels
    scores, targets = multilabel_data(n=300, c=c, seed=12, empty_label=5)
    label_names = names(c)
    metrics = full_metrics(multilabel(c), scores, targets)

    written = write_report(tmp_path / "report", multilabel(c), metrics, scores, targets)

    expected = {
        "per_label.csv",
        "per_label.md",
        "per_label_f1.png",
        "pr_curves.png",
        "confusion_matrix.png",
        "cooccurrence.png",
        "errors.png",
        "reliability.png",
        "thresholds.png",  # multi-label only: the multi-class report below has none
    }
    assert sorted(p.name for p in written) == sorted(expected)
    assert all(p.is_file() and p.parent == tmp_path / "report" for p in written)
    check_pngs(written)

    fields, rows = read_csv(tmp_path / "report" / "per_label.csv")
    assert fields == [
        "label",
        "support",
        "precision",
        "recall",
        "f1",
        "tp",
        "fp",
        "fn",
        "threshold",
        "average_precision",
        "auroc",
        "ece",
    ]
    assert [r["label"] for r in rows] == label_names
    assert [int(r["support"]) for r in rows] == targets.sum(0).tolist()
    assert [float(r["f1"]) for r in rows] == pytest.approx([m["f1"] for m in metrics["per_label"]])
    assert rows[5]["auroc"] == "" and rows[5]["average_precision"] == ""

    table = (tmp_path / "report" / "per_label.md").read_text().splitlines()
    assert table[0].startswith("| label | support |") and len(table) == 2 + c
    supports = [int(line.split("|")[2]) for line in table[2:]]
    assert supports == sorted(targets.sum(0).tolist(), reverse=True)


def test_write_report_multiclass(tmp_path):
    scores, targets = multiclass_data(n=200, c=5, seed=13)
    metrics = full_metrics(multiclass(5), scores, np.eye(5)[targets])

    written = write_report(tmp_path, multiclass(5), metrics, scores, np.eye(5)[targets])

    assert sorted(p.name for p in written) == sorted(
        ["per_label.csv", "per_label.md", "per_label_f1.png", "pr_curves.png", "confusion_matrix.png", "errors.png",
         "reliability.png"]
    )
    assert not (tmp_path / "cooccurrence.png").exists()  # one label per row: nothing co-occurs
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    check_pngs(written)
    fields, rows = read_csv(tmp_path / "per_label.csv")
    assert fields[:8] == ["label", "support", "precision", "recall", "f1", "tp", "fp", "fn"]
    assert len(rows) == 5 and {row["threshold"] for row in rows} == {""}
    assert [int(r["support"]) for r in rows] == np.bincount(targets, minlength=5).tolist()


def test_training_curves_figure_marks_the_best_step(tmp_path):
    history = {"train/loss_step": [(i, 1 / (i + 1)) for i in range(20)], "val/macro_f1": [(5, 0.1), (10, 0.3)]}
    path = training_curves(tmp_path / "curves.png", history, marks={"best checkpoint": 10})
    check_pngs([path])
