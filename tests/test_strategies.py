"""Multi-device strategies: DDP on CPU with LoRA, checkpointing and LLRD together; what FSDP and DeepSpeed need,
refused clearly where they cannot run; DeepSpeed's checkpoint directories read by eval/predict/export."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from src.errors import ConfigError
from src.inference import Predictor
from src.labels import LabelSpace
from src.models.build import classifier
from src.models.layers import fsdp_wrap_layers
from src.tracking.checkpoint import CONSOLIDATED, read_checkpoint
from src.train import refuse_multirun_with_ddp, train
from tests.helpers import CONF, QUIET, compose_train, on_tiny, run_cli, runs_in, tiny_data_args, write_dataset

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)


@pytest.mark.slow
def test_ddp_on_cpu_trains_lora_with_checkpointing_and_layer_decay(tmp_path, tiny_bert):
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    run_cli(tmp_path, "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", *args,
            "model.peft=lora", "model.gradient_checkpointing=true", "optim.layer_decay=0.8", "hydra.run.dir=ddp")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["val"]["macro_f1"] <= 1.0
    assert len(runs_in(tmp_path / "outputs" / "mlflow.db")) == 1
    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])  # adapters merged
    assert not any(".lora_" in key for key in predictor.net.state_dict())


# ---------------------------------------------------------------- FSDP


def test_fsdp_composes_with_one_unit_per_encoder_layer(tmp_path, tiny_encoder):
    from lightning.pytorch.strategies import FSDPStrategy

    cfg = compose_train(tmp_path, ["strategy=fsdp"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and cfg.trainer.devices == 2
    assert strategy.kwargs["auto_wrap_policy"] is fsdp_wrap_layers and strategy.kwargs["use_orig_params"]
    for model_type in ("bert", "distilbert", "roberta", "deberta-v2"):
        net = classifier(tiny_encoder(model_type), labels=LABELS, pooling="cls")
        wrapped = [name for name, module in net.named_modules() if fsdp_wrap_layers(module, False, 0)]
        assert len(wrapped) == 2, (model_type, wrapped)  # the two layers, nothing else


def test_fsdp_and_deepspeed_on_a_cpu_are_one_clear_message(tmp_path, tiny_bert):
    """Lightning's FSDP and DeepSpeed strategies run on CUDA only: refused before any work (FSDP on CPU cannot be
    tested here; DDP with gloo is the CPU path)."""
    paths = write_dataset(tmp_path, multilabel=True)
    fsdp = compose_train(tmp_path, ["strategy=fsdp", "trainer.accelerator=cpu", *on_tiny(tiny_bert, paths), *QUIET])
    with pytest.raises(ConfigError, match="strategy=fsdp runs on GPUs only and trainer.accelerator=cpu.*strategy=ddp"):
        train(fsdp)
    deepspeed = compose_train(tmp_path, ["strategy=deepspeed", "trainer.accelerator=cpu", *on_tiny(tiny_bert, paths),
                                         *QUIET])
    expected = "strategy=deepspeed runs on GPUs only" if HAS_DEEPSPEED else \
        r'strategy=deepspeed needs the deepspeed package: pip install -e "\.\[deepspeed\]"'
    with pytest.raises(ConfigError, match=expected):
        train(deepspeed)
    assert not (tmp_path / "run").exists()


def test_deepspeed_options_compose(tmp_path):
    options = ["stage=3", "offload_optimizer=true", "offload_parameters=true"]
    cfg = compose_train(tmp_path, ["strategy=deepspeed", *(f"trainer.strategy.{option}" for option in options)])
    strategy = cfg.trainer.strategy
    assert (strategy.stage, strategy.offload_optimizer, strategy.offload_parameters) == (3, True, True)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.gradient_clip_val == 1.0


# ---------------------------------------------------------------- DeepSpeed checkpoint directories


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert) -> Path:
    root = tmp_path_factory.mktemp("trained")
    paths = write_dataset(root, multilabel=True)
    cfg = compose_train(root, [*on_tiny(tiny_bert, paths), *QUIET, "logger=none", "report=false", "test=false",
                               "callbacks.progress_bar=null", "trainer.max_epochs=1"])
    return Path(train(cfg)["best_checkpoint"])


def zero_directory(root: Path, checkpoint: Path) -> Path:
    """A checkpoint directory laid out as Lightning's DeepSpeed strategy saves one (tag ``checkpoint``): DeepSpeed's
    model-states file with Lightning's client state, and its optimizer shard."""
    directory = root / "best-epoch00.ckpt"
    (directory / "checkpoint").mkdir(parents=True)
    client = {k: v for k, v in torch.load(checkpoint, weights_only=True).items() if k != "state_dict"}
    torch.save({"module": None, **client}, directory / "checkpoint" / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 2}}, directory / "checkpoint" /
               "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (directory / "latest").write_text("checkpoint")
    return directory


