"""`python -m src.thresholds`: a trained model's operating point chosen on its validation split, written as a new
checkpoint beside the untouched original."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from src.inference import Predictor
from src.train import train
from tests.helpers import compose_train, quick, run_cli, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    directory = tmp_path_factory.mktemp("operating-point")
    paths = write_dataset(directory, multilabel=True)
    summary = train(compose_train(directory, quick(tiny_bert, paths, "trainer.max_epochs=2")))
    return directory, Path(summary["best_checkpoint"]), summary


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_recall_policy_writes_a_new_checkpoint_and_keeps_the_old(trained):
    directory, checkpoint, summary = trained
    before = digest(checkpoint)
    run_cli(directory, f"ckpt_path={checkpoint}", "policy=recall_at_least", "value=0.9", "hydra.run.dir=op",
            module="src.thresholds")
    new = checkpoint.with_name(f"{checkpoint.stem}.recall_at_least_0.9{checkpoint.suffix}")
    assert digest(checkpoint) == before and new.is_file()
    result = json.loads((directory / "op" / "thresholds.json").read_text())
    assert result["checkpoint"] == str(new) and (directory / "op" / "thresholds.png").stat().st_size > 0
    predictor = Predictor.from_checkpoint(new)
    assert predictor.thresholds.policy == "recall_at_least=0.9 (per-label)"
    assert predictor.thresholds.per_label == pytest.approx(result["thresholds"]["per_label"])
    assert all(row["recall"] >= 0.9 for row in result["after"]["labels"])  # on the split it was tuned on
    # the validation split of training, scored with the stored thresholds: the tuned val macro-F1 training reported
    assert result["rows"] == 32
    assert result["before"]["macro_f1"] == pytest.approx(summary["metrics"]["val"]["macro_f1_tuned"], abs=1e-6)


@pytest.mark.slow
def test_bad_requests_get_one_clear_message(trained):
    directory, checkpoint, _ = trained
    for args, expected in (
        ([f"ckpt_path={checkpoint}", "policy=top_k", "value=7"], "k must be an integer from 1 to 2"),
        ([f"ckpt_path={checkpoint}", f"output={checkpoint}"], "never rewritten in place"),
    ):
        result = run_cli(directory, *args, module="src.thresholds", check=False)
        assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["hf", "onnx"])
def test_an_export_directory_gets_a_new_directory_beside_it(trained, kind):
    """An export carries no training data: tuned on a file given with data=...; the new directory's config, model
    card and predictions use the new rule, the old directory is untouched."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from src.export import write_export
    from src.thresholds import choose_thresholds
    from tests.helpers import CONF

    if kind == "onnx":
        pytest.importorskip("onnxruntime", reason="pip install -e '.[onnx]'")
    directory, checkpoint, _ = trained
    export = directory / f"export-{kind}"
    export.mkdir()
    write_export(Predictor.from_checkpoint(checkpoint), checkpoint, export, kind, str(export))
    before = {path.name: digest(path) for path in export.iterdir() if path.is_file()}
    overrides = [f"ckpt_path={export}", "policy=top_k", "value=1", "data=jsonl",
                 f"data.source.train={directory / 'val.jsonl'}", "split=train"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="thresholds", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(directory / f"op-{kind}")

    choose_thresholds(cfg)

    new = directory / f"export-{kind}.top_k_1"
    assert {path.name: digest(path) for path in export.iterdir() if path.is_file()} == before
    predictor = Predictor.load(new)
    assert predictor.thresholds.top_k == 1
    assert all(len(record["labels"]) == 1 for record in predictor.predict(["sunny party", "dark and scary"]))
    assert "its 1 best-scoring labels" in (new / "README.md").read_text()
    assert "its 1 best-scoring labels" not in (export / "README.md").read_text()


def test_an_export_without_data_is_one_clear_message(trained):
    from hydra import compose, initialize_config_dir

    from src.errors import ConfigError
    from src.export import write_export
    from src.thresholds import choose_thresholds
    from tests.helpers import CONF

    directory, checkpoint, _ = trained
    export = directory / "export-nodata"
    export.mkdir()
    write_export(Predictor.from_checkpoint(checkpoint), checkpoint, export, "hf", str(export))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="thresholds", overrides=[f"ckpt_path={export}", "policy=top_k", "value=1"])
    with pytest.raises(ConfigError, match="an export carries no training data"):
        choose_thresholds(cfg)
