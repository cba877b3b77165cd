"""Every option of every config group composes, resolves and (where it can offline) instantiates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from lightning.pytorch import callbacks as cb
from lightning.pytorch import loggers as lg
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.labels import LabelSpace
from src.losses.base import build_loss
from src.losses.bce import BinaryCrossEntropy
from src.losses.ce import CrossEntropy
from tests.helpers import CONF, compose_train

GROUPS = ("data", "sampler", "augment", "model", "loss", "optim", "scheduler", "trainer", "strategy", "callbacks",
          "logger", "debug", "experiment")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None

# which task each loss option is meant for (a new loss option must be added here)
LOSS_TASK = {
    "src.losses.bce.BinaryCrossEntropy": "multilabel",
    "src.losses.ce.CrossEntropy": "multiclass",
    "src.losses.asymmetric.AsymmetricLoss": "multilabel",
    "src.losses.focal.FocalLoss": "multilabel",
    "src.losses.combined.CombinedLoss": "multilabel",
    "src.losses.class_balanced.ClassBalancedLoss": "multilabel",
    "src.losses.auto.by_task": "multiclass",  # the default; its multi-label side is every other option's default
}
HUB_IDS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "bert_base": "bert-base-uncased",
    "distilbert": "distilbert/distilbert-base-uncased",
    "roberta_base": "FacebookAI/roberta-base",
    "roberta_large": "FacebookAI/roberta-large",
    "deberta_v3_base": "microsoft/deberta-v3-base",
    "deberta_v3_large": "microsoft/deberta-v3-large",
}


def overrides_for(group: str, option: str) -> list[str]:
    extra = ["data.source.train=x.csv"] if group == "data" and option in ("csv", "jsonl", "documents") else []
    extra += ["data.source.name=go_emotions"] if (group, option) == ("data", "hf") else []
    return [f"{group}={option}", *extra]


def compose(tmp_path: Path, group: str, option: str, *more: str) -> DictConfig:
    return compose_train(tmp_path, [*overrides_for(group, option), *more])


def test_every_group_has_options():
    for group in GROUPS:
        assert [option for g, option in OPTIONS if g == group], f"conf/{group} has no options"
    assert ("loss", "bce") in OPTIONS and ("strategy", "ddp") in OPTIONS


# ---------------------------------------------------------------- composition and interpolation


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(tmp_path, group, option):
    cfg = compose(tmp_path, group, option)

    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)

    assert resolved["data"]["tokenizer"] == resolved["model"]["name_or_path"]
    assert resolved["data"]["seed"] == resolved["seed"]
    assert resolved["trainer"]["default_root_dir"] == str(tmp_path / "run")
    assert resolved["paths"]["mlflow_uri"] == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    callbacks = (resolved.get("callbacks") or {}).values()
    monitored = [entry for entry in callbacks if entry and "monitor" in entry]
    if group == "callbacks" and option == "default":
        assert len(monitored) == 2
    for entry in monitored:
        assert entry["monitor"] == resolved["optimized_metric"] == "val/macro_f1"
    for entry in (resolved.get("logger") or {}).values():
        if entry and entry["_target_"].endswith("MLFlowLogger"):
            assert entry["experiment_name"] == resolved["task_name"]
            assert entry["tracking_uri"] == resolved["paths"]["mlflow_uri"]
            assert entry["run_name"] == "defaults"  # the lw.run_name resolver outside a Hydra app


def test_interpolations_follow_their_sources(tmp_path):
    cfg = compose_train(tmp_path, ["model.name_or_path=/models/mine", "optimized_metric=val/micro_f1",
                                   "task_name=exp7"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["data"]["tokenizer"] == "/models/mine"
    assert resolved["callbacks"]["model_checkpoint"]["monitor"] == "val/micro_f1"
    assert resolved["callbacks"]["early_stopping"]["monitor"] == "val/micro_f1"
    assert resolved["logger"]["mlflow"]["experiment_name"] == "exp7"


def test_csv_data_requires_train(tmp_path):
    cfg = compose_train(tmp_path, ["data=csv"])
    with pytest.raises(Exception, match="train"):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_unknown_option_lists_valid_ones(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_train(tmp_path, ["loss=nope"])
    message = str(info.value)
    assert "loss/nope" in message
    for option in ("bce", "ce"):
        assert f"\t{option}\n" in message


@pytest.mark.parametrize("option", sorted(HUB_IDS))
def test_model_configs_name_the_expected_checkpoint(tmp_path, option):
    assert ("model", option) in OPTIONS
    cfg = compose_train(tmp_path, [f"model={option}"])
    assert cfg.model.name_or_path == HUB_IDS[option]
    assert cfg.data.tokenizer == HUB_IDS[option]
    assert cfg.model._target_ == "src.models.build.classifier"
    assert cfg.model.pooling == ("mean" if option == "minilm" else "cls")


def test_all_model_options_are_known():
    presets = {"frozen_encoder", "hierarchical"}
    assert {option for group, option in OPTIONS if group == "model"} == set(HUB_IDS) | presets
    assert {option for group, option in OPTIONS if group == "sampler"} == {"none", "oversample", "undersample", "smote"}


def test_linear_probe_preset_pairs_a_frozen_model_with_embeddings_on_any_data(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=linear_probe", "data=goemotions", "trainer=gpu",
                                   "model.name_or_path=/m"])
    assert cfg.model._target_ == "src.models.build.classifier" and cfg.model.freeze_encoder is True
    assert cfg.data._target_ == "src.data.datamodule.TextDataModule" and cfg.data.features == "embeddings"
    assert cfg.data.source._target_ == "src.data.sources.goemotions.GoEmotionsSource"
    assert cfg.data.tokenizer == "/m"
    assert (cfg.optim.lr, cfg.optim.head_lr_multiplier, cfg.trainer.max_epochs) == (1e-2, 1.0, 20)
    frozen_only = compose_train(tmp_path, ["model=frozen_encoder"])
    assert frozen_only.model.freeze_encoder is True and frozen_only.data.features == "tokens"
    assert frozen_only.optim.lr == compose_train(tmp_path, []).optim.lr  # a model option changes the model only


def test_config_groups_stay_in_their_own_node():
    """No option writes outside its group's node, except presets (experiment, debug, hparams_search) and the
    sampler/augment options, which fill data.sampler / data.augment by their package line."""
    for path in sorted(CONF.glob("*/*.yaml")):
        group, text = path.parent.name, path.read_text()
        if group in ("experiment", "debug", "hparams_search"):
            continue
        assert "@package _global_" not in text, path
        if group in ("sampler", "augment"):
            assert text.startswith(f"# @package data{'' if path.stem == 'none' else '.' + group}\n"), path
        if group == "data":
            assert "${sampler}" not in text and "${augment}" not in text, path


def test_sampler_and_augment_options_land_inside_data(tmp_path):
    cfg = compose_train(tmp_path, ["sampler=oversample", "augment=eda", "data=csv", "data.source.train=x.csv"])
    assert cfg.data.sampler._target_ == "src.data.sampling.RandomResampler"
    assert cfg.data.augment._target_ == "src.data.augment.EasyDataAugmentation"
    assert "sampler" not in cfg and "augment" not in cfg
    plain = compose_train(tmp_path, [])
    assert plain.data.sampler is None and plain.data.augment is None


# ---------------------------------------------------------------- instantiation (offline)


def instantiate_offline(cfg: DictConfig, loggers: bool = False) -> dict:
    """Everything of a composed config that can be built without data, network or a GPU. Loggers only when
    asked: the MLflow logger creates its SQLite store on construction (seconds per new store)."""
    built = {}
    factory = instantiate(cfg.loss)
    task = LOSS_TASK[cfg.loss._target_]
    built["loss"] = build_loss(factory, LabelSpace(task, ("a", "b", "c"), (5, 1, 0), 8))

    encoder, head = nn.Linear(4, 4), nn.Linear(4, 3)
    built["optimizer"] = instantiate(cfg.optim)(encoder=encoder, head=head)
    built["scheduler"] = instantiate(cfg.scheduler)(built["optimizer"], total_steps=50)

    built["callbacks"] = {name: instantiate(entry) for name, entry in (cfg.callbacks or {}).items() if entry}
    if loggers:
        built["loggers"] = {name: instantiate(entry) for name, entry in (cfg.logger or {}).items() if entry}

    strategy = cfg.trainer.get("strategy")
    deepspeed = isinstance(strategy, DictConfig) and strategy._target_.endswith("DeepSpeedStrategy")
    if deepspeed and not HAS_DEEPSPEED:
        pytest.skip("DeepSpeedStrategy needs the optional deepspeed package (pip install -e '.[deepspeed]')")
    if isinstance(strategy, DictConfig) and strategy._target_.endswith("FSDPStrategy"):
        pytest.skip("Lightning's FSDPStrategy refuses accelerator=cpu (tests/test_strategies.py composes it)")
    trainer_cfg = OmegaConf.merge(cfg.trainer, {"accelerator": "cpu"})
    built["trainer"] = instantiate(trainer_cfg, logger=False, callbacks=list(built["callbacks"].values()))
    return built


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_instantiates(tmp_path, group, option):
    cfg = compose(tmp_path, group, option)
    built = instantiate_offline(cfg, loggers=group == "logger")

    trainer = built["trainer"]
    assert isinstance(trainer, L.Trainer)
    assert trainer.max_epochs == (1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs)
    if group == "logger":
        assert set(built["loggers"]) == {name for name, entry in (cfg.logger or {}).items() if entry}
    assert trainer.default_root_dir == str(tmp_path / "run")

    logits = torch.randn(4, 3)
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]).float()
    if isinstance(built["loss"], CrossEntropy):
        targets = torch.eye(3)[[0, 1, 2, 0]]
    assert torch.isfinite(built["loss"](logits, targets))


def test_loss_options(tmp_path):
    bce = build_loss(instantiate(compose_train(tmp_path, ["loss=bce", "loss.pos_weight=auto"]).loss),
                     LabelSpace("multilabel", ("a", "b", "c"), (10, 50, 0), 100))
    assert isinstance(bce, BinaryCrossEntropy)
    assert bce.pos_weight.tolist() == pytest.approx([9.0, 1.0, 30.0])  # max_pos_weight 30 from the yaml

    ce = build_loss(instantiate(compose_train(tmp_path, ["loss=ce", "loss.class_weights=auto",
                                                         "loss.label_smoothing=0.1"]).loss),
                    LabelSpace("multiclass", ("a", "b", "c"), (6, 3, 0), 9))
    assert isinstance(ce, CrossEntropy)
    assert ce.class_weights.tolist() == pytest.approx([0.5, 1.0, 3.0])
    assert ce.label_smoothing == 0.1

    listed = build_loss(instantiate(compose_train(tmp_path, ["loss=ce", "loss.class_weights=[1,2,3]"]).loss),
                        LabelSpace("multiclass", ("a", "b", "c"), (6, 3, 0), 9))
    assert listed.class_weights.tolist() == [1.0, 2.0, 3.0]


def test_optim_and_scheduler_options(tmp_path):
    cfg = compose_train(tmp_path, ["optim=adamw", "scheduler=linear"])
    encoder, head = nn.Linear(4, 4), nn.Linear(4, 3)
    optimizer = instantiate(cfg.optim)(encoder=encoder, head=head)
    lrs = sorted({group["lr"] for group in optimizer.param_groups})
    assert lrs == pytest.approx([1e-4, 1e-3])  # lr and lr * head_lr_multiplier (10)
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0, 0.01}
    for name, final in (("linear", 0.0), ("cosine", 0.0)):
        opt = instantiate(cfg.optim)(encoder=nn.Linear(2, 2), head=nn.Linear(2, 1))
        schedule = instantiate(compose_train(tmp_path, [f"scheduler={name}"]).scheduler)(opt, total_steps=20)
        assert schedule["interval"] == "step"
        assert [group["lr"] for group in opt.param_groups] == [0.0] * len(opt.param_groups)  # warm-up start
        for _ in range(2):
            opt.step()
            schedule["scheduler"].step()
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # 2 warm-up steps (0.1 * 20): at the peak
        for _ in range(18):
            opt.step()
            schedule["scheduler"].step()
        assert opt.param_groups[0]["lr"] == pytest.approx(final, abs=1e-12)


def test_callbacks_options(tmp_path):
    built = instantiate_offline(compose_train(tmp_path, ["callbacks=default"]))["callbacks"]
    assert isinstance(built["model_checkpoint"], cb.ModelCheckpoint)
    assert built["model_checkpoint"].dirpath == str(tmp_path / "run" / "checkpoints")
    assert built["model_checkpoint"].monitor == "val/macro_f1"
    assert isinstance(built["early_stopping"], cb.EarlyStopping)
    assert built["early_stopping"].monitor == "val/macro_f1"
    assert isinstance(built["lr_monitor"], cb.LearningRateMonitor)
    assert isinstance(built["progress_bar"], cb.RichProgressBar)

    assert instantiate_offline(compose_train(tmp_path, ["callbacks=none"]))["callbacks"] == {}
    overfit = instantiate_offline(compose_train(tmp_path, ["debug=overfit"]))["callbacks"]
    assert "early_stopping" not in overfit and "model_checkpoint" in overfit
    # Lightning refuses a progress-bar callback together with enable_progress_bar=false
    fdr = instantiate_offline(compose_train(tmp_path, ["debug=fdr"]))
    assert "progress_bar" not in fdr["callbacks"] and not fdr["trainer"].progress_bar_callback


def test_logger_options(tmp_path):
    many = instantiate_offline(compose_train(tmp_path, ["logger=many"]), loggers=True)["loggers"]
    assert set(many) == {"mlflow", "tensorboard", "csv"}
    assert isinstance(many["csv"], lg.CSVLogger)
    assert Path(many["csv"].save_dir) == tmp_path / "run"
    assert isinstance(many["tensorboard"], lg.TensorBoardLogger)
    assert Path(many["tensorboard"].save_dir) == tmp_path / "run" / "tensorboard"
    mlflow = many["mlflow"]
    assert isinstance(mlflow, lg.MLFlowLogger)
    mlflow.experiment  # noqa: B018  (creates the store and the run)
    assert mlflow.run_id
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    assert mlflow.experiment.get_experiment(mlflow.experiment_id).name == "labelwise"

    assert instantiate_offline(compose_train(tmp_path, ["logger=none"]), loggers=True)["loggers"] == {}
    single = instantiate_offline(compose_train(tmp_path, ["logger=csv"]), loggers=True)["loggers"]
    assert list(single) == ["csv"]


def test_strategy_options(tmp_path):
    auto = instantiate_offline(compose_train(tmp_path, ["strategy=auto"]))["trainer"]
    assert not isinstance(auto.strategy, DDPStrategy)

    cfg = compose_train(tmp_path, ["strategy=ddp"])
    assert isinstance(instantiate(cfg.trainer.strategy), DDPStrategy)
    trainer = instantiate_offline(cfg)["trainer"]
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2


def test_deepspeed_strategy(tmp_path):
    cfg = compose_train(tmp_path, ["strategy=deepspeed"])
    assert cfg.trainer.strategy._target_ == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert cfg.trainer.precision == "bf16-mixed"
    if not HAS_DEEPSPEED:
        pytest.skip("the deepspeed package is not installed (optional extra: pip install -e '.[deepspeed]')")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    assert isinstance(instantiate(cfg.trainer.strategy), DeepSpeedStrategy)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer=cpu"], {"max_epochs": 6}),
        (["trainer=gpu"], {"max_epochs": 6}),
        (["debug=fdr"], {"fast_dev_run": True}),
        (["debug=limit"], {"max_epochs": 2, "limit_train_batches": 5, "limit_val_batches": 2}),
        (["debug=overfit"], {"max_epochs": 30, "overfit_batches": 2}),
        (["experiment=goemotions_baseline"], {"max_epochs": 1}),
    ],
    ids=["cpu", "gpu", "fdr", "limit", "overfit", "goemotions"],
)
def test_trainer_and_debug_options(tmp_path, monkeypatch, overrides, expected):
    monkeypatch.setattr("src.runtime.torch.cuda.is_available", lambda: False)  # the config, not this machine
    monkeypatch.setattr("src.runtime.cpu_has_native_bf16", lambda: True)
    cfg = compose_train(tmp_path, overrides)
    trainer = instantiate_offline(cfg)["trainer"]
    assert trainer.gradient_clip_val == 1.0
    for key, value in expected.items():
        assert getattr(trainer, key) == value, key
    if overrides == ["trainer=gpu"]:
        assert trainer.precision == "bf16-mixed"
    if overrides == ["experiment=goemotions_baseline"]:
        assert cfg.task_name == "goemotions"
        assert cfg.data.source._target_ == "src.data.sources.goemotions.GoEmotionsSource"


@pytest.mark.parametrize(("preset", "taxonomy"), [("goemotions_minilm", "original"), ("goemotions_ekman", "ekman"),
                                                   ("goemotions_sentiment", "sentiment")])
def test_goemotions_presets_share_one_recipe_over_taxonomies(tmp_path, preset, taxonomy):
    cfg = compose_train(tmp_path, [f"experiment={preset}", "data.source.data_dir=/nowhere"])
    assert cfg.data.source.taxonomy == taxonomy and cfg.task_name.startswith("goemotions")
    assert cfg.loss._target_ == "src.losses.asymmetric.AsymmetricLoss" and cfg.loss.gamma_neg == 4
    assert cfg.trainer.max_epochs == 2 and cfg.model.pooling == "mean"


def test_the_long_goemotions_preset_is_the_recipe_trained_longer_and_averaged(tmp_path):
    short, long = (compose_train(tmp_path, [f"experiment={preset}", "data.source.data_dir=/nowhere"])
                   for preset in ("goemotions_minilm", "goemotions_minilm_long"))
    assert (long.trainer.max_epochs, long.scheduler.name, long.callbacks.ema.decay) == (3, "cosine", 0.998)
    assert (short.trainer.max_epochs, short.scheduler.name, short.callbacks.ema) == (2, "linear", None)
    assert long.loss == short.loss and long.model == short.model and long.optim == short.optim