@pytest.mark.skipif(HAS_DEEPSPEED, reason="deepspeed is installed: the directory is converted, not refused")
def test_a_zero_directory_without_deepspeed_names_the_one_command_to_run(tmp_path, trained):
    directory = zero_directory(tmp_path, trained)
    for read in (read_checkpoint, Predictor.load):
        with pytest.raises(ConfigError, match=r"is a DeepSpeed checkpoint directory; .* run once: python -c "
                                              r"\"from lightning.pytorch.utilities.deepspeed import "
                                              r"convert_zero_checkpoint_to_fp32_state_dict as c; "
                                              rf"c\('{directory}', '{directory / CONSOLIDATED}'\)\""):
            read(directory)


def test_a_zero_directory_is_read_through_its_consolidated_file(tmp_path, trained):
    """Once converted (here: the file the conversion writes, put in place), eval/predict/export take the directory
    itself; a shard newer than the consolidated file means converting again."""
    directory = zero_directory(tmp_path, trained)
    shutil.copy(trained, directory / CONSOLIDATED)
    texts = ["the day was sunny and great", "rude furious yelling"]
    expected = Predictor.from_checkpoint(trained).predict(texts)
    assert Predictor.load(directory).predict(texts) == expected
    assert read_checkpoint(directory)["labelwise"]["net_config"] == read_checkpoint(trained)["labelwise"]["net_config"]
    if HAS_DEEPSPEED:
        return
    shard = directory / "checkpoint" / "mp_rank_00_model_states.pt"
    later = (directory / CONSOLIDATED).stat().st_mtime_ns + 10**9
    os.utime(shard, ns=(later, later))
    with pytest.raises(ConfigError, match="is a DeepSpeed checkpoint directory"):
        read_checkpoint(directory)


def test_thresholds_of_a_zero_directory_are_written_as_one_checkpoint_file(tmp_path, trained):
    from src.thresholds import choose_thresholds

    directory = zero_directory(tmp_path, trained)
    shutil.copy(trained, directory / CONSOLIDATED)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="thresholds", overrides=[f"ckpt_path={directory}", "policy=top_k", "value=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "op")
    choose_thresholds(cfg)
    written = tmp_path / "best-epoch00.top_k_1.ckpt"
    assert written.is_file()
    assert read_checkpoint(written)["labelwise"]["net_config"]["thresholds"]["top_k"] == 1
    assert Predictor.load(written).thresholds.top_k == 1


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available() or not HAS_DEEPSPEED, reason="needs a CUDA GPU and deepspeed")
def test_deepspeed_zero2_end_to_end_on_a_gpu(tmp_path, tiny_bert):
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    run_cli(tmp_path, "strategy=deepspeed", "trainer.devices=1", "trainer.max_epochs=1", *args,
            "model.gradient_checkpointing=true", "hydra.run.dir=ds")
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    best = Path(summary["best_checkpoint"])
    assert best.is_dir()
    run_cli(tmp_path, f"ckpt_path={best}", "format=hf", f"output_dir={tmp_path / 'hf'}", module="src.export")
    assert (best / CONSOLIDATED).is_file()


# ---------------------------------------------------------------- sweeps


@pytest.fixture
def sweep_job():
    """Makes a composed config the current Hydra job's, in a multirun; restores no job afterwards."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    def job(overrides: list[str]):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield job
    HydraConfig.instance().cfg = None


def test_a_sweep_of_multi_process_runs_only_when_slurm_starts_the_ranks(sweep_job):
    slurm = ["strategy=ddp", "hydra/launcher=submitit_slurm"]
    refuse_multirun_with_ddp(sweep_job([*slurm, "hydra.launcher.tasks_per_node=2"]))  # 2 devices, 2 tasks: allowed
    for overrides in (["strategy=ddp"], [*slurm, "hydra.launcher.tasks_per_node=1"]):
        with pytest.raises(ConfigError, match="--multirun cannot be combined with a multi-process strategy.*"
                                              "tasks_per_node = trainer.devices"):
            refuse_multirun_with_ddp(sweep_job(overrides))
