"""`python -m src.compare` on a synthetic sweep in a real MLflow SQLite store, checked against scipy and sklearn."""

from __future__ import annotations

import csv
import itertools
import json
import time

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from scipy.stats import ttest_rel, wilcoxon
from sklearn.metrics import f1_score

from src.compare import compare
from src.errors import ConfigError
from src.labels import LabelSpace
from src.metrics.statistics import holm, paired_bootstrap, paired_permutation, paired_tests, seeds_needed
from tests.helpers import run_cli

# test/macro_f1 by loss and seed; focal seed 5 failed, bce has a seed 6 no other group has
TEST_F1 = {
    "bce": {1: 0.40, 2: 0.42, 3: 0.41, 4: 0.43, 5: 0.39, 6: 0.44},
    "asymmetric": {1: 0.50, 2: 0.47, 3: 0.52, 4: 0.49, 5: 0.51},
    "focal": {1: 0.46, 2: 0.48, 3: 0.45, 4: 0.47},
}
FOLLOW_UP_F1 = {1: 0.53, 2: 0.49, 3: 0.55}  # loss=asymmetric at optim.lr=5e-05, in a second sweep
TARGETS = (np.random.default_rng(0).random((300, 5)) < 0.3).astype(np.int64)
SPACE = LabelSpace("multilabel", tuple("abcde"))


def one_error_per_example(seed: int) -> np.ndarray:
    """The targets with one label flipped in every example (which label depends on the seed)."""
    predictions = TARGETS.copy()
    rows = np.arange(len(TARGETS))
    predictions[rows, (rows + seed) % TARGETS.shape[1]] ^= 1
    return predictions


# saved predictions: asymmetric is exact on seeds 1, 2, 3, 5; focal wrong on every example on seeds 1-4
PREDICTIONS = {("asymmetric", s): TARGETS for s in (1, 2, 3, 5)} | {("focal", s): one_error_per_example(s)
                                                                    for s in (1, 2, 3, 4)}


