"""Decision-threshold calibration for multi-label classifiers, tuned for small, imbalanced validation sets.

A sigmoid output of 0.5 is rarely the F1-optimal cut-off for a rare label: the loss sees few positives, so the
scores of rare labels sit low and a lower threshold buys recall at little precision cost. :func:`calibrate` picks
thresholds on validation scores in three steps:

1. **Global threshold**: the grid value that maximises macro-F1 with one threshold shared by every label.
2. **Per-label raw thresholds**: for each label, the grid value that maximises that label's own F1.
3. **Shrinkage** of each raw threshold toward the global one: ``final_c = w_c * global + (1 - w_c) * raw_c``.

Step 3 is there because the per-label optimum is noisy. On GoEmotions' dev split some labels have only a dozen
positives; one or two examples moving across the cut-off changes that label's F1 by several points, so its arg-max
threshold is close to arbitrary and does not carry over to the test split. With ``shrinkage="auto"`` the weight is
``w_c = prior_strength / (prior_strength + n_c)``, ``n_c`` the label's validation positives: a label with 5
positives stays close to the global threshold (w = 0.8 for ``prior_strength=20``) while one with 500 keeps almost
its own optimum (w = 0.04). This can be read as the posterior mean of a normal-normal model in which the global
threshold carries the evidence of ``prior_strength`` pseudo-positives. The grid is coarse (steps of 0.05) for the
same reason: a finer grid only fits the noise.

All comparisons are strict, as in torchmetrics: a label is predicted positive iff ``score > threshold``, so the
uncalibrated default (``thresholds=None`` in :meth:`src.labels.LabelSpace.decide`) is torchmetrics' ``threshold=0.5``.

Tuning thresholds on a dev set and reporting dev F1 is optimistic; :func:`cross_fitted_macro_f1` gives the honest
estimate by calibrating on one half of the rows and scoring on the other, averaged over several random halvings.

:func:`operating_point` chooses thresholds by other policies after training (``python -m src.thresholds``): a
minimum precision or recall per label (or over all labels), the top k labels per row, or fixed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from src.errors import ConfigError
from src.metrics.counts import confusion

#: Candidate thresholds, 0.05 .. 0.95 in steps of 0.05: deliberately coarse (see the module docstring).
GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

#: Pseudo-positives of prior evidence for the global threshold in ``shrinkage="auto"``.
PRIOR_STRENGTH = 20.0

#: :attr:`Thresholds.shrinkage` recorded for ``shrinkage="auto"`` (per-label weights, not one number).
AUTO_SHRINKAGE = -1.0

#: Random halvings :func:`cross_fitted_macro_f1` averages over. One halving of GoEmotions' dev split (5,426 rows)
#: moves the estimate by 0.004 (std over halvings), as much as a change of training seed; ten cut that to ~0.001
#: at ~0.15 s per validation.
CROSSFIT_REPEATS = 10

#: ``at_least_one="auto"`` turns the fallback on only if it raises calibration macro-F1 by more than this.
MIN_GAIN = 1e-3

_EPS = 1e-12  # tolerance when comparing F1 values for ties


@dataclass
class Thresholds:
    """Calibrated multi-label decision rule; ``score > per_label[c]`` predicts label ``c``."""

    global_threshold: float  # one threshold for all labels (macro-F1 optimum on the grid)
    per_label: list[float]  # final per-label thresholds (after shrinkage)
    shrinkage: float  # weight on the global threshold, 0 = pure per-label, 1 = global only; AUTO_SHRINKAGE for "auto"
    at_least_one: bool  # if no label passes, predict the top-scoring label
    policy: str = "max_f1"  # how they were chosen (:data:`POLICIES`, with its value and scope)
    top_k: int | None = None  # the top_k policy: the k best-scoring labels of each row, whatever their scores

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        d["global_threshold"] = float(self.global_threshold)
        d["per_label"] = [float(t) for t in self.per_label]
        d["shrinkage"] = float(self.shrinkage)
        d["at_least_one"] = bool(self.at_least_one)
        d["top_k"] = None if self.top_k is None else int(self.top_k)
        return d

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Bool ``[N, C]`` decisions: ``score > per_label[c]`` (strict); with ``at_least_one``, a row with no label
        above its threshold gets its top-scoring label."""
        scores = np.asarray(scores)
        cut = np.asarray(self.per_label, dtype=np.float64)
        if scores.ndim != 2 or cut.shape != (scores.shape[1],):
            raise ValueError(f"{cut.size} thresholds for scores of shape {scores.shape}")
        if self.top_k is not None:
            decisions = np.zeros(scores.shape, dtype=bool)
            np.put_along_axis(decisions, np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k], True, axis=1)
            return decisions
        decisions = scores > cut[None, :]
        if self.at_least_one:
            empty = np.flatnonzero(~decisions.any(axis=1))
            decisions[empty, scores[empty].argmax(axis=1)] = True
        return decisions

    @classmethod
    def from_dict(cls, d: dict) -> Thresholds:
        return cls(
            global_threshold=float(d["global_threshold"]),
            per_label=[float(t) for t in d["per_label"]],
            shrinkage=float(d["shrinkage"]),
            at_least_one=bool(d["at_least_one"]),
            policy=str(d.get("policy", "max_f1")),
            top_k=None if d.get("top_k") is None else int(d["top_k"]),
        )


