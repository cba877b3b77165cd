"""Operating points after training: every policy against a brute-force scikit-learn search over every threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score

from src.errors import ConfigError
from src.metrics.thresholds import Thresholds, operating_point

RNG = np.random.default_rng(4)
TARGETS = (RNG.random((120, 4)) < [0.4, 0.25, 0.1, 0.05]).astype(int)
SCORES = np.clip(0.35 * TARGETS + 0.65 * RNG.random(TARGETS.shape), 0, 1).round(3)  # rounded: ties among scores


def brute_force(scores, truth, policy, target):
    """Every threshold that can change a decision (each distinct score, the midpoints, 0 and 1), scored with sklearn:
    the best objective under the constraint, and the fewest rows predicted among the rules reaching it."""
    values = np.unique(scores)
    candidates = np.unique(np.concatenate([[0.0, 1.0], values, (values[:-1] + values[1:]) / 2]))
    rules = []
    for t in candidates:
        decided = scores > t
        if not decided.any():
            continue
        p = precision_score(truth, decided, zero_division=0)
        r = recall_score(truth, decided, zero_division=0)
        constraint, objective = (p, r) if policy == "precision_at_least" else (r, p)
        if constraint >= target:
            rules.append((objective, -int(decided.sum())))
    return max(rules) if rules else None


@pytest.mark.parametrize(("policy", "target"), [("precision_at_least", 0.5), ("precision_at_least", 0.7),
                                               ("recall_at_least", 0.5), ("recall_at_least", 0.8)])
def test_per_label_minimums_match_a_brute_force_search(policy, target):
    chosen = operating_point(SCORES, TARGETS, policy, target)
    decisions = chosen.apply(SCORES)
    for c in range(TARGETS.shape[1]):
        p = precision_score(TARGETS[:, c], decisions[:, c], zero_division=0)
        r = recall_score(TARGETS[:, c], decisions[:, c], zero_division=0)
        constraint, objective = (p, r) if policy == "precision_at_least" else (r, p)
        assert constraint >= target  # the constraint holds on the split it was tuned on
        assert (objective, -int(decisions[:, c].sum())) == pytest.approx(
            brute_force(SCORES[:, c], TARGETS[:, c], policy, target))
    assert chosen.policy == f"{policy}={target} (per-label)"


def test_global_scope_is_one_threshold_on_micro_precision():
    chosen = operating_point(SCORES, TARGETS, "precision_at_least", 0.6, scope="global")
    assert len(set(chosen.per_label)) == 1
    decisions = chosen.apply(SCORES)
    assert precision_score(TARGETS.ravel(), decisions.ravel()) >= 0.6
    reached = (recall_score(TARGETS.ravel(), decisions.ravel()), -int(decisions.sum()))
    assert reached == pytest.approx(brute_force(SCORES.ravel(), TARGETS.ravel(), "precision_at_least", 0.6))


def test_top_k_fixed_and_max_f1():
    top = operating_point(SCORES, TARGETS, "top_k", 2).apply(SCORES)
    ranks = np.argsort(np.argsort(-SCORES, axis=1, kind="stable"), axis=1, kind="stable")
    assert np.array_equal(top, ranks < 2) and (top.sum(1) == 2).all()
    fixed = operating_point(SCORES, TARGETS, "fixed", [0.1, 0.2, 0.3, 0.4])
    assert np.array_equal(fixed.apply(SCORES), SCORES > [0.1, 0.2, 0.3, 0.4])
    assert operating_point(SCORES, TARGETS, "fixed", 0.3).per_label == [0.3] * 4
    shared = operating_point(SCORES, TARGETS, "max_f1", scope="global")
    assert set(shared.per_label) == {shared.global_threshold} and shared.policy == "max_f1 (global)"


def test_policy_and_top_k_round_trip_and_old_thresholds_still_load():
    chosen = operating_point(SCORES, TARGETS, "top_k", 1)
    again = Thresholds.from_dict(json.loads(json.dumps(chosen.to_dict())))
    assert again == chosen and np.array_equal(again.apply(SCORES), chosen.apply(SCORES))
    old = {"global_threshold": 0.4, "per_label": [0.4] * 4, "shrinkage": 0.0, "at_least_one": False}
    assert Thresholds.from_dict(old).policy == "max_f1" and Thresholds.from_dict(old).top_k is None


def test_unreachable_precision_names_the_label_and_the_best_it_can_do():
    targets = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.9], [0.95], [0.5], [0.4]])  # the top score is a negative: best precision 2/3 at t=0.45
    with pytest.raises(ConfigError, match=r"no threshold reaches that precision for label 'rare'; the best is 0\.6667"):
        operating_point(scores, targets, "precision_at_least", 0.9, names=["rare"])


@pytest.mark.parametrize(("policy", "value", "message"), [
    ("precision_at_least", 1.5, r"must be a number in \(0, 1\]"),
    ("top_k", 4, "k must be an integer from 1 to 3"),
    ("fixed", [0.5, 0.5], "a list of 4"),
    ("max_f1", 0.3, "takes no value"),
    ("best", None, "not a threshold policy. Use one of max_f1"),
])
def test_bad_policies_say_what_is_allowed(policy, value, message):
    with pytest.raises(ConfigError, match=message):
        operating_point(SCORES, TARGETS, policy, value)


def test_a_label_without_positives_cannot_take_a_minimum():
    targets = TARGETS.copy()
    targets[:, 3] = 0
    with pytest.raises(ConfigError, match="label 'd' has no positive rows"):
        operating_point(SCORES, targets, "recall_at_least", 0.5, names=list("abcd"))


@pytest.mark.parametrize(("policy", "value"), [("top_k", 2), ("recall_at_least", 0.8), ("max_f1", None)])
def test_the_exported_model_decides_as_labelwise_does(policy, value):
    """The standalone modeling file (exports, pipeline(), MLflow serving) applies every stored policy itself."""
    from types import SimpleNamespace

    import torch

    from src.models.modeling_labelwise import LabelwiseForSequenceClassification

    chosen = operating_point(SCORES, TARGETS, policy, value)
    config = SimpleNamespace(problem_type="multi_label_classification", thresholds=chosen.to_dict())
    exported = LabelwiseForSequenceClassification.decide(SimpleNamespace(config=config), torch.tensor(SCORES))
    assert np.array_equal(exported.numpy(), chosen.apply(SCORES))
