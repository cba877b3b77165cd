"""experiment=linear_probe: a frozen encoder's cached embeddings, samplers on them, and the probe end to end."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.nn.modules.module import register_module_forward_hook
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from src.data.datamodule import TextDataModule
from src.errors import ConfigError
from src.export import export_hf
from src.inference import Predictor
from src.models.modeling_labelwise import LabelwiseForSequenceClassification
from src.train import train
from tests.helpers import compose_train, on_tiny, quick, write_dataset

EXACT = "32-true"  # fp32 wherever numbers are compared: bf16 results depend on how texts are batched


def probe_data(tmp_path: Path, tiny_bert: str, paths: dict[str, Path], *extra: str) -> TextDataModule:
    """The datamodule experiment=linear_probe configures, on the tiny BERT, with its model attached (fp32)."""
    cfg = compose_train(tmp_path, [*on_tiny(tiny_bert, paths), "experiment=linear_probe", *extra])
    module = instantiate(cfg.data)
    net = instantiate(cfg.model, _partial_=True)(labels=module.label_space, max_length=module.max_length)
    module.attach(net, EXACT)
    return module


class EncoderCalls:
    """Counts forward calls of any Hugging Face model (a global forward hook: no patching of the code under test)."""

    def __enter__(self):
        self.count = 0
        self.handle = register_module_forward_hook(self.hook)
        return self

    def hook(self, module, args, output):
        # the encoder's calls, not the classifier's around them (Predictor runs both)
        self.count += isinstance(module, PreTrainedModel) and not isinstance(module, LabelwiseForSequenceClassification)

    def __exit__(self, *exc):
        self.handle.remove()


def test_embeddings_are_the_masked_mean_of_the_encoder_states(tmp_path, tiny_bert):
    module = probe_data(tmp_path, tiny_bert, write_dataset(tmp_path, multilabel=True, rows=48))
    encoder = AutoModel.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = module.data.splits["val"].texts
    with torch.inference_mode():  # one text at a time, unpadded: the plain mean over its tokens
        expected = torch.stack([
            encoder(**tokenizer(text, truncation=True, max_length=module.max_length, return_tensors="pt"))
            .last_hidden_state[0].mean(dim=0)
            for text in texts
        ])
    features = module.dataset("val").features
    assert features.shape == (len(texts), encoder.config.hidden_size)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)


def test_embeddings_are_cached_and_a_changed_file_is_encoded_again(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    first = probe_data(tmp_path, tiny_bert, paths)
    with EncoderCalls() as first_run:
        first.setup()
    cache = tmp_path / "outputs" / ".cache" / "embeddings"
    assert first_run.count > 0 and len(list(cache.glob("*.npy"))) == 3  # train, val, test

    second = probe_data(tmp_path, tiny_bert, paths)
    with EncoderCalls() as second_run:
        second.setup()
    assert second_run.count == 0
    for split in ("train", "val", "test"):
        assert torch.equal(first.dataset(split).features, second.dataset(split).features)

    paths["val"].write_text(paths["val"].read_text().replace("sunny", "bright"))
    edited = probe_data(tmp_path, tiny_bert, paths)
    with EncoderCalls() as after_edit:
        edited.setup()
    assert after_edit.count > 0 and len(list(cache.glob("*.npy"))) == 4  # val encoded again, train/test loaded


@pytest.mark.parametrize(("multilabel", "sampler"), [(True, "smote"), (False, "smote"), (True, "oversample"),
                                                     (False, "undersample")])
def test_samplers_change_train_embeddings_only(tmp_path, tiny_bert, multilabel, sampler):
    paths = write_dataset(tmp_path, multilabel, rows=48)
    plain = probe_data(tmp_path, tiny_bert, paths)
    resampled = probe_data(tmp_path, tiny_bert, paths, f"sampler={sampler}", "data.sampler.ratio=1.0")
    for split in ("val", "test"):
        assert torch.equal(resampled.dataset(split).features, plain.dataset(split).features)
        assert torch.equal(resampled.dataset(split).targets, plain.dataset(split).targets)
    train_rows, original = resampled.dataset("train"), plain.dataset("train")
    assert len(train_rows) != len(original)
    assert set(train_rows.targets.sum(1).tolist()) <= ({1.0} if not multilabel else {0.0, 1.0, 2.0, 3.0})
    if sampler == "smote":  # the original rows first, then new points
        assert torch.equal(train_rows.features[: len(original)], original.features)
        assert len(train_rows) > len(original)
    else:  # index samplers pick existing rows
        rows = {tuple(row.tolist()) for row in original.features}
        assert all(tuple(row.tolist()) in rows for row in train_rows.features)
    batch = next(iter(resampled.train_dataloader()))
    assert set(batch) == {"embeddings", "labels", "index"}
    assert batch["embeddings"].shape[1] == original.features.shape[1]


@pytest.mark.parametrize("multilabel", [True, False], ids=["multilabel", "multiclass"])
def test_linear_probe_trains_end_to_end_with_smote(tmp_path, tiny_bert, multilabel):
    paths = write_dataset(tmp_path, multilabel)
    extra = ["experiment=linear_probe", "sampler=smote", f"loss={'bce' if multilabel else 'ce'}",
             "trainer.max_epochs=3"]
    if not multilabel:
        extra += ["model.hidden=8", "logger=none"]
    summary = train(compose_train(tmp_path, quick(tiny_bert, paths, *extra)))

    for split in ("train", "val", "test"):
        assert {"loss", "macro_f1", "micro_f1"} <= set(summary["metrics"][split]), split
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file()
    assert (tmp_path / "run" / "report" / "test" / "per_label.csv").is_file()
    if multilabel:
        assert len(summary["thresholds"]["per_label"]) == 3 and "macro_f1_tuned" in summary["metrics"]["test"]
        run = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
        assert run.info.status == "FINISHED" and "test/macro_f1" in run.data.metrics

    # a saved probe is a whole model: from token ids it gives what its head gave on the cached embeddings
    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    assert predictor.net.config.head_hidden == (0 if multilabel else 8)
    module = probe_data(tmp_path, tiny_bert, paths, *extra[1:])
    texts = module.data.splits["test"].texts
    from_embeddings = predictor.labels.scores(predictor.net(embeddings=module.dataset("test").features).logits)
    np.testing.assert_allclose(predictor.scores(texts, precision=EXACT), from_embeddings.detach().numpy(),
                               atol=1e-5)
    # and it exports like any model, a hidden layer included
    export_hf(predictor, tmp_path / "hf")
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    assert exported.config.head_hidden == predictor.net.config.head_hidden


def test_smote_needs_embeddings_and_embeddings_need_a_frozen_encoder(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "sampler=smote", "logger=none"))
    with pytest.raises(ConfigError, match="SmoteResampler creates new feature vectors.*experiment=linear_probe"):
        train(cfg)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "data.features=embeddings", "logger=none"))
    with pytest.raises(ConfigError, match="model.freeze_encoder=true"):
        train(cfg)
