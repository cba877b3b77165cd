"""Calibration: ECE against a hand-worked example and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from src.metrics.calibration import expected_calibration_error, fit_temperature, nll, reliability


def test_ece_of_a_hand_worked_example():
    """Bins of 0.1: {0.05} rate 0 vs 0.05; {0.15, 0.15} rate 0.5 vs 0.15; {0.95} rate 1 vs 0.95.
    ECE = 1/4 * 0.05 + 2/4 * 0.35 + 1/4 * 0.05 = 0.2. The second label: score 1.0 lands in the last bin."""
    scores = np.array([[0.05, 1.0], [0.15, 1.0], [0.15, 0.5], [0.95, 0.5]])
    targets = np.array([[0, 1], [1, 1], [0, 0], [1, 1]])
    # label 2: {1.0, 1.0} rate 1 vs 1.0 -> 0; {0.5, 0.5} rate 0.5 vs 0.5 -> 0
    assert expected_calibration_error(scores, targets) == pytest.approx([0.2, 0.0])


def test_ece_matches_a_naive_loop():
    rng = np.random.default_rng(5)
    scores = rng.random((500, 6)) ** 2
    targets = rng.random((500, 6)) < scores ** 0.7  # miscalibrated on purpose
    expected = []
    for c in range(6):
        total = 0.0
        for b in range(10):
            inside = [i for i in range(500) if b / 10 <= scores[i, c] < (b + 1) / 10 or (b == 9 and scores[i, c] == 1)]
            if inside:
                total += len(inside) / 500 * abs(np.mean(targets[inside, c]) - np.mean(scores[inside, c]))
        expected.append(total)
    assert expected_calibration_error(scores, targets) == pytest.approx(expected)
    assert reliability(scores, targets).rows.sum(1).tolist() == [500] * 6



# ---------------------------------------------------------------- temperature scaling


def miscalibrated(rng, rows: int, labels: int, true_temperature):
    """Logits whose labels follow ``sigmoid(logit / true_temperature)``: an over-confident model when T > 1."""
    logits = rng.normal(0, 4, (rows, labels))
    targets = rng.random((rows, labels)) < 1 / (1 + np.exp(-logits / np.asarray(true_temperature)))
    return logits, targets.astype(float)


def test_nll_matches_sklearn_log_loss():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    logits, targets = miscalibrated(rng, 300, 3, 2.0)
    per_label = nll(logits, targets, exclusive=False, temperature=1.7).mean(0)
    for c in range(3):
        reference = log_loss(targets[:, c], 1 / (1 + np.exp(-logits[:, c] / 1.7)), labels=[0, 1])
        assert per_label[c] == pytest.approx(reference, rel=1e-9)
    classes = rng.integers(0, 4, 200)
    softmax_logits = rng.normal(0, 3, (200, 4))
    shifted = np.exp(softmax_logits / 0.8)
    reference = log_loss(classes, shifted / shifted.sum(1, keepdims=True), labels=range(4))
    assert nll(softmax_logits, np.eye(4)[classes], exclusive=True, temperature=0.8).mean() == pytest.approx(reference)


def test_temperature_lowers_nll_and_finds_the_planted_scale():
    """Over-confident logits (labels drawn at T=3): the fitted T recovers 3 and NLL and ECE drop; the optimum
    agrees with a brute-force grid search."""
    rng = np.random.default_rng(1)
    logits, targets = miscalibrated(rng, 4000, 2, 3.0)
    (fitted, _) = fit_temperature(logits, targets, exclusive=False, per_label=False)
    grid = np.exp(np.linspace(-3, 3, 6001))
    brute = grid[np.argmin([nll(logits, targets, False, t).mean() for t in grid])]
    assert fitted == pytest.approx(brute, rel=2e-3)
    assert fitted == pytest.approx(3.0, rel=0.1)
    assert nll(logits, targets, False, fitted).mean() < nll(logits, targets, False, 1.0).mean()
    before = expected_calibration_error(1 / (1 + np.exp(-logits)), targets).mean()
    after = expected_calibration_error(1 / (1 + np.exp(-logits / fitted)), targets).mean()
    assert after < before / 2


def test_per_label_temperatures_and_the_shared_fallback():
    """Two labels at different scales get their own; a label with 3 positives keeps the shared temperature."""
    rng = np.random.default_rng(2)
    logits, targets = miscalibrated(rng, 3000, 2, [0.5, 4.0])
    rare = np.full((3000, 1), -6.0)
    rare_targets = np.zeros((3000, 1))
    rare_targets[:3] = 1
    fitted = fit_temperature(np.hstack([logits, rare]), np.hstack([targets, rare_targets]), False, per_label=True)
    assert fitted[0] == pytest.approx(0.5, rel=0.15) and fitted[1] == pytest.approx(4.0, rel=0.15)
    shared = fit_temperature(np.hstack([logits, rare]), np.hstack([targets, rare_targets]), False, per_label=False)
    assert fitted[2] == pytest.approx(shared[0])


def test_softmax_temperature_is_one_value_against_brute_force():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2000, 4))
    probabilities = np.exp(logits / 2.5)
    probabilities /= probabilities.sum(1, keepdims=True)
    classes = np.array([rng.choice(4, p=p) for p in probabilities])
    targets = np.eye(4)[classes]
    fitted = fit_temperature(logits, targets, exclusive=True, per_label=True)
    assert np.all(fitted == fitted[0])
    grid = np.exp(np.linspace(-3, 3, 6001))
    brute = grid[np.argmin([nll(logits, targets, True, t).mean() for t in grid])]
    assert fitted[0] == pytest.approx(brute, rel=2e-3) and fitted[0] == pytest.approx(2.5, rel=0.1)