# ---------------------------------------------------------------- helpers


def _as_2d(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores and targets must both be [N, C]; got {scores.shape} and {targets.shape}")
    return scores, targets


def macro_f1(targets: np.ndarray, decisions: np.ndarray) -> float:
    """Multi-label macro-F1 over all labels, labels without positives or decisions counting 0 (sklearn-equal)."""
    return float(confusion(np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)).f1().mean())


def _grid_f1(scores: np.ndarray, targets: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per-label F1 at every grid threshold: [G, C] (G is ~20: a loop keeps memory at one [N, C] mask)."""
    return np.stack([confusion(targets, scores > t).f1() for t in grid])


def _closest(candidates: np.ndarray, grid: np.ndarray, target: float) -> float:
    """Among grid indices ``candidates``, the grid value closest to ``target`` (the lower one on an exact tie)."""
    values = grid[candidates]
    return float(values[np.argmin(np.abs(values - target))])


# ---------------------------------------------------------------- public API


def calibrate(
    scores: np.ndarray,
    targets: np.ndarray,
    grid: Sequence[float] = GRID,
    shrinkage: float | str = "auto",
    at_least_one: bool | str = "auto",
    prior_strength: float = PRIOR_STRENGTH,
    min_gain: float = MIN_GAIN,
) -> Thresholds:
    """Fit multi-label thresholds on validation ``scores`` [N, C] (probabilities) and ``targets`` [N, C] (0/1).

    - ``global_threshold``: the grid value maximising macro-F1 (all labels, sklearn ``zero_division=0``) with one
      shared threshold; ties go to the value closest to 0.5.
    - raw per-label threshold: the grid value maximising the label's F1; ties go to the value closest to the global
      threshold (so a label whose F1 is flat, e.g. one without positives, gets exactly the global threshold).
    - ``shrinkage``: ``"auto"`` uses ``w_c = prior_strength / (prior_strength + n_c)`` per label, ``n_c`` its
      number of positives in ``targets``: few positives means a noisy per-label optimum, so more weight on the
      global threshold (``prior_strength = 20`` by default: 20 positives give w = 0.5). A float in [0, 1] uses that
      single weight for every label (0 = raw per-label thresholds, 1 = the global threshold everywhere). The
      returned :attr:`Thresholds.shrinkage` is the float, or :data:`AUTO_SHRINKAGE` (-1.0) for "auto".
    - ``at_least_one``: ``"auto"`` turns on the top-label fallback for rows with no positive iff it raises macro-F1
      on these same rows by more than ``min_gain``; a bool forces it.
    """
    scores, targets = _as_2d(scores, targets)
    grid_arr = np.asarray(sorted(set(float(g) for g in grid)), dtype=np.float64)
    if grid_arr.size == 0:
        raise ValueError("grid must not be empty")
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")

    f1 = _grid_f1(scores, targets, grid_arr)  # [G, C]

    macro = f1.mean(axis=1)
    global_threshold = _closest(np.flatnonzero(macro >= macro.max() - _EPS), grid_arr, 0.5)

    best = f1 >= f1.max(axis=0, keepdims=True) - _EPS  # [G, C]: grid values tied for each label's best F1
    raw = np.array([_closest(np.flatnonzero(best[:, c]), grid_arr, global_threshold) for c in range(f1.shape[1])])

    if isinstance(shrinkage, str):
        if shrinkage != "auto":
            raise ValueError(f"shrinkage must be a float in [0, 1] or 'auto', got {shrinkage!r}")
        positives = targets.sum(0).astype(np.float64)
        denominator = prior_strength + positives
        weight = np.divide(prior_strength, denominator, out=np.ones_like(denominator), where=denominator > 0)
        shrinkage_value = AUTO_SHRINKAGE
    else:
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        weight = np.full(f1.shape[1], float(shrinkage))
        shrinkage_value = float(shrinkage)
    final = weight * global_threshold + (1.0 - weight) * raw

    thresholds = Thresholds(global_threshold, [float(t) for t in final], shrinkage_value, at_least_one=False)
    if isinstance(at_least_one, str):
        if at_least_one != "auto":
            raise ValueError(f"at_least_one must be a bool or 'auto', got {at_least_one!r}")
        without = macro_f1(targets, thresholds.apply(scores))
        thresholds.at_least_one = True
        with_fallback = macro_f1(targets, thresholds.apply(scores))
        thresholds.at_least_one = bool(with_fallback > without + min_gain)
    else:
        thresholds.at_least_one = bool(at_least_one)
    return thresholds


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two row folds of :func:`cross_fitted_macro_f1`: ``default_rng(seed).permutation(n)`` cut at ``n // 2``."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 :]


def cross_fitted_macro_f1(scores: np.ndarray, targets: np.ndarray, seed: int = 0, repeats: int = CROSSFIT_REPEATS,
                          **calibrate_kwargs) -> float:
    """Honest macro-F1 of calibrated thresholds: calibrate on one half of the rows, score on the other, swap, average;
    over ``repeats`` random halvings (split seeds ``seed .. seed + repeats - 1``).

    When thresholds are tuned on the dev set, dev macro-F1 at those thresholds is biased upward (it rewards fitting
    noise); each half here is scored by thresholds that never saw it. Folds come from :func:`split_halves`; macro-F1
    is scikit-learn's (all labels, ``zero_division=0``). ``calibrate_kwargs`` go to :func:`calibrate`.
    """
    scores, targets = _as_2d(scores, targets)
    results = []
    for fit, held_out in cross_folds(len(scores), seed, repeats):
        thresholds = calibrate(scores[fit], targets[fit], **calibrate_kwargs)
        results.append(macro_f1(targets[held_out], thresholds.apply(scores[held_out])))
    return float(np.mean(results))


def cross_fitted_change(reference: np.ndarray, other: np.ndarray, targets: np.ndarray, seed: int = 0,
                        repeats: int = CROSSFIT_REPEATS, **calibrate_kwargs) -> float:
    """Macro-F1 of ``other`` minus that of ``reference`` (two score sets for the same rows, e.g. a model and its
    quantized copy) at thresholds calibrated on ``reference``'s scores of one half of the rows, both scored on the
    other half; swapped and averaged over the halvings of :func:`cross_fitted_macro_f1`.

    Scored on the rows the thresholds were tuned on, ``reference`` sits at its in-sample optimum, so any change of the
    scores looks like a loss there, even one that costs nothing on new rows; this measures it on rows the thresholds
    never saw."""
    reference, targets = _as_2d(reference, targets)
    other, _ = _as_2d(other, targets)  # the same rows and labels
    changes = []
    for fit, held_out in cross_folds(len(reference), seed, repeats):
        thresholds = calibrate(reference[fit], targets[fit], **calibrate_kwargs)
        changes.append(macro_f1(targets[held_out], thresholds.apply(other[held_out]))
                       - macro_f1(targets[held_out], thresholds.apply(reference[held_out])))
    return float(np.mean(changes))


def cross_folds(n: int, seed: int, repeats: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) row pairs: each of ``repeats`` halvings (split seeds ``seed ..``) both ways round."""
    if n < 2:
        raise ValueError("need at least two rows to cross-fit")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    folds = []
    for split_seed in range(seed, seed + repeats):
        first, second = split_halves(n, split_seed)
        folds += [(first, second), (second, first)]
    return folds


# ---------------------------------------------------------------- operating points after training

#: ``python -m src.thresholds policy=...``; ``value`` is the precision, the recall, k, or the threshold(s).
POLICIES = ("max_f1", "precision_at_least", "recall_at_least", "top_k", "fixed")
SCOPES = ("per_label", "global")


@dataclass(frozen=True)
class Cuts:
    """Every distinct decision rule ``score > threshold`` of one label (or of all labels pooled), from predicting
    nothing to predicting every row: thresholds halfway between consecutive distinct scores, with the counts."""

    thresholds: np.ndarray
    tp: np.ndarray
    predicted: np.ndarray
    positives: int

    @classmethod
    def of(cls, scores: np.ndarray, truth: np.ndarray) -> Cuts:
        values, inverse = np.unique(scores, return_inverse=True)  # ascending
        hits = np.bincount(inverse, weights=truth, minlength=len(values))[::-1]
        rows = np.bincount(inverse, minlength=len(values))[::-1]
        descending = values[::-1]
        below = np.append((descending[:-1] + descending[1:]) / 2, descending[-1] / 2)  # predict down to each value
        return cls(np.concatenate([[(descending[0] + 1.0) / 2], below]), np.concatenate([[0], np.cumsum(hits)]),
                   np.concatenate([[0], np.cumsum(rows)]), int(truth.sum()))

    @property
    def precision(self) -> np.ndarray:
        return np.divide(self.tp, self.predicted, out=np.zeros(len(self.tp)), where=self.predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)


def _at_least(cuts: Cuts, policy: str, target: float, name: str) -> float:
    """The threshold that meets the policy's minimum (precision or recall at least ``target``) with the most of the
    other quantity; among equals the highest threshold (the fewest rows predicted)."""
    if cuts.positives == 0:
        raise ConfigError(f"policy={policy}: {name} has no positive rows in this split, so its precision and recall "
                          "are undefined. Tune on a split where every label occurs, or use policy=fixed.")
    precision_first = policy == "precision_at_least"
    constraint, objective = (cuts.precision, cuts.recall) if precision_first else (cuts.recall, cuts.precision)
    meets = (constraint >= target - 1e-12) & (cuts.predicted > 0)
    if not meets.any():  # only a precision can be out of reach: predicting every row gives recall 1
        best = int(np.argmax(cuts.precision))
        raise ConfigError(
            f"policy=precision_at_least value={target}: no threshold reaches that precision for {name}; the best is "
            f"{cuts.precision[best]:.4f} (threshold {cuts.thresholds[best]:.4f}, {int(cuts.predicted[best])} rows "
            "predicted). Lower value, or use scope=global.")
    best = objective[meets].max()
    return float(cuts.thresholds[np.flatnonzero(meets & (objective >= best - 1e-12))[0]])


def operating_point(scores, targets, policy: str = "max_f1", value=None, scope: str = "per_label",
                    names: Sequence[str] | None = None, **calibrate_kwargs) -> Thresholds:
    """Thresholds for multi-label ``scores`` ``[N, C]`` chosen on ``targets`` by ``policy``:

    - ``max_f1``: :func:`calibrate` (per label with shrinkage; ``scope=global``: one shared threshold).
    - ``precision_at_least`` / ``recall_at_least`` (``value`` in (0, 1]): per label, the decision rule with the most
      recall whose precision is at least ``value`` (the most precision whose recall is); ties go to the highest
      threshold. ``scope=global`` pools every label's rows: one threshold, the constraint on micro precision / recall.
    - ``top_k`` (``value`` = k): the k best-scoring labels of every row.
    - ``fixed``: ``value`` is one threshold for every label or a list with one per label.
    """
    scores, truth = _as_2d(scores, targets)
    names = list(names) if names is not None else [f"label {c}" for c in range(scores.shape[1])]
    if policy not in POLICIES:
        raise ConfigError(f"policy={policy}: not a threshold policy. Use one of {', '.join(POLICIES)}.")
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope}: use per_label or global.")
    described = policy if value is None else f"{policy}={value}"
    if policy in ("max_f1", "precision_at_least", "recall_at_least"):
        described += f" ({scope.replace('_', '-')})"
    if policy == "max_f1":
        if value is not None:
            raise ConfigError("policy=max_f1 takes no value; drop value=.")
        kwargs = {**calibrate_kwargs, **({"shrinkage": 1.0} if scope == "global" else {})}
        tuned = calibrate(scores, truth, **kwargs)
        tuned.policy = described
        return tuned
    if policy in ("top_k", "fixed"):
        return given_rule(policy, value, scores.shape[1])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"policy={policy} value={value}: the minimum must be a number in (0, 1], e.g. value=0.8.")
    if scope == "global":
        cut = [_at_least(Cuts.of(scores.ravel(), truth.ravel()), policy, float(value), "the labels pooled")]
        cut *= scores.shape[1]
    else:
        cut = [_at_least(Cuts.of(scores[:, c], truth[:, c]), policy, float(value), f"label {names[c]!r}")
               for c in range(scores.shape[1])]
    return Thresholds(float(np.mean(cut)), cut, 0.0, False, described)


