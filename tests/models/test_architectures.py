"""Every shipped ``model=`` option, built from a tiny random encoder of its architecture (with a real tokenizer of
its kind) and trained through the real pipeline, multi-label and multi-class; then predicted with and exported."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from src.errors import ConfigError
from src.export import export_hf
from src.inference import Predictor
from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.losses.bce import BinaryCrossEntropy
from src.models.build import classifier
from src.models.fast_dropout import ATTENTION
from src.train import train
from tests.helpers import CONF, QUIET, SHIPPED_ENCODERS, compose_train, on_tiny, write_dataset

OPTIONS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)
FAST = [*QUIET, "logger=none", "report=false", "callbacks.progress_bar=null", "trainer.max_epochs=1",
        "optim.lr=1e-3", "data.batch_size=16"]


def encoder_of(tmp_path: Path, option: str) -> str:
    return compose_train(tmp_path, [f"model={option}"]).model.name_or_path


def test_every_shipped_encoder_is_covered(tmp_path):
    assert {encoder_of(tmp_path, option) for option in OPTIONS} == set(SHIPPED_ENCODERS)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("option", OPTIONS)
def test_option_builds_trains_predicts_and_exports(tmp_path, tiny_encoder, option, task):
    model_type = SHIPPED_ENCODERS[encoder_of(tmp_path, option)]
    directory = tiny_encoder(model_type)
    paths = write_dataset(tmp_path, multilabel=task == "multilabel")
    extra = [] if task == "multilabel" else ["loss=ce"]
    cfg = compose_train(tmp_path, [f"model={option}", *on_tiny(directory, paths), *FAST, *extra])
    summary = train(cfg)
    assert summary["task"] == task and 0.0 <= summary["metrics"]["val"]["macro_f1"] <= 1.0

    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    assert predictor.net.config.encoder.model_type == model_type
    assert predictor.tokenizer.name_or_path == directory
    records = predictor.predict(["the day was sunny and great", "rude and furious"])
    assert [len(record["scores"]) for record in records] == [3, 3]
    if task == "multilabel":
        assert export_hf(predictor, tmp_path / "export") < 1e-4


@pytest.mark.parametrize("model_type", ["distilbert", "deberta-v2"])
def test_pooler_pooling_on_an_encoder_without_a_pooler_is_one_clear_message(tiny_encoder, model_type):
    with pytest.raises(ConfigError, match=f"model.pooling=pooler: {model_type} encoders .* have no pooler layer"):
        classifier(tiny_encoder(model_type), labels=LABELS, pooling="pooler")


@pytest.mark.parametrize(("model_type", "attention"), [("bert", ATTENTION), ("distilbert", ATTENTION),
                                                       ("roberta", ATTENTION), ("deberta-v2", "eager")])
def test_fast_dropout_takes_over_sdpa_and_leaves_debertas_own_attention(tiny_encoder, model_type, attention):
    net = classifier(tiny_encoder(model_type), labels=LABELS, pooling="cls")
    assert net.encoder.config._attn_implementation == attention
    input_ids = torch.tensor([[2, 11, 18, 6, 3], [2, 11, 3, 0, 0]])
    logits = net(input_ids, (input_ids != 0).long()).logits
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in net.encoder.parameters() if p.grad is not None)


class LossDtype(L.Callback):
    """Records the dtype of every training loss and of the logits it came from."""

    def __init__(self):
        self.dtypes = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.dtypes.add(outputs["loss"].dtype)


def test_deberta_under_bf16_autocast_keeps_the_loss_in_fp32(tmp_path, tiny_encoder):
    """DeBERTa's attention overflows in half precision: the encoder runs under autocast, the loss stays fp32."""
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, ["model=deberta_v3_base", *on_tiny(tiny_encoder("deberta-v2"), paths), *FAST,
                                   "trainer.precision=bf16-mixed", "test=false"])
    dtypes = LossDtype()
    summary = train(cfg, extra_callbacks=[dtypes])
    assert dtypes.dtypes == {torch.float32}
    assert math.isfinite(summary["metrics"]["train"]["loss"])


@pytest.mark.parametrize("loss", [BinaryCrossEntropy(), AsymmetricLoss()], ids=["bce", "asymmetric"])
def test_fp16_logits_give_an_fp32_loss(tiny_encoder, loss):
    """Under fp16 autocast (Lightning turns 16-mixed into bf16 on a CPU, so torch's autocast is used directly) the
    head's logits are fp16; the losses compute in fp32, where large DeBERTa logits cannot overflow."""
    net = classifier(tiny_encoder("deberta-v2"), labels=LABELS, pooling="cls")
    input_ids = torch.tensor([[2, 11, 18, 6, 3], [2, 11, 3, 0, 0]])
    with torch.autocast("cpu", dtype=torch.float16):
        logits = net(input_ids, (input_ids != 0).long()).logits
        value = loss(logits * 3000, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert logits.dtype == torch.float16 and value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
