"""Threshold calibration against brute-force scikit-learn searches and hand-built score distributions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from src.labels import LabelSpace
from src.metrics.thresholds import (
    AUTO_SHRINKAGE,
    GRID,
    Thresholds,
    calibrate,
    cross_fitted_change,
    cross_fitted_macro_f1,
)
from tests.helpers import hand_folds


def sk_macro(targets, predictions) -> float:
    return f1_score(targets, predictions, average="macro", zero_division=0)


def closest(candidates, target):
    """The candidate closest to ``target``, the lower one on an exact tie."""
    return min(sorted(candidates), key=lambda g: abs(g - target))


def brute_force(scores, targets):
    """Global and raw per-label thresholds by looping over the grid with scikit-learn, ties as documented."""
    macro = {g: sk_macro(targets, scores > g) for g in GRID}
    best = max(macro.values())
    global_threshold = closest([g for g, v in macro.items() if v >= best - 1e-9], 0.5)
    raw = []
    for c in range(targets.shape[1]):
        per = {g: f1_score(targets[:, c], scores[:, c] > g, zero_division=0) for g in GRID}
        top = max(per.values())
        raw.append(closest([g for g, v in per.items() if v >= top - 1e-9], global_threshold))
    return global_threshold, np.array(raw), macro


def noisy(n=400, c=6, seed=0, signal=0.3):
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.04, 0.4, c)
    targets = (rng.random((n, c)) < rates).astype(int)
    scores = np.clip(signal * targets + rng.random((n, c)) * 0.55, 0, 1)
    return scores, targets


# ---------------------------------------------------------------- grid and global threshold


def test_grid_is_coarse_005_to_095():
    assert len(GRID) == 19
    assert GRID[0] == pytest.approx(0.05) and GRID[-1] == pytest.approx(0.95)
    np.testing.assert_allclose(np.diff(GRID), 0.05, atol=1e-12)


def test_global_threshold_matches_brute_force_sklearn():
    scores, targets = noisy()
    global_threshold, _, macro = brute_force(scores, targets)
    assert global_threshold != 0.5  # the data are built so that 0.5 is not optimal
    assert macro[global_threshold] > macro[0.5] + 0.01

    got = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)
    assert got.global_threshold == pytest.approx(global_threshold)


def test_raw_per_label_thresholds_match_brute_force_sklearn():
    scores, targets = noisy(seed=3)
    global_threshold, raw, _ = brute_force(scores, targets)
    got = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)
    assert len(set(raw.round(2))) > 1  # labels disagree: per-label thresholds are not all the global one
    np.testing.assert_allclose(got.per_label, raw, atol=1e-12)
    assert got.global_threshold == pytest.approx(global_threshold)


def test_calibrate_recovers_known_optimum():
    rng = np.random.default_rng(0)
    n = 4000
    targets = (rng.random((n, 3)) < [0.5, 0.3, 0.2]).astype(int)
    scores = np.empty((n, 3))
    pos = targets == 1
    # label 0: perfectly separable with a gap [0.65, 0.75): grid optima 0.65 and 0.70
    scores[:, 0] = np.where(pos[:, 0], rng.uniform(0.75, 1.0, n), rng.uniform(0.0, 0.65, n))
    # label 1: separable exactly at 0.2 (negatives below, positives above): the optimum is 0.2
    scores[:, 1] = np.where(pos[:, 1], rng.uniform(0.2, 0.5, n), rng.uniform(0.0, 0.2, n))
    # label 2: noisy, positives shifted up
    scores[:, 2] = np.clip(rng.uniform(0, 0.6, n) + 0.3 * pos[:, 2], 0, 1)

    got = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)

    assert got.per_label[0] in (pytest.approx(0.65), pytest.approx(0.70))
    assert got.per_label[1] == pytest.approx(0.20)
    f1_label0 = f1_score(targets[:, 0], scores[:, 0] > got.per_label[0])
    f1_label1 = f1_score(targets[:, 1], scores[:, 1] > got.per_label[1])
    assert f1_label0 == 1.0 and f1_label1 == 1.0
    # and at the default 0.5 label 1 loses most of its positives
    assert f1_score(targets[:, 1], scores[:, 1] > 0.5) < 0.2


def test_ties_go_to_half_globally_and_to_the_global_threshold_per_label():
    rng = np.random.default_rng(6)
    n = 1000
    targets = (rng.random((n, 4)) < [0.4, 0.3, 0.3, 0.0]).astype(int)
    pos = targets == 1
    scores = np.empty((n, 4))
    # labels 0 and 1: perfect for every grid value in [0.15, 0.40]
    for c in (0, 1):
        scores[:, c] = np.where(pos[:, c], rng.uniform(0.45, 1, n), rng.uniform(0, 0.15, n))
    # label 2: perfect for [0.05, 0.25] only, so macro-F1 ties over [0.15, 0.25] -> 0.25 (closest to 0.5)
    scores[:, 2] = np.where(pos[:, 2], rng.uniform(0.25, 1, n), rng.uniform(0, 0.05, n))
    # label 3: no positives, F1 = 0 at every threshold
    scores[:, 3] = rng.random(n)

    got = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)

    assert got.global_threshold == pytest.approx(0.25)
    # labels 0 and 2 tie over [0.15, 0.40] and [0.05, 0.25]: both contain the global 0.25, which they take;
    # the flat label 3 gets exactly the global threshold
    assert got.per_label == [pytest.approx(0.25)] * 4
    # a label whose tie set excludes the global threshold takes the end of the set nearest to it
    scores[:, 2] = np.where(pos[:, 2], rng.uniform(0.25, 1, n), rng.uniform(0, 0.05, n)) * 0.5  # ties [0.05, 0.10]
    shifted = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)
    assert shifted.global_threshold > 0.1
    assert shifted.per_label[2] == pytest.approx(0.10)


# ---------------------------------------------------------------- shrinkage


def test_shrinkage_one_is_all_global_and_float_shrinkage_interpolates():
    scores, targets = noisy(seed=5)
    raw = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)
    everything_global = calibrate(scores, targets, shrinkage=1.0, at_least_one=False)
    quarter = calibrate(scores, targets, shrinkage=0.25, at_least_one=False)

    assert not np.allclose(raw.per_label, raw.global_threshold)
    assert everything_global.per_label == [pytest.approx(raw.global_threshold)] * targets.shape[1]
    expected = 0.25 * raw.global_threshold + 0.75 * np.array(raw.per_label)
    np.testing.assert_allclose(quarter.per_label, expected, atol=1e-12)
    assert (everything_global.shrinkage, quarter.shrinkage) == (1.0, 0.25)


def test_auto_shrinkage_pulls_rare_labels_harder():
    rng = np.random.default_rng(1)
    n = 2000
    targets = np.zeros((n, 5), dtype=int)
    scores = np.empty((n, 5))
    # labels 0-2 dominate the global threshold: separable in the gap (0.35, 0.45)
    for c in (0, 1, 2):
        targets[:, c] = rng.random(n) < 0.4
        scores[:, c] = np.where(targets[:, c] == 1, rng.uniform(0.45, 1, n), rng.uniform(0, 0.35, n))
    # label 3: 5 positives, label 4: 500 positives; both separable exactly at 0.9, far from the global threshold
    targets[rng.choice(n, 5, replace=False), 3] = 1
    targets[rng.choice(n, 500, replace=False), 4] = 1
    for c in (3, 4):
        scores[:, c] = np.where(targets[:, c] == 1, rng.uniform(0.9, 1.0, n), rng.uniform(0, 0.9, n))

    raw = calibrate(scores, targets, shrinkage=0.0, at_least_one=False)
    auto = calibrate(scores, targets, shrinkage="auto", at_least_one=False, prior_strength=20)

    g = auto.global_threshold
    assert raw.per_label[3] == pytest.approx(0.9) and raw.per_label[4] == pytest.approx(0.9)
    assert 0.35 - 1e-9 <= g <= 0.45 + 1e-9  # bulk labels are perfect anywhere in the gap
    weights = 20 / (20 + targets.sum(0))
    assert weights[3] == pytest.approx(0.8)
    np.testing.assert_allclose(auto.per_label, weights * g + (1 - weights) * np.array(raw.per_label), atol=1e-12)
    assert abs(auto.per_label[3] - g) < abs(auto.per_label[4] - g)
    assert auto.per_label[3] < 0.6 < auto.per_label[4]  # 500 positives keep ~their own, 5 sit near global
    assert auto.shrinkage == AUTO_SHRINKAGE == -1.0


def test_shrinkage_rejects_bad_values():
    scores, targets = noisy(n=50, c=2)
    with pytest.raises(ValueError):
        calibrate(scores, targets, shrinkage=1.5)
    with pytest.raises(ValueError):
        calibrate(scores, targets, shrinkage="sometimes")
    with pytest.raises(ValueError):
        calibrate(scores, targets, at_least_one="maybe")


# ---------------------------------------------------------------- applying thresholds and at_least_one


def test_thresholds_are_strict():
    t = Thresholds(global_threshold=0.5, per_label=[0.3, 0.7], shrinkage=0.0, at_least_one=False)
    at = np.array([[0.3, 0.7]])
    above = np.nextafter(at, 1.0)
    assert t.apply(at).tolist() == [[False, False]]
    assert t.apply(above).tolist() == [[True, True]]
    half = np.array([[0.5, np.nextafter(np.float32(0.5), np.float32(1))]], dtype=np.float32)
    assert LabelSpace("multilabel", ("a", "b")).decide(half).tolist() == [[False, True]]


def test_at_least_one_fills_only_empty_rows_with_argmax():
    rng = np.random.default_rng(2)
    scores = rng.random((300, 5))
    cut = np.array([0.8, 0.85, 0.9, 0.7, 0.95])
    plain = scores > cut
    empty = ~plain.any(1)
    assert 20 < empty.sum() < 280  # both kinds of rows occur

    got = Thresholds(0.8, cut.tolist(), 0.0, at_least_one=True).apply(scores)

    np.testing.assert_array_equal(got[~empty], plain[~empty])
    assert (got[empty].sum(1) == 1).all()
    np.testing.assert_array_equal(got[empty].argmax(1), scores[empty].argmax(1))
    off = Thresholds(0.8, cut.tolist(), 0.0, at_least_one=False).apply(scores)
    np.testing.assert_array_equal(off, plain)


def test_at_least_one_auto_turns_on_only_when_it_helps():
    rng = np.random.default_rng(4)
    n, c = 1000, 5
    # every row has exactly one label; its score is only mildly higher: many rows fall below every threshold
    single = np.eye(c, dtype=int)[rng.integers(0, c, n)]
    scores = np.clip(rng.uniform(0, 0.5, (n, c)) + 0.2 * single, 0, 1)
    helps = calibrate(scores, single, shrinkage=1.0, at_least_one="auto")
    forced_off = calibrate(scores, single, shrinkage=1.0, at_least_one=False)
    assert helps.at_least_one is True and forced_off.at_least_one is False
    with_fallback = sk_macro(single, helps.apply(scores))
    assert with_fallback > sk_macro(single, forced_off.apply(scores)) + 1e-3

    # most rows have no label and their scores are flat: filling them only adds false positives
    sparse = (rng.random((n, c)) < 0.02).astype(int)
    flat = np.clip(rng.uniform(0, 0.3, (n, c)) + 0.6 * sparse, 0, 1)
    hurts = calibrate(flat, sparse, shrinkage=1.0, at_least_one="auto")
    forced_on = calibrate(flat, sparse, shrinkage=1.0, at_least_one=True)
    assert hurts.at_least_one is False and forced_on.at_least_one is True
    assert sk_macro(sparse, forced_on.apply(flat)) < sk_macro(sparse, hurts.apply(flat))


def test_thresholds_round_trip_through_json():
    t = Thresholds(global_threshold=0.35, per_label=[0.2, 0.3125, 0.35], shrinkage=-1.0, at_least_one=True)
    d = json.loads(json.dumps(t.to_dict()))
    assert d == {"global_threshold": 0.35, "per_label": [0.2, 0.3125, 0.35], "shrinkage": -1.0, "at_least_one": True,
                 "policy": "max_f1", "top_k": None}
    assert Thresholds.from_dict(d) == t


# ---------------------------------------------------------------- cross-fitting


def test_cross_fitted_is_below_in_sample_and_equals_hand_written_two_fold():
    scores, targets = noisy(n=300, c=8, seed=7, signal=0.12)  # weak signal: tuning overfits
    kwargs = {"shrinkage": 0.0, "at_least_one": False}
    in_sample = sk_macro(targets, calibrate(scores, targets, **kwargs).apply(scores))
    cross = cross_fitted_macro_f1(scores, targets, seed=11, repeats=1, **kwargs)

    folds = []
    for fit, held in hand_folds(len(scores), [11]):
        t = calibrate(scores[fit], targets[fit], **kwargs)
        folds.append(sk_macro(targets[held], scores[held] > np.array(t.per_label)))

    assert cross == pytest.approx(np.mean(folds), abs=1e-12)
    assert cross < in_sample - 0.005
    assert cross_fitted_macro_f1(scores, targets, seed=12, repeats=1, **kwargs) != pytest.approx(cross, abs=1e-9)


def hand_two_fold(scores, targets, split_seed, **kwargs) -> float:
    return float(np.mean([sk_macro(targets[held], calibrate(scores[fit], targets[fit], **kwargs).apply(scores[held]))
                          for fit, held in hand_folds(len(scores), [split_seed])]))


def test_repeated_cross_fitting_averages_halvings_and_is_steadier():
    """The default averages the two-fold estimate over 10 halvings (split seeds seed .. seed + 9); its spread over
    disjoint seed ranges is well under one halving's (the reason it is the default)."""
    scores, targets = noisy(n=300, c=8, seed=7, signal=0.12)
    kwargs = {"shrinkage": "auto", "at_least_one": False}
    by_hand = [hand_two_fold(scores, targets, s, **kwargs) for s in range(40)]
    expected = np.mean(by_hand[20:30])
    assert cross_fitted_macro_f1(scores, targets, seed=20, **kwargs) == pytest.approx(expected, abs=1e-12)
    repeated = [cross_fitted_macro_f1(scores, targets, seed=s, **kwargs) for s in (0, 10, 20, 30)]
    assert np.std(repeated) < 0.5 * np.std(by_hand)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        cross_fitted_macro_f1(scores, targets, repeats=0)


