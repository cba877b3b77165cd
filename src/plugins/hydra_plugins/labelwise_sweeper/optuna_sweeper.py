"""``hydra/sweeper=labelwise_optuna``: an Optuna (>= 4) search whose trials are jobs of Hydra's launcher.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins ``optuna<3``. This sweeper asks Optuna for
``n_jobs`` trials, launches them as one batch through the configured launcher (in-process, joblib, SLURM), and
tells Optuna each job's return value, the run's optimized metric. A job that failed (raised, or returned None
as a failed labelwise job does) or whose overrides do not compose is told as failed, and the search goes on.

The study lives in ``storage`` (``sqlite:///<sweep dir>/optuna.db`` by default): running the same command with
the same ``hydra.sweep.dir`` and ``study_name`` resumes it up to ``n_trials`` trials in all. At the end the best
trial goes to ``<sweep dir>/optimization_results.yaml``, the log and the sweep's MLflow parent run.

Hydra imports every public module of ``hydra_plugins`` when any Hydra app starts, so this one imports only
Hydra at module level; Optuna (an optional extra) and MLflow are imported when a search runs. No
``from __future__ import annotations`` here: Hydra's scanner runs this module before it is in ``sys.modules``,
where a dataclass cannot resolve string annotations.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException, HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.labelwise_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "maximize"  # of the value the jobs return (optimized_metric): maximize | minimize
    n_trials: int = 20  # in the whole study, counting the trials of a resumed search
    n_jobs: int = 1  # trials per launcher batch; set the launcher's parallelism to match
    seed: int = 42  # of the TPE sampler
    study_name: str = "labelwise"
    storage: str | None = None  # default sqlite:///<sweep dir>/optuna.db
    params: dict[str, str] = field(default_factory=dict)  # key: Hydra sweep expression (see _space.py)
    pruner: str | None = None  # median | hyperband: stop poor trials early on their per-epoch optimized_metric
    pruner_startup_trials: int = 5  # median: trials that run in full before any is pruned
    pruner_warmup_epochs: int = 1  # median: epochs of every trial before it can be pruned


ConfigStore.instance().store(group="hydra/sweeper", name="labelwise_optuna", node=OptunaSweeperConf,
                             provider="labelwise")


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str, n_trials: int, n_jobs: int, seed: int, study_name: str,
                 storage: str | None, params: DictConfig | None, pruner: str | None = None,
                 pruner_startup_trials: int = 5, pruner_warmup_epochs: int = 1) -> None:
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.seed = seed
        self.study_name = study_name
        self.storage = storage
        self.params = dict(params or {})
        self.pruner = pruner
        self.pruner_startup_trials = pruner_startup_trials
        self.pruner_warmup_epochs = pruner_warmup_epochs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.storage = self.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}"

    def sweep(self, arguments: list[str]) -> None:
        try:
            import optuna
        except ImportError:
            raise CompactHydraException("hparams_search=optuna needs Optuna: pip install -e '.[search]'") from None
        from ._space import SearchSpaceError, parse

        space, fixed = parse(self.params, arguments)
        if not space:
            raise SearchSpaceError("the search space is empty: set hydra.sweeper.params (see hparams_search/).")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            direction=self.direction,
            load_if_exists=True,
            pruner=self._pruner(),
        )
        if study.direction.name.lower() != self.direction.lower():  # a resumed study keeps its own direction
            raise CompactHydraException(f"study '{self.study_name}' in {self.storage} was created to "
                                        f"{study.direction.name.lower()}: set another study_name or storage.")
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # an interrupted search's: never to report

        def finished() -> int:  # not counting trials enqueued (optuna's enqueue_trial) and still waiting
            return sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))

        log.info(f"Optuna study '{self.study_name}' in {self.storage}: {finished()} of {self.n_trials} trials done; "
                 f"searching {', '.join(space)}")
        job_idx = finished()  # past every job dir of a resumed search: each finished trial ran one job at most
        while (left := self.n_trials - finished()) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            job_idx += self._run_batch(study, trials, fixed, job_idx)
        self._report(study)

    def _pruner(self) -> Any:
        from src.errors import ConfigError
        from src.tracking.pruning import make_pruner

        try:
            return make_pruner(self.pruner, self.pruner_startup_trials, self.pruner_warmup_epochs,
                               int(self.config.trainer.max_epochs))
        except ConfigError as error:
            raise CompactHydraException(str(error)) from None

    def _trial_overrides(self, trial: Any) -> list[str]:
        """Where a job reports its per-epoch metric (src/tracking/pruning.py): only with a pruner."""
        if self.pruner is None:
            return []
        return [f"trial.storage='{self.storage}'", f"trial.study='{self.study_name}'", f"trial.id={trial._trial_id}"]

    def _run_batch(self, study: Any, trials: list[Any], fixed: list[str], job_idx: int) -> int:
        """Launches the trials that compose as one batch and tells Optuna their outcomes; returns the jobs run."""
        from optuna.trial import TrialState

        from ._space import job_override

        for trial in trials:
            trial.set_user_attr("overrides", [job_override(key, value) for key, value in trial.params.items()])
        trials = [trial for trial in trials if self._composes(study, trial, [*fixed, *trial.user_attrs["overrides"]])]
        if not trials:
            return 0
        batch = [[*fixed, *trial.user_attrs["overrides"], *self._trial_overrides(trial)] for trial in trials]
        returns = self.launcher.launch(batch, initial_job_idx=job_idx)
        for trial, result in zip(trials, returns):
            trial.set_user_attr("job_dir", result.hydra_cfg.hydra.runtime.output_dir if result.hydra_cfg else None)
            value = objective(result)
            pruned_at = study.trials[trial.number].user_attrs.get("pruned_at_epoch")  # set by the job
            if value is not None and pruned_at is not None:
                log.info(f"trial {trial.number}: pruned at epoch {pruned_at}")
                study.tell(trial, state=TrialState.PRUNED)
            elif value is None:
                log.warning(f"trial {trial.number} failed (job {trial.user_attrs['job_dir']}); the search goes on")
                study.tell(trial, state=TrialState.FAIL)
            else:
                log.info(f"trial {trial.number}: {value:.4f}")
                study.tell(trial, value)
        return len(returns)

    def _composes(self, study: Any, trial: Any, overrides: list[str]) -> bool:
        """A trial whose overrides do not compose (``loss.gamma_neg=2`` with ``loss=bce``, in a space that chooses
        the loss) or break a rule of src/schema.py fails without a job (and without an MLflow run); launched, the
        first would stop the whole batch."""
        from optuna.trial import TrialState

        from src.schema import job_problems

        try:
            found = job_problems(self.hydra_context.config_loader.load_sweep_config(self.config, overrides))
        except (HydraException, OmegaConfBaseException) as error:
            found = [f"its overrides do not compose: {error}"]
        if found:
            log.warning(f"trial {trial.number} failed without a job: {'; '.join(found)}")
            study.tell(trial, state=TrialState.FAIL)
            return False
        return True

    def _report(self, study: Any) -> None:
        from optuna.trial import TrialState

        counts = {state.name.lower(): sum(t.state == state for t in study.trials) for state in TrialState}
        if not counts["complete"]:
            log.warning(f"no trial of the study finished ({counts['fail']} failed): there is no best trial")
            return
        best = study.best_trial
        metric = str(self.config.get("optimized_metric", "objective"))
        results = {
            "metric": metric,
            "direction": self.direction,
            "best_value": best.value,
            "best_overrides": best.user_attrs.get("overrides"),  # what the best job ran with
            "best_params": best.params,  # Optuna's samples, unrounded
            "best_trial": best.number,
            "best_job_dir": best.user_attrs.get("job_dir"),
            "trials": {state: count for state, count in counts.items() if count},
            "study_name": study.study_name,
            "storage": self.storage,
        }
        path = self.sweep_dir / RESULTS_FILE
        path.write_text(yaml.safe_dump(results, sort_keys=False))
        log.info(f"best {metric} = {best.value:.4f} (trial {best.number}: {best.params}); {path}")
        log_to_parent_run(self.sweep_dir, path, f"best/{metric}", best.value)


def objective(result: JobReturn) -> float | None:
    """The job's return value; None for a failed job: one that raised (logged here) or returned None or NaN (a
    failed labelwise job, whose error is in its job dir)."""
    try:
        value = result.return_value
    except Exception:
        log.exception("the job raised")
        return None
    return float(value) if value is not None and math.isfinite(value) else None


def log_to_parent_run(sweep_dir: Path, results: Path, metric: str, value: float) -> None:
    """The results file and the best value on the sweep's MLflow parent run, when there is one."""
    from src.tracking.sweep import read_parent

    record = read_parent(sweep_dir)
    if record is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(record["tracking_uri"])
    client.log_artifact(record["run_id"], str(results))
    client.log_metric(record["run_id"], metric, value)
