"""Seed ensembles (``ensemble.members=K``): a real 2-member run with its MLflow parent, the averaged scores and tuned
thresholds against an independent recomputation, and ``ensemble.ckpt`` through Predictor, src.predict, src.eval,
src.thresholds and the exports against the members loaded one by one."""

from __future__ import annotations

import importlib.util
import json

import mlflow
import numpy as np
import pytest
from omegaconf import open_dict
from sklearn.metrics import f1_score

from src.compare import compare
from src.ensemble import train_ensemble
from src.errors import ConfigError
from src.inference import Predictor
from src.metrics.thresholds import Thresholds, calibrate, cross_fitted_macro_f1
from src.models.ensemble import LabelwiseEnsemble
from src.schema import validate
from tests.helpers import compose_train, quick, write_dataset

EXACT = "32-true"  # fp32: bf16 autocast results depend on how texts are batched
TEXTS = ["what a sunny party", "so rude and unfair", "dark and scary and alone", "the day was great but rude"]


def compose_app(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from src import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(name, overrides)


@pytest.fixture(scope="module")
def two_members(tmp_path_factory, tiny_bert):
    directory = tmp_path_factory.mktemp("ensemble")
    paths = write_dataset(directory, multilabel=True)
    cfg = compose_train(directory, quick(tiny_bert, paths, "trainer.max_epochs=2", "ensemble.members=2"))
    return directory, cfg, train_ensemble(cfg)


def member_summaries(directory):
    return [json.loads((directory / "run" / f"member{i}" / "summary.json").read_text()) for i in range(2)]


def test_scores_averaged_and_thresholds_tuned_on_them(two_members):
    directory, cfg, result = two_members
    saved = [np.load(directory / "run" / f"member{i}" / "report" / "predictions_val.npz") for i in range(2)]
    assert np.array_equal(saved[0]["targets"], saved[1]["targets"])  # the same val rows for both seeds
    assert not np.allclose(saved[0]["scores"], saved[1]["scores"])  # but different models
    mean = (saved[0]["scores"].astype(np.float64) + saved[1]["scores"]) / 2
    written = np.load(directory / "run" / "ensemble_predictions.npz")
    np.testing.assert_allclose(written["val_scores"], mean, atol=1e-7)
    truth = saved[0]["targets"].astype(bool)
    options = dict(cfg.thresholds)
    tuned = calibrate(mean, truth, **options)
    assert result["thresholds"] == tuned.to_dict()
    decisions = mean > np.asarray(tuned.per_label)
    if tuned.at_least_one:  # a row with no label passing gets its top label
        empty = ~decisions.any(1)
        decisions[empty, mean[empty].argmax(1)] = True
    row = result["metrics"]["ensemble_val"]
    assert row["macro_f1_tuned"] == pytest.approx(f1_score(truth, decisions, average="macro", zero_division=0))
    assert row["macro_f1"] == pytest.approx(f1_score(truth, mean > 0.5, average="macro", zero_division=0))
    assert row["macro_f1_tuned_crossfit"] == pytest.approx(cross_fitted_macro_f1(mean, truth, **options))
    tests = [np.load(directory / "run" / f"member{i}" / "report" / "predictions_test.npz") for i in range(2)]
    test_mean = (tests[0]["scores"].astype(np.float64) + tests[1]["scores"]) / 2
    test_decisions = Thresholds.from_dict(result["thresholds"])
    from src.labels import LabelSpace

    space = LabelSpace.from_dict(json.loads(str(tests[0]["labels"])))
    expected = f1_score(tests[0]["targets"].astype(bool), space.decide(test_mean, test_decisions), average="macro",
                        zero_division=0)
    assert result["metrics"]["ensemble_test"]["macro_f1_tuned"] == pytest.approx(expected)
    # the members' own metrics as mean and sample std
    members = member_summaries(directory)
    values = [m["metrics"]["val"]["macro_f1"] for m in members]
    assert result["metrics"]["val"]["macro_f1"] == pytest.approx(np.mean(values))
    assert result["metrics"]["val"]["macro_f1_std"] == pytest.approx(np.std(values, ddof=1))
    assert result["seeds"] == [cfg.seed, cfg.seed + 1]
    assert result["optimized_metric"]["value"] == pytest.approx(row["macro_f1"])
    assert json.loads((directory / "run" / "ensemble_summary.json").read_text())["thresholds"] == result["thresholds"]


def test_each_member_is_a_child_run_and_compare_pairs_members(two_members):
    _, _, result = two_members
    client = mlflow.MlflowClient(result["mlflow"]["tracking_uri"])
    parent = client.get_run(result["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["labelwise.ensemble_members"] == "2"
    assert parent.data.metrics["ensemble_val/macro_f1_tuned_crossfit"] == pytest.approx(
        result["metrics"]["ensemble_val"]["macro_f1_tuned_crossfit"])
    assert parent.data.metrics["val/macro_f1_std"] == pytest.approx(result["metrics"]["val"]["macro_f1_std"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.tags["labelwise.member"] for run in children) == ["0", "1"]
    assert sorted(run.info.run_id for run in children) == sorted(result["member_runs"])
    assert sorted(run.data.params["seed"] for run in children) == ["42", "43"]
    ranked = compare(result["mlflow"]["tracking_uri"], parent.info.run_id, "val/macro_f1")
    assert [(g.name, g.n) for g in ranked.groups] == [("all", 2)]


def test_the_ensemble_checkpoint_scores_as_the_mean_of_its_members(two_members):
    directory, _, result = two_members
    ensemble = Predictor.load(result["checkpoint"])
    assert isinstance(ensemble.net, LabelwiseEnsemble) and len(ensemble.net.members) == 2
    assert ensemble.net.config.thresholds == result["thresholds"]
    members = [Predictor.load(s["best_checkpoint"]) for s in member_summaries(directory)]
    expected = np.mean([m.scores(TEXTS, precision=EXACT) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.scores(TEXTS, precision=EXACT), expected, atol=1e-6)
    labelled = ensemble.predict(TEXTS, precision=EXACT)
    chosen = ensemble.labels.decide(expected, Thresholds.from_dict(result["thresholds"]))
    assert [r["labels"] for r in labelled] == [[ensemble.labels.names[j] for j in np.flatnonzero(row)]
                                               for row in chosen]


def test_predict_eval_and_thresholds_apps_take_the_ensemble(two_members, tmp_path, monkeypatch):
    from src.eval import evaluate_checkpoint
    from src.predict import predict
    from src.thresholds import choose_thresholds

    _, _, result = two_members
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    predict(compose_app("predict", [f"ckpt_path={result['checkpoint']}", "input=texts.txt", "output=o.jsonl",
                                    f"precision={EXACT}"]))
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    ensemble = Predictor.load(result["checkpoint"])
    expected = ensemble.scores(TEXTS, precision=EXACT)
    got = np.array([[r["scores"][name] for name in ensemble.labels.names] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # src.eval on the val split: the ensemble's fp32 scores decided with its stored thresholds
    cfg = compose_app("eval", [f"ckpt_path={result['checkpoint']}", "split=val", f"precision={EXACT}"])
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir = str(tmp_path), str(tmp_path / "eval")
    summary = evaluate_checkpoint(cfg)
    texts, targets = ensemble.validation_split()
    decided = ensemble.labels.decide(ensemble.scores(texts, precision=EXACT), ensemble.thresholds)
    expected = f1_score(targets.astype(bool), decided, average="macro", zero_division=0)
    assert summary["metrics"]["val"]["macro_f1_tuned"] == pytest.approx(expected, abs=1e-6)
    cfg = compose_app("thresholds", [f"ckpt_path={result['checkpoint']}", "policy=precision_at_least", "value=0.5",
                                     f"output={tmp_path / 'p50.ckpt'}"])
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir = str(tmp_path), str(tmp_path / "thresholds")
    chosen = choose_thresholds(cfg)
    rewritten = Predictor.load(tmp_path / "p50.ckpt")
    assert isinstance(rewritten.net, LabelwiseEnsemble) and rewritten.thresholds.to_dict() == chosen["thresholds"]


def test_hf_export_is_refused_with_the_way_out(two_members, tmp_path):
    from src.export import export

    _, _, result = two_members
    cfg = compose_app("export", [f"ckpt_path={result['checkpoint']}", "format=hf", f"output_dir={tmp_path / 'hf'}"])
    with pytest.raises(ConfigError, match="an ensemble of 2 models.*format=onnx"):
        export(cfg)


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
                    reason='the optional ONNX extra is not installed (pip install -e ".[onnx]")')
def test_onnx_export_holds_every_member(two_members, tmp_path):
    from src.export import export
    from src.onnx_engine import load_onnx

    _, _, result = two_members
    export(compose_app("export", [f"ckpt_path={result['checkpoint']}", "format=onnx",
                                  f"output_dir={tmp_path / 'onnx'}"]))
    onnx = load_onnx(tmp_path / "onnx")
    expected = Predictor.load(result["checkpoint"]).scores(TEXTS, precision=EXACT)
    np.testing.assert_allclose(onnx.scores(TEXTS, precision=EXACT), expected, atol=1e-4)
    assert onnx.thresholds.to_dict() == result["thresholds"]
    card = (tmp_path / "onnx" / "README.md").read_text()  # the ensemble's own metrics, not a member's
    assert "a seed ensemble of 2 such models" in card
    assert f"| val | {result['metrics']['ensemble_val']['macro_f1_tuned']:.4f} |" in card


@pytest.mark.parametrize(("extra", "expected"), [
    (["cv.folds=3"], "ensemble.members=2 cannot be combined with cv.folds=3"),
    (["ckpt_path=x.ckpt"], "ckpt_path cannot be combined with ensemble.members: resume one member's run"),
    (["strategy=ddp", "trainer.devices=2"], "ensemble.members trains one model after another in one process"),
    (["report=false"], "keep report=true"),
    (["callbacks.model_checkpoint=null"], "keep callbacks.model_checkpoint"),
    (["export.push_to_hub=me/model"], "export the ensemble once it is trained"),
    (["ensemble.members=1"], "ensemble.members=1: must be"),
])
def test_bad_combinations_are_refused_before_training(tmp_path, tiny_bert, extra, expected):
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "ensemble.members=2", *extra))
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)
        train_ensemble(cfg)
    assert not (tmp_path / "run" / "member0").exists()


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_forward_gives_the_logits_of_the_averaged_probabilities(tiny_bert, task):
    """sigmoid(logits) (multi-label) or softmax(logits) (multi-class) of the ensemble is the members' mean, computed
    here in numpy from each member's own logits."""
    import torch

    from src.labels import LabelSpace
    from src.models.build import classifier

    space = LabelSpace(task, ("a", "b", "c"))
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(classifier(tiny_bert, labels=space, max_length=16, pretrained=False).eval())
    ensemble = LabelwiseEnsemble(members[0].config, members).eval()
    ids = torch.randint(5, 1000, (4, 9))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.inference_mode():
        logits = ensemble(input_ids=ids, attention_mask=mask).logits.double().numpy()
        each = [m(input_ids=ids, attention_mask=mask).logits.double().numpy() for m in members]
    if task == "multiclass":
        expected = np.mean([np.exp(x) / np.exp(x).sum(1, keepdims=True) for x in each], axis=0)
        np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), expected, atol=1e-6)
    else:
        expected = np.mean([1 / (1 + np.exp(-x)) for x in each], axis=0)
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), expected, atol=1e-6)
    assert not np.allclose(each[0], each[1])