def add_run(client, experiment_id, start_time, tags, metrics=None, status="FINISHED", run_name=None):
    run_id = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name).info.run_id
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, v, start_time, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps in two experiments: the newer one (created first, in the second experiment) is the main fixture;
    the older one has no seed and no swept-keys tag."""
    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    old_experiment = client.create_experiment("first", artifact_location=str(tmp / "artifacts-first"))
    experiment = client.create_experiment("second", artifact_location=str(tmp / "artifacts-second"))
    now = int(time.time() * 1000)

    parent = add_run(client, experiment, now, {"labelwise.kind": "sweep", "labelwise.sweep_dir": "multirun/x"},
                     run_name="loss=bce,asymmetric,focal seed=1,2,3,4,5")
    children = {}
    for loss, values in TEST_F1.items():
        for seed, value in values.items():
            overrides = [f"loss={loss}", "optim.lr=2e-05", f"seed={seed}"]
            tags = {"mlflow.parentRunId": parent, "labelwise.kind": "job", "labelwise.data_fingerprint": "data0",
                    "labelwise.overrides": json.dumps(overrides), "labelwise.swept_keys": json.dumps(["loss", "seed"])}
            children[loss, seed] = add_run(client, experiment, now + seed, tags, run_name=" ".join(overrides),
                                           metrics={"test/macro_f1": value, "val/macro_f1": value + 0.05})
    failed_tags = {"mlflow.parentRunId": parent, "labelwise.kind": "job", "labelwise.swept_keys": '["loss", "seed"]',
                   "labelwise.overrides": '["loss=focal", "optim.lr=2e-05", "seed=5"]'}
    failed = add_run(client, experiment, now + 5, failed_tags, {"val/macro_f1": 0.9}, status="FAILED")
    for (loss, seed), predictions in PREDICTIONS.items():
        path = tmp / f"{loss}-{seed}" / "predictions_test.npz"
        path.parent.mkdir()
        np.savez(path, targets=TARGETS, predictions=predictions, labels=np.array(json.dumps(SPACE.to_dict())))
        client.log_artifact(children[loss, seed], str(path), "report")
    # a job that saved predictions the way labelwise 0.1 did (class ids, no label space): left out of the bootstrap
    legacy = tmp / "bce-1" / "predictions_test.npz"
    legacy.parent.mkdir()
    np.savez(legacy, targets=TARGETS.argmax(1), predictions=TARGETS.argmax(1))
    client.log_artifact(children["bce", 1], str(legacy), "report")

    # a follow-up sweep over seeds only, at another learning rate, with overrides that say where things go
    follow_up = add_run(client, experiment, now - 1000, {"labelwise.kind": "sweep"}, run_name="seed=1,2,3")
    for seed, value in FOLLOW_UP_F1.items():
        overrides = ["loss=asymmetric", "optim.lr=5e-05", f"seed={seed}", "paths.root_dir=/elsewhere",
                     "trainer.enable_progress_bar=False"]
        tags = {"mlflow.parentRunId": follow_up, "labelwise.kind": "job", "labelwise.overrides": json.dumps(overrides),
                "labelwise.swept_keys": json.dumps(["seed"]), "labelwise.data_fingerprint": f"data{seed // 3}"}
        add_run(client, experiment, now - 1000 + seed, tags, {"test/macro_f1": value})

    old = add_run(client, old_experiment, now - 86_400_000, {"labelwise.kind": "sweep"}, run_name="loss=bce,ce")
    for loss, value in (("bce", 0.3), ("ce", 0.35)):
        tags = {"mlflow.parentRunId": old, "labelwise.overrides": json.dumps([f"loss={loss}", "optim.lr=1e-05"])}
        add_run(client, old_experiment, now - 86_000_000, tags, {"test/macro_f1": value})
    return {"uri": uri, "parent": parent, "old": old, "failed": failed, "client": client, "tmp": tmp,
            "follow_up": follow_up}


def test_groups_are_ranked_and_aggregated_over_seeds(store):
    result = compare(store["uri"], store["parent"], "test/macro_f1")
    assert [g.name for g in result.groups] == ["loss=asymmetric", "loss=focal", "loss=bce"]
    for group in result.groups:
        values = list(TEST_F1[group.name.removeprefix("loss=")].values())
        assert group.n == len(values)
        assert group.mean == pytest.approx(np.mean(values))
        assert group.std == pytest.approx(np.std(values, ddof=1))
        assert (group.min, group.max) == (min(values), max(values))
    assert list(result.groups[1].values) == ["1", "2", "3", "4"]  # the FAILED seed 5 is skipped and named
    assert any(store["failed"] in note and "FAILED" in note for note in result.notes)

    lower = compare(store["uri"], store["parent"], "test/macro_f1", higher_is_better=False)
    assert [g.name for g in lower.groups] == ["loss=bce", "loss=focal", "loss=asymmetric"]


def test_paired_tests_match_scipy_on_matched_seeds(store):
    best, focal, bce = compare(store["uri"], store["parent"], "test/macro_f1").groups
    for group, seeds in ((focal, [1, 2, 3, 4]), (bce, [1, 2, 3, 4, 5])):  # focal lacks 5, best lacks 6
        a = [TEST_F1["asymmetric"][s] for s in seeds]
        b = [TEST_F1[group.name.removeprefix("loss=")][s] for s in seeds]
        assert group.pairs == len(seeds)
        assert group.ttest_p == pytest.approx(ttest_rel(a, b).pvalue)
        assert group.wilcoxon_p == pytest.approx(wilcoxon(a, b).pvalue)
        assert group.seeds_needed == seeds_needed(np.subtract(a, b))
    assert (focal.seeds_needed, bce.seeds_needed) == (12, 4)  # effects 0.89 and 2.83 (mean / sample std)
    assert best.ttest_p is None and best.wilcoxon_p is None


def test_paired_tests_are_na_without_two_differing_pairs():
    assert paired_tests(np.array([0.5]), np.array([0.4])) == (None, None)
    assert paired_tests(np.array([0.5, 0.6, 0.7]), np.array([0.5, 0.6, 0.7])) == (None, None)
    t, w = paired_tests(np.array([0.5, 0.6, 0.7]), np.array([0.5, 0.6, 0.6]))  # zero differences: no crash
    assert t == pytest.approx(ttest_rel([0.5, 0.6, 0.7], [0.5, 0.6, 0.6]).pvalue) and 0 < w <= 1


def test_bootstrap_over_the_seeds_both_groups_saved(store):
    best, focal, bce = compare(store["uri"], store["parent"], "test/macro_f1", resamples=500).groups
    assert focal.bootstrap_seeds == ["1", "2", "3"]  # best saved 1, 2, 3, 5; focal 1, 2, 3, 4
    reference = np.mean([1 - f1_score(TARGETS, one_error_per_example(s), average="macro") for s in (1, 2, 3)])
    assert focal.bootstrap.difference == pytest.approx(reference)
    assert focal.bootstrap.low > 0 and focal.bootstrap.p < 0.01
    assert focal.permutation_p < 0.01 and focal.holm_p == focal.permutation_p  # the only group with predictions
    assert bce.bootstrap is None and best.bootstrap is None and bce.permutation_p is None and bce.holm_p is None
    notes = compare(store["uri"], store["parent"], "test/macro_f1", resamples=50).notes
    assert [n for n in notes if "the bootstrap and permutation columns test" in n] == [
        "the bootstrap and permutation columns test the macro-F1 of each run's saved decisions (at its tuned "
        "thresholds where it has them), not test/macro_f1: the two can disagree"]


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_paired_bootstrap_matches_a_naive_sklearn_loop(task):
    rng = np.random.default_rng(1)
    if task == "multilabel":
        targets = (rng.random((80, 4)) < 0.3).astype(int)
        best = [np.where(rng.random(targets.shape) < 0.15, 1 - targets, targets) for _ in range(2)]
        other = [np.where(rng.random(targets.shape) < 0.25, 1 - targets, targets) for _ in range(2)]
    else:
        targets = rng.integers(0, 4, 80)
        best = [np.where(rng.random(80) < 0.3, rng.integers(0, 4, 80), targets) for _ in range(2)]
        other = [np.where(rng.random(80) < 0.5, rng.integers(0, 4, 80), targets) for _ in range(2)]
        # class 3 only twice, never predicted by other: some resamples lack it (macro over the present classes)
        targets[targets == 3] = 0
        targets[[5, 9]] = 3

    def f1(t, predictions):
        return np.mean([f1_score(t, p, average="macro", zero_division=0) for p in predictions])

    draws = np.random.default_rng(7)
    naive = []
    for _ in range(100):
        rows = draws.integers(0, len(targets), size=len(targets))
        naive.append(f1(targets[rows], [p[rows] for p in best]) - f1(targets[rows], [p[rows] for p in other]))
    observed = f1(targets, best) - f1(targets, other)
    crossing = np.mean(np.array(naive) <= 0) if observed > 0 else np.mean(np.array(naive) >= 0)

    space = LabelSpace(task, tuple("abcd"))
    as_rows = (lambda a: a) if task == "multilabel" else (lambda a: np.eye(4)[a])
    result = paired_bootstrap(space, as_rows(targets), [as_rows(p) for p in best], [as_rows(p) for p in other],
                              n=100, seed=7)
    assert result.difference == pytest.approx(observed)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))
    assert result.p == pytest.approx(min(1.0, 2 * crossing))


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_paired_permutation_equals_a_brute_force_over_every_swap(task):
    """9 examples, 2 seeds: 512 subsets, so scipy enumerates them all; the reference swaps decisions example by
    example (the same examples for both seeds) and scores with sklearn."""
    rng = np.random.default_rng(3)
    if task == "multilabel":
        targets = (rng.random((9, 3)) < 0.4).astype(int)
        best = [np.where(rng.random(targets.shape) < 0.1, 1 - targets, targets) for _ in range(2)]
        other = [np.where(rng.random(targets.shape) < 0.4, 1 - targets, targets) for _ in range(2)]
        as_rows = np.asarray
    else:
        targets = rng.integers(0, 3, 9)
        best = [np.where(rng.random(9) < 0.2, rng.integers(0, 3, 9), targets) for _ in range(2)]
        other = [np.where(rng.random(9) < 0.6, rng.integers(0, 3, 9), targets) for _ in range(2)]
        as_rows = np.eye(3).__getitem__

    def difference(swap):
        mine = [np.where(swap.reshape(-1, *[1] * (b.ndim - 1)), o, b) for b, o in zip(best, other)]
        theirs = [np.where(swap.reshape(-1, *[1] * (b.ndim - 1)), b, o) for b, o in zip(best, other)]
        def f1(predictions):
            return np.mean([f1_score(targets, p, average="macro", zero_division=0) for p in predictions])
        return f1(mine) - f1(theirs)

    observed = difference(np.zeros(9, bool))
    null = np.array([difference(np.array(s, bool)) for s in itertools.product([False, True], repeat=9)])
    tolerance = 1e-12
    expected = min(1.0, 2 * min(np.mean(null >= observed - tolerance), np.mean(null <= observed + tolerance)))
    space = LabelSpace(task, tuple("abc"))
    p = paired_permutation(space, as_rows(targets), [as_rows(b) for b in best], [as_rows(o) for o in other])
    assert observed > 0 and p == pytest.approx(expected) and p < 0.5


def test_holm_matches_the_step_down_definition():
    """Holm (1979): sorted p_(1..m), reject while p_(k) <= alpha / (m - k + 1); the adjusted p-values are the
    smallest alpha at which each hypothesis is rejected, found here by bisection on that rule."""
    p_values = [0.01, None, 0.04, 0.03, 0.005, 0.2]

    def rejected(alpha):
        present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
        out = set()
        for k, (p, i) in enumerate(present):
            if p > alpha / (len(present) - k):
                break
            out.add(i)
        return out

    def smallest_alpha(i):
        low, high = 0.0, 1.0
        if i not in rejected(1.0):
            return 1.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (low, middle) if i in rejected(middle) else (middle, high)
        return high

    adjusted = holm(p_values)
    assert adjusted[1] is None
    assert [adjusted[i] for i in (0, 2, 3, 4, 5)] == pytest.approx([smallest_alpha(i) for i in (0, 2, 3, 4, 5)])
    assert adjusted == pytest.approx([0.04, None, 0.09, 0.09, 0.025, 0.2])


@pytest.mark.parametrize(("effect", "published"), [(1.0, 10), (0.5, 34)])
def test_seeds_needed_matches_published_power_and_a_simulation(effect, published):
    """Paired t-test, two-sided alpha 0.05, power 0.8: n = 10 for d = 1 and 34 for d = 0.5 (G*Power; Cohen's
    tables). A simulation of t-tests on normal differences confirms the power just reaches 0.8 at n, not at n - 1."""
    from scipy.stats import ttest_1samp

    differences = np.array([-1.0, 1.0]) * np.sqrt(0.5) + effect  # mean = effect, sample std = 1
    needed = seeds_needed(differences)
    assert needed == published
    rng = np.random.default_rng(0)
    power = {n: np.mean(ttest_1samp(rng.normal(effect, 1.0, (20_000, n)), 0.0, axis=1).pvalue < 0.05)
             for n in (needed - 1, needed)}
    assert power[needed] > 0.79 and power[needed - 1] < 0.805  # d = 0.5: 0.808 at 34, 0.797 at 33 (SE 0.003)
    assert seeds_needed(np.array([0.1, 0.1])) is None and seeds_needed(np.array([0.5])) is None
    assert seeds_needed(np.array([0.001, -0.0009, 0.0012, -0.0011]), limit=50) == 51


def test_identical_predictions_give_zero_difference_and_p_one():
    predictions = np.where(np.random.default_rng(2).random(TARGETS.shape) < 0.2, 1 - TARGETS, TARGETS)
    result = paired_bootstrap(SPACE, TARGETS, [predictions], [predictions], n=200)
    assert (result.difference, result.low, result.high, result.p) == (0.0, 0.0, 0.0, 1.0)


def test_latest_is_the_newest_sweep_in_any_experiment(store):
    assert compare(store["uri"], "latest").parents[0][0] == store["parent"]


def test_without_seed_or_swept_keys_tag(store):
    """The old sweep: grouped by the keys that differ (loss, not the constant lr); n=1, so no tests."""
    result = compare(store["uri"], store["old"], "test/macro_f1")
    assert [(g.name, g.n, g.std) for g in result.groups] == [("loss=ce", 1, None), ("loss=bce", 1, None)]
    assert (result.groups[1].pairs, result.groups[1].ttest_p, result.groups[1].wilcoxon_p) == (1, None, None)


def test_several_sweeps_group_by_what_differs_between_them_too(store):
    """The follow-up sweep varied only the seed, but its lr differs from the first sweep's: lr joins the groups;
    where its outputs went (paths, progress bar) does not. Its runs pair with the first sweep's by seed."""
    result = compare(store["uri"], [store["parent"], store["follow_up"]], "test/macro_f1")
    assert [g.name for g in result.groups] == ["loss=asymmetric optim.lr=5e-05", "loss=asymmetric optim.lr=2e-05",
                                               "loss=focal optim.lr=2e-05", "loss=bce optim.lr=2e-05"]
    assert [run_id for run_id, _ in result.parents] == [store["parent"], store["follow_up"]]
    best, asymmetric = result.groups[:2]
    assert best.mean == pytest.approx(np.mean(list(FOLLOW_UP_F1.values())))
    seeds = [1, 2, 3]
    assert asymmetric.pairs == 3
    assert asymmetric.ttest_p == pytest.approx(ttest_rel([FOLLOW_UP_F1[s] for s in seeds],
                                                         [TEST_F1["asymmetric"][s] for s in seeds]).pvalue)
    # the follow-up's seed 3 ran on other data (fingerprint data1, the first sweep's data0): named, the rest not
    assert [note for note in result.notes if "different data" in note] == [
        "seed=3: the groups' runs trained on different data (data fingerprints data0, data1): their difference is "
        "the data's as much as the settings'."]
    with pytest.raises(ConfigError, match="a sweep is named twice"):
        compare(store["uri"], [store["parent"], store["parent"]], "test/macro_f1")


