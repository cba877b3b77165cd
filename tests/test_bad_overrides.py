"""Bad values stop at the boundary (src/schema.py): one ``error:`` line naming the key, its value and what is allowed,
exit code 1, no traceback, and nothing created (no MLflow run, no checkpoint). Most cases run in-process through the
entry point's own Hydra app (what the CLI runs); a few through a real ``python -m src.train``; every shipped option
and preset validates."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.errors import ConfigError
from src.schema import composition_message, planned_jobs, problems, validate
from tests.helpers import CONF, ROOT, compose_train, run_cli, runs_in
from tests.test_configs import OPTIONS, overrides_for

# (overrides, the start of the message: the key and the value it names, what is allowed)
TRAIN_CASES = [
    (["optim.lr=-1"], "optim.lr=-1: must be a number > 0"),
    (["optim.lr=abc"], "optim.lr=abc: must be a number > 0"),
    (["optim.lr=0", "experiment=linear_probe"], "optim.lr=0: must be a number > 0"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9]: must be a list of 2 numbers in [0, 1)"),
    (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
    (["data.eval_batch_size=-1"], "data.eval_batch_size=-1: must be an integer >= 1"),
    (["data.max_length=0"], "data.max_length=0: must be an integer >= 3"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5: must be null or a number in (0, 1)"),
    (["seed=abc"], "seed=abc: must be an integer in [0, 4294967295]"),
    (["seed=-3"], "seed=-3: must be an integer"),
    (["data=csv"], "data.source.train is required: pass data.source.train=PATH/TO/train.csv"),
    (["data=jsonl", "data.source.train=x.jsonl", "data.source.task=multi"],
     "data.source.task=multi: must be one of auto, multilabel, multiclass"),
    (["data=hf"], "data.source.name is required: pass data.source.name=NAME (a hub id"),
    (["data=hf", "data.source.name=x", "data.source.splits.train=null"],
     "data.source.splits={'train': None, 'val': 'auto', 'test': 'auto'}: must be a mapping of train (a split name)"),
    (["data=hf", "data.source.name=x", "+data.source.splits.dev=dev"], "data.source.splits={'train': 'train', 'val"),
    (["data=hf", "data.source.name=x", "data.source.trust_remote_code=maybe"],
     "data.source.trust_remote_code=maybe: must be true or false"),
    (["data=hf", "data.source.name=x", "data.source.config=''"], "data.source.config='': must be null or a non-empty"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be an integer >= 1 (0 trains nothing)"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1: training would never stop"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: must be an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: must be null or a number >= 0"),
    (["trainer.precision=8"], "trainer.precision=8: must be null or one of 32-true"),
    (["+trainer.limit_train_batches=0"], "trainer.limit_train_batches=0: must be null or an integer >= 1"),
    (["+trainer.bogus=1"], "trainer.bogus is not an option of Trainer"),
    (["optim.layer_decay=1.5"], "optim.layer_decay=1.5: must be a number in (0, 1]"),
    (["model.freeze_layers=-1"], "model.freeze_layers=-1: must be null or an integer >= 0"),
    (["model.peft=ia3"], "model.peft=ia3: must be null or one of lora"),
    (["model.lora.r=0"], "model.lora.r=0: must be an integer >= 1"),
    (["strategy=fsdp", "trainer.strategy.state_dict_type=shards"], "trainer.strategy.state_dict_type=shards: must be"),
    (["callbacks.early_stopping.patience=0"], "callbacks.early_stopping.patience=0: must be an integer >= 1"),
    (["callbacks.model_checkpoint.mode=best"], "callbacks.model_checkpoint.mode=best: must be one of min, max"),
    (["callbacks.training_health.max_bad_steps=-1"],
     "callbacks.training_health.max_bad_steps=-1: must be an integer >= 0"),
    (["thresholds.prior_strength=0"], "thresholds.prior_strength=0: must be a number > 0"),
    (["thresholds.prior_strength=-5"], "thresholds.prior_strength=-5: must be a number > 0"),
    (["thresholds.shrinkage=2"], "thresholds.shrinkage=2: must be one of auto or a number in [0, 1]"),
    (["thresholds.at_least_one=maybe"], "thresholds.at_least_one=maybe: must be one of auto, true, false"),
    (["cv.folds=1"], "cv.folds=1: must be null or an integer >= 2"),
    (["cv.folds=3", "cv.fold=3"], "cv.fold=3: must be an integer in [0, 2]"),
    (["cv.fold=1"], "cv.fold=1: needs cv.folds=K"),
    (["distill.alpha=1.5"], "distill.alpha=1.5: must be a number in [0, 1]"),
    (["distill.temperature=0"], "distill.temperature=0: must be a number > 0"),
    (["loss=asymmetric", "loss.gamma_neg=abc"], "loss.gamma_neg=abc: must be a number >= 0"),
    (["loss=focal", "loss.alpha=2"], "loss.alpha=2: must be null or a number in [0, 1]"),
    (["loss=combined", "loss.ratio=1.5"], "loss.ratio=1.5: must be a number in [0, 1]"),
    (["loss=combined", "loss.second.clip=1"], "loss.second.clip=1: must be null or a number in [0, 1)"),
    (["loss=bce", "loss.pos_weight=sometimes"], "loss.pos_weight=sometimes: must be null or one of auto or a list"),
    (["loss=ce", "loss.label_smoothing=1"], "loss.label_smoothing=1: must be a number in [0, 1)"),
    (["loss.multilabel.label_smoothing=-0.1"], "loss.multilabel.label_smoothing=-0.1: must be a number in [0, 1)"),
    (["loss=bce", "+loss.gamma=2"], "loss.gamma is not an option of BinaryCrossEntropy"),
    (["sampler=oversample", "data.sampler.ratio=0"], "data.sampler.ratio=0: must be a number in (0, 1]"),
    (["augment=eda", "data.augment.copies=0"], "data.augment.copies=0: must be an integer >= 1"),
    (["augment=eda", "data.augment.operations=[swap,shout]"], "data.augment.operations=[swap,shout]: must be"),
    (["model.pooling=max"], "model.pooling=max: must be one of mean, cls, cls_mean, pooler"),
    (["model=hierarchical", "model.aggregate=sum"], "model.aggregate=sum: must be one of mean, max, attention"),
    (["model=hierarchical", "model.max_chunks=0"], "model.max_chunks=0: must be null or an integer >= 1"),
    (["model=hierarchical", "data.max_length=32", "model.chunk_stride=16"],
     "model.chunk_stride=16: windows of data.max_length=32 tokens can repeat at most 15 tokens of the one before"),
    (["model.dropout=1"], "model.dropout=1: must be a number in [0, 1)"),
    (["model.hidden=-8"], "model.hidden=-8: must be an integer >= 0"),
    (["scheduler.warmup_ratio=1.5"], "scheduler.warmup_ratio=1.5: must be a number in [0, 1)"),
    (["scheduler.name=exponential"], "scheduler.name=exponential: must be one of linear, cosine"),
    (["test=maybe"], "test=maybe: must be true or false"),
    (["callbacks.model_checkpoint.save_weights_only=maybe"],
     "callbacks.model_checkpoint.save_weights_only=maybe: must be true, false or best"),
    (["optimized_metric=macro_f1"], "optimized_metric=macro_f1: must be a metric logged while training"),
    (["export.mlflow=yes"], "export.mlflow=yes: must be true or false"),
    (["logger.mlflow.log_model=sometimes"], "logger.mlflow.log_model=sometimes: must be true or false or one of all"),
    (["loss._target_=nowhere.Loss"], "loss._target_=nowhere.Loss: cannot be imported"),
    (["loss=bce", "loss._target_=src.losses.focal.FocalLoss"], "loss.max_pos_weight is not an option of FocalLoss"),
]
# Hydra's own refusals (a key or option that does not exist, an override that does not parse): one line too
COMPOSITION_CASES = [
    (["data=csv", "data.train=x.csv"], "data.train is not a key of this config (did you mean data.source.train?)"),
    (["trainer.max_epoch=3"], "trainer.max_epoch is not a key of this config (did you mean trainer.max_epochs"),
    (["loss=foo"], "loss=foo is not an option of loss; it is one of: asymmetric, auto, bce, ce, class_balanced"),
    (["optim.lr=[1,"], "no viable alternative at input '[1,'"),
]
APP_CASES = [  # the other entry points' own keys
    ("eval", ["batch_size=0"], "batch_size=0: must be an integer >= 1"),
    ("eval", ["split=dev"], "split=dev: must be one of train, val, test"),
    ("eval", ["data=csv", "ckpt_path=x.ckpt"], "data.source.train is required"),
    ("predict", ["chunk_size=0"], "chunk_size=0: must be an integer >= 1"),
    ("predict", ["device=gpu7"], "device=gpu7: must be auto, cpu, cuda, cuda:<index> or mps"),
    ("export", ["format=tflite"], "format=tflite: must be one of hf, onnx, mlflow"),
    ("export", ["opset=11"], "opset=11: must be an integer >= 17"),
    ("thresholds", ["policy=best"], "policy=best: must be one of max_f1, precision_at_least"),
    ("thresholds", ["policy=top_k", "value=0.5"], "value=0.5: policy=top_k takes an integer >= 1"),
    ("thresholds", ["policy=precision_at_least", "value=2"], "value=2: policy=precision_at_least takes a number"),
    ("demo", ["port=70000"], "port=70000: must be null or an integer in [1, 65535]"),
    ("compare", ["bootstrap.resamples=0"], "bootstrap.resamples=0: must be an integer >= 1"),
    ("compare", ["higher_is_better=yes"], "higher_is_better=yes: must be true or false"),
]


def run_app(module: str, args: list[str], tmp_path: Path, monkeypatch) -> str:
    """The entry point's Hydra app in-process, as ``python -m src.<module> ARGS`` runs it from ``tmp_path``; returns
    the message it exits with (and fails if it does not exit)."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module, *args])
    GlobalHydra.instance().clear()
    # Hydra's `job_logging: disabled` (eval, predict, export ...) disables every logger that exists; in-process that
    # would silence the loggers later tests of this worker read with caplog, so their state is put back.
    def loggers() -> dict[str, logging.Logger]:
        return {name: logger for name, logger in logging.root.manager.loggerDict.items()
                if isinstance(logger, logging.Logger)}

    disabled, root_level = {name: logger.disabled for name, logger in loggers().items()}, logging.root.level
    try:
        with pytest.raises(SystemExit) as stopped:
            importlib.import_module(f"src.{module}").main()
    finally:
        for name, logger in loggers().items():
            logger.disabled = disabled.get(name, False)
        logging.root.setLevel(root_level)
    return str(stopped.value.code)


