"""Calibration: ECE against a hand-worked example and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from src.metrics.calibration import expected_calibration_error, reliability


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

