"""hparams_search=optuna (our sweeper, src/plugins/hydra_plugins/labelwise_sweeper) and the joblib/SLURM launchers."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna", reason="pip install -e '.[search]'")
from hydra_plugins.labelwise_sweeper._space import SearchSpaceError, job_override, parse  # noqa: E402
from hydra_plugins.labelwise_sweeper.optuna_sweeper import OptunaSweeper  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from tests.helpers import CONF, run_cli, runs_in, tiny_data_args  # noqa: E402

JOBLIB = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None


def test_search_space_from_hydra_sweep_expressions():
    params = {
        "optim.lr": "tag(log, interval(1e-5, 3e-4))",
        "optim.weight_decay": "interval(0, 0.1)",
        "loss.gamma_neg": "range(0, 6)",
        "optim.head_lr_multiplier": "choice(1, 10, 30)",
        "trainer.max_epochs": "3",
    }
    command_line = ["loss=asymmetric", "optim.weight_decay=0.01", "loss.clip=range(0, 0.5, 0.25)", "+x=choice(a,'b,c')"]

    space, fixed = parse(params, command_line)

    assert space == {
        "optim.lr": FloatDistribution(1e-5, 3e-4, log=True),
        "loss.gamma_neg": IntDistribution(0, 5),  # Hydra's range excludes its stop
        "optim.head_lr_multiplier": CategoricalDistribution([1, 10, 30]),
        "loss.clip": FloatDistribution(0.0, 0.25, step=0.25),
        "+x": CategoricalDistribution(["a", "b,c"]),
    }
    assert fixed == ["optim.weight_decay=0.01", "trainer.max_epochs=3", "loss=asymmetric"]  # a fixed value wins
    assert job_override("optim.lr", 0.000123456) == "optim.lr=0.0001235"
    for value in (10, True, None, "b,c", 0.5):  # Hydra reads back what was sampled
        assert OverridesParser.create().parse_override(job_override("k", value)).value() == value


@pytest.mark.parametrize(
    ("argument", "message"),
    [("seed=1,2", "write seed=choice(1,2) to search over it"), ("n=tag(log, range(1, 9))", "interval(...) only")],
    ids=["grid", "log-range"],
)
def test_a_space_optuna_cannot_sample_is_refused(argument, message):
    with pytest.raises(SearchSpaceError, match=re.escape(message)):
        parse({}, [argument])


class ScriptedLauncher:
    """Job ``i`` returns ``outcomes[i]``: a value, None (a failed labelwise job) or an exception (a job that raised)."""

    def __init__(self, outcomes: list):
        self.outcomes = outcomes
        self.batches: list[list[list[str]]] = []

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append([list(overrides) for overrides in job_overrides])
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            outcome = self.outcomes[idx]
            result = JobReturn(overrides=list(overrides), hydra_cfg=OmegaConf.create(
                {"hydra": {"runtime": {"output_dir": f"sweep/{idx}"}}}))
            result.status = JobStatus.FAILED if isinstance(outcome, Exception) else JobStatus.COMPLETED
            result.return_value = outcome
            returns.append(result)
        return returns


def test_sweeper_tells_optuna_every_outcome_and_writes_the_best(tmp_path):
    """Batches of 2. Jobs that return None or raise are failed trials, and the search goes on; trials whose
    overrides do not compose (gamma_neg with the bce loss) fail without a job. The trials are enqueued in the study
    beforehand, so which ones choose bce is fixed."""
    losses = ["asymmetric", "bce", "asymmetric", "asymmetric", "bce", "asymmetric"]
    study = optuna.create_study(study_name="labelwise", storage=f"sqlite:///{tmp_path}/optuna.db",
                                direction="maximize")
    for loss in losses:
        study.enqueue_trial({"loss": loss, "loss.gamma_neg": 1})
    launcher = ScriptedLauncher([None, RuntimeError("boom"), 0.5, 0.3])  # jobs 0-3: trials 0, 2, 3, 5
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=[
            "hparams_search=optuna", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}",
        ], return_hydra_config=True)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        sweeper = OptunaSweeper(**{k: v for k, v in config.hydra.sweeper.items() if k != "_target_"})
        sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=config)
        sweeper.launcher = launcher
        # the task overrides, as Hydra passes them: the jobs' configs are composed from them again
        sweeper.sweep(["hparams_search=optuna", "loss=choice(bce, asymmetric)", "loss.gamma_neg=range(0, 3)",
                       "trainer.max_epochs=1"])

    trials = optuna.load_study(study_name="labelwise", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE"]
    assert [t.user_attrs.get("job_dir") for t in trials] == ["sweep/0", None, "sweep/1", "sweep/2", None, "sweep/3"]
    assert [t.value for t in trials] == [None, None, None, 0.5, None, 0.3]
    assert [len(batch) for batch in launcher.batches] == [1, 2, 1]
    assert launcher.batches[0][0][:2] == ["hparams_search=optuna", "trainer.max_epochs=1"]  # fixed, then sampled
    assert launcher.batches[0][0][2:] == trials[0].user_attrs["overrides"]
    assert "loss=asymmetric" in trials[3].user_attrs["overrides"]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == 0.5 and results["best_trial"] == 3 and results["best_job_dir"] == "sweep/2"
    assert results["best_overrides"] == trials[3].user_attrs["overrides"]
    assert results["best_params"] == trials[3].params and results["trials"] == {"complete": 2, "fail": 4}


def test_search_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.labelwise_sweeper.optuna_sweeper.OptunaSweeper"
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "optim.weight_decay", "optim.head_lr_multiplier"}
    assert cfg.hydra.sweeper.study_name == "labelwise" and cfg.hydra.sweeper.direction == "maximize"


@pytest.mark.skipif(not SUBMITIT, reason="hydra-submitit-launcher is not installed: pip install -e '.[slurm]'")
def test_slurm_launcher_composes():
    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                 "hydra.launcher.timeout_min=240"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)


def quick_args(tmp_path, tiny_bert) -> list[str]:
    return [*tiny_data_args(tmp_path, tiny_bert, multilabel=True), "trainer.max_epochs=1", "report=false"]


@pytest.mark.slow
def test_optuna_search_goes_on_after_failed_trials_resumes_and_names_its_runs(tmp_path, tiny_bert):
    """First command: both trials use softmax CE on multi-label data, fail, and are told failed. Second command, same
    sweep dir: the study resumes and runs 3 more trials (batches of 2 and 1), each an MLflow child of the new parent
    named by its sampled values; the results file holds the best of them."""
    args = [*quick_args(tmp_path, tiny_bert), "hydra.sweep.dir=search"]
    first = run_cli(tmp_path, "--multirun", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "loss=choice(ce)",
                    *args, check=False)
    assert first.returncode == 1 and "sweep finished: 2 jobs, 2 failed" in first.stderr
    second = run_cli(tmp_path, "--multirun", "hparams_search=optuna", "hydra.sweeper.n_trials=5",
                     "hydra.sweeper.n_jobs=2", *args, check=False)
    assert "sweep finished: 5 jobs, 2 failed" in second.stderr  # the first command's failed jobs still count

    sweep = tmp_path / "search"
    trials = optuna.load_study(study_name="labelwise", storage=f"sqlite:///{sweep}/optuna.db").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert (sweep / "1" / "error.txt").read_text().startswith("error: CrossEntropy works for multiclass data")
    parent_id = json.loads((sweep / "mlflow_parent.json").read_text())["run_id"]
    runs = runs_in(tmp_path / "outputs" / "mlflow.db")
    (parent,) = [r for r in runs if r.info.run_id == parent_id]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    # named by the sampled values only: optim.lr, fixed on the command line, is not searched
    assert sorted(children) == sorted(" ".join(t.user_attrs["overrides"]) for t in trials[2:])
    assert all(run.info.status == "FINISHED" for run in children.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(r.data.metrics["val/macro_f1"] for r in children.values()))
    assert results["trials"] == {"complete": 3, "fail": 2} and results["best_trial"] >= 2
    assert parent.data.metrics["best/val/macro_f1"] == pytest.approx(results["best_value"])


@pytest.mark.slow
@pytest.mark.skipif(not JOBLIB, reason="hydra-joblib-launcher is not installed: pip install -e '.[parallel]'")
def test_joblib_sweep_is_one_parent_with_children_named_by_their_settings(tmp_path, tiny_bert):
    """The jobs run in joblib's worker processes, whose command line is not the sweep's: their names and parent
    come from the sweep dir's mlflow_parent.json."""
    run_cli(tmp_path, "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
            *quick_args(tmp_path, tiny_bert), "hydra.sweep.dir=sweep")

    runs = runs_in(tmp_path / "outputs" / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("labelwise.kind") == "sweep"]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert parent.data.tags["labelwise.launcher"].endswith("JoblibLauncher")
    assert sorted(children) == ["seed=1", "seed=2"]
    for run in children.values():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert "val/macro_f1" in run.data.metrics