def assert_one_error_line(message: str, expected: str) -> None:
    lines = message.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), message
    assert expected in lines[0], message
    assert "Traceback" not in message


def assert_nothing_created(tmp_path: Path) -> None:
    store = tmp_path / "mlflow" / "mlflow.db"
    assert not store.exists() or not runs_in(store)
    assert not list(tmp_path.glob("**/*.ckpt")) and not list(tmp_path.glob("**/summary.json"))


@pytest.mark.parametrize(("overrides", "expected"), TRAIN_CASES + COMPOSITION_CASES,
                         ids=[" ".join(o) for o, _ in TRAIN_CASES + COMPOSITION_CASES])
def test_train_refuses_bad_override_with_one_line(tmp_path, monkeypatch, overrides, expected):
    message = run_app("train", [*overrides, f"paths.mlflow_dir={tmp_path}/mlflow"], tmp_path, monkeypatch)

    assert_one_error_line(message, expected)
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize(("app", "overrides", "expected"), APP_CASES,
                         ids=[f"{a} {' '.join(o)}" for a, o, _ in APP_CASES])
def test_entry_points_refuse_bad_options_with_one_line(tmp_path, monkeypatch, app, overrides, expected):
    assert_one_error_line(run_app(app, overrides, tmp_path, monkeypatch), expected)
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_problems_are_listed_together(tmp_path):
    """One run of the check names every bad key, so a user fixes them all at once."""
    cfg = compose_train(tmp_path, ["optim.lr=-1", "data.batch_size=0", "seed=abc"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert [p.split(":")[0] for p in str(error.value).split("; ")] == ["seed=abc", "data.batch_size=0", "optim.lr=-1"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_shipped_option_and_preset_validates(tmp_path, group, option):
    assert problems(compose_train(tmp_path, overrides_for(group, option))) == []


@pytest.mark.parametrize("overrides", [
    ["+trainer.profiler=simple"],  # a Trainer argument the configs do not set: a +key addition stays possible
    ["loss=combined", "loss.first.pos_weight=auto", "loss.second.gamma_neg=2"],
    ["loss=class_balanced", "loss.base.max_pos_weight=10"],
    ["cv.folds=5", "cv.fold=4", "callbacks.training_health.max_bad_steps=0", "thresholds=null"],
    ["thresholds.shrinkage=0.5", "thresholds.at_least_one=true", "export.registered_model_name=mine"],
    ["trainer.max_epochs=-1", "+trainer.max_steps=10", "+trainer.limit_train_batches=0.5",
     "callbacks.early_stopping=null"],
    ["loss._target_=tests.test_health.NaNAtThirdStep"],  # a _target_ swap (to a subclass taking **kwargs)
    ["scheduler=cosine", "data.val_fraction=null", "seed=0", "trainer.precision=32-true"],
], ids=lambda o: " ".join(o))
def test_valid_settings_and_additions_pass(tmp_path, overrides):
    assert problems(compose_train(tmp_path, overrides)) == []


@pytest.mark.parametrize("app", ["eval", "predict", "export", "thresholds", "demo", "compare"])
def test_entry_point_defaults_validate(app):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert problems(compose(app), app) == []
        if app in ("eval", "thresholds"):
            assert problems(compose(app, ["data=csv", "data.source.train=x.csv"]), app) == []


def test_a_typo_suggests_the_key_it_resembles():
    from hydra.errors import ConfigCompositionException

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(
            ConfigCompositionException) as error:
        compose("train", ["model.polling=cls"])
    assert composition_message(error.value).startswith(
        "model.polling is not a key of this config (did you mean model.pooling?); --cfg job prints them all")


def test_sweep_jobs_are_planned_as_the_sweeper_runs_them():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        grid = compose("train", return_hydra_config=True)  # the task overrides as a --multirun passes them:
        search = compose("train", ["hparams_search=optuna"], return_hydra_config=True)
    grid.hydra.overrides.task = ["optim.lr=1e-4,-1", "seed=1,2"]
    assert planned_jobs(grid) == ([["optim.lr=0.0001", "seed=1"], ["optim.lr=0.0001", "seed=2"],
                                   ["optim.lr=-1", "seed=1"], ["optim.lr=-1", "seed=2"]], True)
    grid.hydra.overrides.task = ["loss=bce", "optim.lr=1e-4,-1", "seed=range(0,20)"]  # 40 jobs: value by value
    jobs, exact = planned_jobs(grid)
    assert not exact and len(jobs) == 1 + 1 + 19
    assert jobs[0] == ["loss=bce", "optim.lr=0.0001", "seed=0"] and ["loss=bce", "optim.lr=-1", "seed=0"] in jobs
    search.hydra.overrides.task = ["hparams_search=optuna", "optim.lr=interval(-1, 1)"]
    jobs, exact = planned_jobs(search)
    assert not exact and jobs[0] == ["hparams_search=optuna"]  # the fixed overrides, then each swept value
    assert ["hparams_search=optuna", "optim.lr=-1.0"] in jobs and ["hparams_search=optuna", "optim.lr=1.0"] in jobs
    assert ["hparams_search=optuna", "optim.head_lr_multiplier=30"] in jobs


def test_a_search_trial_that_breaks_a_rule_fails_without_a_job(tmp_path):
    """Sampled values are checked too: the enqueued trial with a negative learning rate is failed without a job (so
    without an MLflow run); the search goes on."""
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[search]'")
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext
    from hydra_plugins.labelwise_sweeper.optuna_sweeper import OptunaSweeper

    from tests.test_search import ScriptedLauncher

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="labelwise", storage=storage, direction="maximize")
    for lr in (1e-4, -1e-4, 2e-4):
        study.enqueue_trial({"optim.lr": lr})
    launcher = ScriptedLauncher([0.5, 0.6])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=["hparams_search=optuna", "hydra.sweeper.n_trials=3",
                                             f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        sweeper = OptunaSweeper(**{k: v for k, v in config.hydra.sweeper.items() if k != "_target_"})
        sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=config)
        sweeper.launcher = launcher
        sweeper.sweep(["hparams_search=optuna", "optim.lr=interval(-1e-3, 1e-3)"])

    trials = optuna.load_study(study_name="labelwise", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert sum(len(batch) for batch in launcher.batches) == 2  # the bad trial never became a job


# ---------------------------------------------------------------- the real CLI


def cli_error(tmp_path: Path, *args: str) -> str:
    result = run_cli(tmp_path, *args, f"paths.mlflow_dir={tmp_path}/mlflow", check=False,
                     env={"PYTHONPATH": f"{ROOT}:{ROOT / 'src' / 'plugins'}"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in (result.stderr + result.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert_nothing_created(tmp_path)
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["optim.lr=abc"], "error: optim.lr=abc: must be a number > 0"),
    (["data=csv"], "error: data.source.train is required"),
    (["trainer.max_epochs=0"], "error: trainer.max_epochs=0: must be an integer >= 1"),
    (["data=csv", "data.train=x.csv"], "error: data.train is not a key of this config (did you mean data.source.train"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_cli_prints_one_error_line(tmp_path, args, expected):
    assert cli_error(tmp_path, *args).startswith(expected)


@pytest.mark.slow
def test_a_sweep_with_a_bad_value_stops_before_launching(tmp_path):
    """The grid's bad job is found before any job runs: no job directory, no MLflow parent or child run."""
    line = cli_error(tmp_path, "--multirun", "optim.lr=1e-4,-1", "seed=1,2", f"hydra.sweep.dir={tmp_path}/sweep")
    assert line.startswith("error: the sweep's job 'optim.lr=-1 seed=1") and "optim.lr=-1: must be a number > 0" in line
    assert not (tmp_path / "sweep").exists()


def test_a_key_only_a_swept_group_defines_names_the_fix(tmp_path):
    """Hydra composes a --multirun's base config without the swept values: data.source.data_dir exists only once
    an experiment selects data=goemotions, so the message says to select it outside the sweep."""
    line = cli_error(tmp_path, "--multirun", "experiment=goemotions_minilm,goemotions_ekman",
                     "data.source.data_dir=x", f"hydra.sweep.dir={tmp_path}/sweep")
    assert line.startswith("error: data.source.data_dir is not a key of this config")
    assert "composed without the swept experiment=goemotions_minilm,goemotions_ekman" in line
    assert "e.g. data=goemotions" in line


@pytest.mark.slow
def test_a_search_space_with_bad_values_stops_before_launching(tmp_path):
    pytest.importorskip("optuna", reason="pip install -e '.[search]'")
    line = cli_error(tmp_path, "--multirun", "hparams_search=optuna", "optim.lr=interval(-1,1)",
                     f"hydra.sweep.dir={tmp_path}/sweep")
    assert "optim.lr=-1.0: must be a number > 0" in line
    assert not (tmp_path / "sweep" / "optuna.db").exists()
