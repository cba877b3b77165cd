"""model.peft=lora: only adapters and the head train; checkpoints hold the adapters; merged exports keep the logits."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from src.errors import ConfigError
from src.export import export_hf
from src.inference import Predictor
from src.labels import LabelSpace
from src.models.build import classifier
from src.models.lora import add_adapters
from src.models.modeling_labelwise import LabelwiseConfig, LabelwiseForSequenceClassification
from src.models.module import CHECKPOINT_KEY
from src.models.optimization import adamw
from src.tracking.checkpoint import read_checkpoint
from src.train import train
from tests.helpers import QUIET, compose_train, on_tiny, write_dataset

LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)
TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"), "distilbert": ("q_lin", "v_lin"),
           "deberta-v2": ("query_proj", "value_proj")}


@pytest.mark.parametrize("model_type", list(TARGETS))
def test_only_the_adapters_and_the_head_train(tiny_encoder, model_type):
    net = classifier(tiny_encoder(model_type), labels=LABELS, pooling="cls", peft="lora",
                     lora={"r": 4, "alpha": 8, "dropout": 0.0})
    assert net.config.lora["target_modules"] == list(TARGETS[model_type])
    trainable = {name: p for name, p in net.named_parameters() if p.requires_grad}
    adapters = {name for name in trainable if ".lora_" in name}
    assert set(trainable) - adapters == {"head.out_proj.weight", "head.out_proj.bias"}
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in adapters} == set(TARGETS[model_type])
    # per layer and target: A (r x 32) and B (32 x r); 2 layers x 2 targets; head 32 x 3 + 3
    assert sum(p.numel() for p in trainable.values()) == 2 * 2 * (4 * 32 + 32 * 4) + 99
    optimizer = adamw(encoder=net.encoder, head=net.head, lr=1.0, head_lr_multiplier=10.0, layer_decay=0.5)
    lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert sorted(set(lrs.values())) == [0.5, 1.0, 10.0]  # adapters by layer depth; no embeddings train
    assert len(lrs) == len(trainable)


def test_lora_trains_checkpoints_adapters_and_exports_them_merged(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    cfg = compose_train(tmp_path, [*on_tiny(tiny_bert, paths), *QUIET, "logger=none", "report=false", "test=false",
                                   "callbacks.progress_bar=null", "trainer.max_epochs=2", "optim.lr=1e-2",
                                   "data.batch_size=16", "model.peft=lora", "model.lora.r=4"])
    summary = train(cfg)
    checkpoint = read_checkpoint(summary["best_checkpoint"])
    state = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()}
    stored = checkpoint[CHECKPOINT_KEY]["net_config"]
    assert stored["lora"] == {"r": 4, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}

    # the encoder's own weights are those it started from; the adapters moved away from B = 0
    start = AutoModel.from_pretrained(tiny_bert).state_dict()
    for key, value in start.items():
        if key.startswith("pooler."):
            continue
        stored_key = "encoder.base_model.model." + key.replace("self.query.", "self.query.base_layer.").replace(
            "self.value.", "self.value.base_layer.")
        assert torch.equal(state[stored_key], value), key
    lora_b = [value for key, value in state.items() if ".lora_B." in key]
    assert len(lora_b) == 4 and all(value.abs().max() > 0 for value in lora_b)

    # the unmerged model, as trained, against the merged one that predicts and exports
    unmerged = LabelwiseForSequenceClassification(LabelwiseConfig.from_dict(dict(stored)))
    unmerged.encoder = add_adapters(unmerged.encoder, stored["lora"])
    unmerged.load_state_dict(state)
    unmerged.eval()
    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    assert not hasattr(predictor.net.config, "lora") and not any(".lora_" in k for k in predictor.net.state_dict())
    batch = predictor.tokenizer(["the day was sunny and great", "rude furious yelling"], padding=True,
                                return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        reference = unmerged(**inputs).logits
        torch.testing.assert_close(predictor.net(**inputs).logits, reference, atol=1e-5, rtol=1e-5)
        export_hf(predictor, tmp_path / "export")
        exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export", trust_remote_code=True)
        torch.testing.assert_close(exported.eval()(**inputs).logits, reference, atol=1e-5, rtol=1e-5)
    assert "lora" not in (tmp_path / "export" / "config.json").read_text()


def test_bad_lora_options_are_one_clear_message(tiny_encoder, monkeypatch):
    distil = tiny_encoder("distilbert")
    with pytest.raises(ConfigError, match=r"model.lora.target_modules: \['query'\] not in this distilbert encoder; "
                                          r"its linear layers are .*q_lin"):
        classifier(distil, labels=LABELS, pooling="cls", peft="lora", lora={"target_modules": ["query", "v_lin"]})
    with pytest.raises(ConfigError, match="model.lora.r is the adapters' rank"):
        classifier(distil, labels=LABELS, pooling="cls", peft="lora", lora={"r": 0})
    with pytest.raises(ConfigError, match="model.peft must be null or lora, got 'ia3'"):
        classifier(distil, labels=LABELS, pooling="cls", peft="ia3")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ConfigError, match=r'model.peft=lora needs the peft package: pip install -e "\.\[lora\]"'):
        classifier(distil, labels=LABELS, pooling="cls", peft="lora")