@pytest.mark.slow
def test_median_pruner_stops_a_poor_trial_and_marks_it(tmp_path, tiny_bert):
    """Three trials enqueued in order: two at a working learning rate, then one at 1e-9 that cannot lower the
    validation loss. With two start-up trials and one warm-up epoch, the median pruner stops the third after its
    second epoch; Optuna, the job's summary and its MLflow run all say pruned."""
    sweep = tmp_path / "search"
    storage = f"sqlite:///{sweep}/optuna.db"
    sweep.mkdir()
    study = optuna.create_study(study_name="labelwise", storage=storage, direction="minimize")
    for lr in (1e-3, 1e-3, 1e-9):
        study.enqueue_trial({"optim.lr": lr})
    data = [arg for arg in tiny_data_args(tmp_path, tiny_bert, multilabel=True) if not arg.startswith("optim.lr=")]
    args = [*data, "trainer.max_epochs=3", "report=false",
            "test=false", "callbacks.early_stopping=null", "hydra.sweep.dir=search"]
    run_cli(tmp_path, "--multirun", "hparams_search=optuna", "optimized_metric=val/loss",
            "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_startup_trials=2", "hydra.sweeper.pruner_warmup_epochs=1",
            "optim.lr=choice(0.001,1e-9)", "optim.weight_decay=0.01", "optim.head_lr_multiplier=10", *args)

    trials = optuna.load_study(study_name="labelwise", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[2].user_attrs["pruned_at_epoch"] == 1
    assert sorted(trials[2].intermediate_values) == [0, 1]  # stopped after its second epoch
    assert sorted(trials[0].intermediate_values) == [0, 1, 2]
    summary = json.loads((sweep / "2" / "summary.json").read_text())
    assert summary["pruned_at_epoch"] == 1
    runs = {r.data.tags.get("mlflow.runName"): r for r in runs_in(tmp_path / "outputs" / "mlflow.db")}
    pruned = [r for r in runs.values() if r.data.tags.get("optuna.state") == "PRUNED"]
    assert len(pruned) == 1 and pruned[0].data.tags["optuna.pruned_at_epoch"] == "1"
    assert all("trial." not in name for name in runs)  # the trial handle is not part of a run's name
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 2, "pruned": 1}