def given_rule(policy: str, value, num_labels: int) -> Thresholds:
    """The policies that need no scores: ``top_k`` (``value`` = k) and ``fixed`` (one threshold or one per label)."""
    described = f"{policy}={value}"
    if policy == "top_k":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < num_labels:
            raise ConfigError(f"policy=top_k value={value}: k must be an integer from 1 to {num_labels - 1} "
                              f"(the model has {num_labels} labels).")
        return Thresholds(0.5, [0.5] * num_labels, 0.0, False, described, top_k=value)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (value if isinstance(value, (list, tuple)) else [value]))
    cut = np.asarray(value if isinstance(value, (list, tuple)) else [value] * num_labels,
                     dtype=np.float64) if numeric else None
    if cut is None or cut.shape != (num_labels,) or not np.all((cut >= 0) & (cut <= 1)):
        raise ConfigError(f"policy=fixed value={value}: give one threshold in [0, 1] or a list of "
                          f"{num_labels} (one per label, in the model's label order).")
    return Thresholds(float(cut.mean()), cut.tolist(), 0.0, False, described)


def override(value, num_labels: int) -> Thresholds:
    """``thresholds=`` of ``src.eval`` / ``src.predict``: a number (one threshold for every label), a list (one
    per label) or ``{top_k: k}``, instead of the thresholds stored with the model."""
    if isinstance(value, dict):
        if set(value) != {"top_k"}:
            raise ConfigError(f"thresholds={value}: the only dict form is {{top_k: k}}, e.g. 'thresholds={{top_k:2}}'.")
        return given_rule("top_k", value["top_k"], num_labels)
    return given_rule("fixed", list(value) if isinstance(value, (list, tuple)) else value, num_labels)