def test_cross_fitted_change_scores_both_sets_on_rows_the_thresholds_never_saw():
    """Macro-F1 of a second score set minus the first's, at thresholds calibrated on the first's scores of one half
    and both scored on the other half, over the same 10 halvings: a hand-written loop with scikit-learn's F1;
    exactly 0 for identical scores; scores of other rows or labels refused."""
    scores, targets = noisy(n=300, c=8, seed=7, signal=0.12)
    other = np.clip(scores + np.random.default_rng(3).normal(0, 0.03, scores.shape), 0, 1)
    kwargs = {"shrinkage": "auto", "at_least_one": False}
    by_hand = []
    for fit, held in hand_folds(len(scores), range(5, 15)):
        thresholds = calibrate(scores[fit], targets[fit], **kwargs)
        by_hand.append(sk_macro(targets[held], thresholds.apply(other[held]))
                       - sk_macro(targets[held], thresholds.apply(scores[held])))
    assert cross_fitted_change(scores, other, targets, seed=5, **kwargs) == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert np.mean(by_hand) != 0
    assert cross_fitted_change(scores, scores, targets) == 0.0
    with pytest.raises(ValueError, match=r"must both be \[N, C\]; got \(300, 3\) and \(300, 8\)"):
        cross_fitted_change(scores, other[:, :3], targets)


def test_cross_fitted_passes_calibrate_kwargs():
    scores, targets = noisy(n=200, c=4, seed=8)
    a = cross_fitted_macro_f1(scores, targets, seed=0, shrinkage=0.0, at_least_one=False)
    b = cross_fitted_macro_f1(scores, targets, seed=0, shrinkage=1.0, at_least_one=False)
    assert a != pytest.approx(b, abs=1e-9)