def test_bad_metric_and_bad_run_id_say_what_exists(store):
    with pytest.raises(ConfigError, match=r"test/nope.*test/macro_f1, val/macro_f1"):
        compare(store["uri"], store["parent"], "test/nope")
    with pytest.raises(ConfigError, match="sweep=0123abc: no such run"):
        compare(store["uri"], "0123abc")


def test_cli_prints_the_table_writes_and_logs_the_files(store):
    run_dir = store["tmp"] / "cli"
    result = run_cli(store["tmp"], f"paths.mlflow_uri={store['uri']}", f"sweep={store['parent']}",
                     "metric=val/macro_f1", f"hydra.run.dir={run_dir}", module="src.compare", check=False,
                     env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(column in result.stdout for column in ("val/macro_f1", "Wilcoxon p", "ddof=1", "seeds needed", "Holm p"))
    rows = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows == ["loss=asymmetric", "loss=focal", "loss=bce"]
    assert f"skipped FAILED run {store['failed']}" in result.stdout
    with (run_dir / "compare.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [row["group"] for row in written] == ["loss=asymmetric", "loss=focal", "loss=bce"]
    assert float(written[0]["mean"]) == pytest.approx(np.mean(list(TEST_F1["asymmetric"].values())) + 0.05)
    logged = store["client"].list_artifacts(store["parent"], "compare")
    assert sorted(a.path for a in logged) == ["compare/compare.csv", "compare/compare.md", "compare/compare.png"]
    assert all((run_dir / name).stat().st_size > 0 for name in ("compare.md", "compare.csv", "compare.png"))

    both = run_cli(store["tmp"], f"paths.mlflow_uri={store['uri']}", f"sweep=[{store['parent']},{store['follow_up']}]",
                   f"hydra.run.dir={store['tmp'] / 'cli-both'}", module="src.compare", env={"COLUMNS": "250"})
    assert f"({store['parent']}) and seed=1,2,3 ({store['follow_up']})" in both.stdout.replace("\n", "")
    assert [a.path for a in store["client"].list_artifacts(store["follow_up"], "compare")] == [
        "compare/compare.csv", "compare/compare.md", "compare/compare.png"]


def test_sweeps_differing_only_in_a_training_callback_are_two_groups():
    """A follow-up sweep with weight averaging on (callbacks.ema) against a baseline sweep: two groups, each seed once,
    not one group whose seeds overwrite each other; the progress bar's setting makes no group."""
    from src.compare import _groups
    from src.tracking.sweep_results import Job, grouping_keys_across

    ema = "callbacks.ema={_target_:src.callbacks.averaging.WeightEMA,decay:0.998}"

    def sweep(*settings):
        return [Job(f"r{seed}", "FINISHED", 0, {"seed": str(seed), **dict(s.split("=", 1) for s in settings)},
                    {"val/x": 0.5}, ["seed"]) for seed in (1, 2, 3)]

    keys = grouping_keys_across([sweep(ema, "callbacks.progress_bar=null"), sweep()])
    assert keys == ["callbacks.ema"]
    groups = _groups([*sweep(ema), *sweep()], keys, "val/x", [])
    assert sorted(g.name for g in groups) == [ema, "defaults"] and all(g.n == 3 for g in groups)


def test_group_names_show_the_keys_a_job_set():
    from src.compare import _group_name
    from src.tracking.sweep_results import Job

    def job(**settings):
        return Job("r", "FINISHED", 0, settings, {}, None)

    assert _group_name(job(loss="ce", seed="1"), ["loss", "optim.lr"]) == "loss=ce"
    assert _group_name(job(seed="1"), ["loss", "optim.lr"]) == "defaults"  # a baseline sweep left both alone
    assert _group_name(job(seed="1"), []) == "all"  # nothing swept but the seed
