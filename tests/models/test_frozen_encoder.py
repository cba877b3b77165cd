"""model=frozen_encoder: cached embeddings, samplers on them, the probe, and end-to-end training through train()."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.nn.modules.module import register_module_forward_hook
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from src.data.embeddings import EmbeddingDataModule
from src.errors import ConfigError
from src.export import to_hf
from src.models.frozen import LinearProbe
from src.models.inference import predict_scores
from src.models.loading import load_for_inference
from src.models.optimization import adamw
from src.train import train
from tests.conftest import compose_train
from tests.test_train import on_tiny, quick, write_dataset

EXACT = "32-true"  # fp32 wherever numbers are compared: bf16 results depend on how texts are batched


def probe_data(tmp_path: Path, tiny_bert: str, paths: dict[str, Path], *extra: str) -> EmbeddingDataModule:
    """The datamodule that ``model=frozen_encoder`` configures, on the tiny BERT, encoding in fp32."""
    cfg = compose_train(tmp_path, [*on_tiny(tiny_bert, paths), "model=frozen_encoder", f"data.precision={EXACT}",
                                   *extra])
    return instantiate(cfg.data)


class EncoderCalls:
    """Counts forward calls of any Hugging Face model (a global forward hook: no patching of the code under test)."""

    def __enter__(self):
        self.count = 0
        self.handle = register_module_forward_hook(self.hook)
        return self

    def hook(self, module, args, output):
        self.count += isinstance(module, PreTrainedModel)

    def __exit__(self, *exc):
        self.handle.remove()


def test_embeddings_are_the_masked_mean_of_the_encoder_states(tmp_path, tiny_bert):
    module = probe_data(tmp_path, tiny_bert, write_dataset(tmp_path, multilabel=True, rows=48))
    module.setup()
    encoder = AutoModel.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = module.data.splits["val"].texts
    with torch.inference_mode():  # one text at a time, unpadded: the plain mean over its tokens
        expected = torch.stack([
            encoder(**tokenizer(text, truncation=True, max_length=module.max_length, return_tensors="pt"))
            .last_hidden_state[0].mean(dim=0)
            for text in texts
        ])
    assert module.embeddings("val").features.shape == (len(texts), encoder.config.hidden_size)
    torch.testing.assert_close(module.embeddings("val").features, expected, atol=1e-5, rtol=1e-4)


def test_embeddings_are_cached_and_a_changed_file_is_encoded_again(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    with EncoderCalls() as first_run:
        first = probe_data(tmp_path, tiny_bert, paths)
        first.setup()
    cache = tmp_path / "outputs" / ".cache" / "embeddings"
    assert first_run.count > 0 and len(list(cache.glob("*.npy"))) == 3  # train, val, test

    with EncoderCalls() as second_run:
        second = probe_data(tmp_path, tiny_bert, paths)
        second.setup()
    assert second_run.count == 0
    for split in ("train", "val", "test"):
        assert torch.equal(first.embeddings(split).features, second.embeddings(split).features)

    paths["val"].write_text(paths["val"].read_text().replace("sunny", "bright"))
    with EncoderCalls() as after_edit:
        probe_data(tmp_path, tiny_bert, paths).setup()
    assert after_edit.count > 0 and len(list(cache.glob("*.npy"))) == 4  # val encoded again, train/test loaded


@pytest.mark.parametrize(("multilabel", "sampler"), [(True, "smote"), (False, "smote"), (True, "oversample"),
                                                     (False, "undersample")])
def test_samplers_change_train_embeddings_only(tmp_path, tiny_bert, multilabel, sampler):
    paths = write_dataset(tmp_path, multilabel, rows=48)
    plain = probe_data(tmp_path, tiny_bert, paths)
    resampled = probe_data(tmp_path, tiny_bert, paths, f"sampler={sampler}", "sampler.ratio=1.0")
    for split in ("val", "test"):
        assert torch.equal(resampled.embeddings(split).features, plain.embeddings(split).features)
        assert torch.equal(resampled.embeddings(split).targets, plain.embeddings(split).targets)
    train, original = resampled.embeddings("train"), plain.embeddings("train")
    assert len(train) != len(original)
    if sampler == "smote":  # the original rows first, then new points
        assert torch.equal(train.features[: len(original)], original.features)
        assert len(train) > len(original)
    else:  # index samplers pick existing rows
        rows = {tuple(row.tolist()) for row in original.features}
        assert all(tuple(row.tolist()) in rows for row in train.features)
    batch = next(iter(resampled.train_dataloader()))
    assert set(batch) == {"embeddings", "labels"} and batch["embeddings"].shape[1] == original.features.shape[1]


def test_the_probe_trains_only_its_head(tiny_bert):
    probe = LinearProbe(tiny_bert, num_labels=3, task="multilabel", label_names=["a", "b", "c"], hidden=8)
    assert not any(p.requires_grad for p in probe.encoder.parameters())
    optimizer = adamw(encoder=probe.encoder, head=probe.head, lr=1e-2)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in probe.head.parameters()}
    width = probe.encoder.config.hidden_size
    assert [layer.out_features for layer in probe.head if isinstance(layer, torch.nn.Linear)] == [8, 3]
    assert probe.logits({"embeddings": torch.randn(5, width)}).shape == (5, 3)
    with pytest.raises(ConfigError, match="hidden"):
        LinearProbe(tiny_bert, num_labels=3, task="multilabel", label_names=["a", "b", "c"], hidden=-1)


@pytest.mark.parametrize("multilabel", [True, False], ids=["multilabel", "multiclass"])
def test_frozen_encoder_trains_end_to_end_with_smote(tmp_path, tiny_bert, multilabel):
    paths = write_dataset(tmp_path, multilabel)
    extra = ["model=frozen_encoder", "sampler=smote", f"loss={'bce' if multilabel else 'ce'}"]
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

    # a saved probe is a whole model: from token ids it gives what its head gives on the cached embeddings
    loaded = load_for_inference(summary["best_checkpoint"])
    assert isinstance(loaded.model, LinearProbe) and loaded.model.hparams.hidden == (0 if multilabel else 8)
    if not multilabel:  # the HF model file has a linear head only
        with pytest.raises(ConfigError, match="format=onnx"):
            to_hf(loaded)
    module = instantiate(compose_train(tmp_path, quick(tiny_bert, paths, *extra, f"data.precision={EXACT}")).data)
    texts = module.data.splits["test"].texts
    from_tokens = predict_scores(loaded.model, loaded.tokenizer, texts, loaded.max_length, precision=EXACT)
    np.testing.assert_allclose(module.score_split(loaded.model, "test", EXACT), from_tokens, atol=1e-5)


def test_smote_with_a_text_model_is_refused(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "sampler=smote", "logger=none"))
    with pytest.raises(ConfigError, match="SmoteResampler creates new feature vectors.*model=frozen_encoder"):
        train(cfg)
