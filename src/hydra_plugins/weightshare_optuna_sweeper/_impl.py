"""The sweep loop: ask Optuna for a batch of trials, launch them, tell the results.

Resuming: ``n_trials`` counts the trials of the whole study, so rerunning the same command
(same storage and study name) runs only what is missing; trials a killed sweeper left
RUNNING are marked FAIL ``interrupted``, not counted, and their parameters re-run once as a
new trial (``retry_of``), so no grid point is lost and none runs twice (see ``_resume``).
Trials RUNNING under a live sweeper elsewhere count towards ``n_trials``: several sweeps on
several hosts share one study and stop together (each may overshoot by at most ``n_jobs - 1``).
The same command finds the same study without ``hydra.sweep.dir`` because the
``hparams_search`` configs key the directory by the study's name (``_study``), and the records of
killed jobs are set right (``_records``), so a rerun that finishes the study exits 0.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from optuna.trial import FrozenTrial, Trial, TrialState

from weightshare.errors import ConfigError, WeightshareError
from weightshare.trial_protocol import (
    ATTR_ERROR,
    ATTR_OUTPUT_DIR,
    ATTR_OVERRIDES,
    ATTR_OWNER,
    ATTR_PRUNED,
    ATTR_RETURNED,
    STUDY_ATTR_PRUNER,
    TrialLink,
    open_storage,
    pruner_from_config,
    safe_url,
)

from ._outcome import MAX_ERROR_CHARS, BadReturnError, job_error, objective_values
from ._records import record_interrupted
from ._resume import Heartbeat, interrupt, is_counted, recover_interrupted
from ._search_space import SearchSpace, format_override, parse_search_space, trial_override_lines
from ._study import absolute_sqlite_url, normalize_directions, resume_command, study_name

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


class TooManyFailedTrialsError(WeightshareError, RuntimeError):
    """More trials failed than ``max_failure_rate`` allows; names the last errors."""


def _consecutive_runs(trials: Sequence[Trial]) -> Iterator[list[Trial]]:
    """Split a batch into runs of consecutive numbers (job directory number = trial number)."""
    run: list[Trial] = []
    for trial in trials:
        if run and trial.number != run[-1].number + 1:
            yield run
            run = []
        run.append(trial)
    if run:
        yield run


class OptunaSweeperImpl:
    """Everything the ``OptunaSweeper`` plugin does; see the module docstring for resuming."""

    def __init__(
        self,
        *,
        sampler: Any,
        pruner: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        load_if_exists: bool,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        monitor: str | None,
        trial_node: str | None,
        heartbeat_interval: int | None,
        grace_period: int | None,
    ) -> None:
        self.sampler_cfg = _container(sampler, "hydra.sweeper.sampler")
        self.pruner_cfg = None if pruner is None else _container(pruner, "hydra.sweeper.pruner")
        self.directions = normalize_directions(direction)
        self.storage_url = storage
        self.study_name = study_name
        self.load_if_exists = bool(load_if_exists)
        self.n_trials = _check_int("hydra.sweeper.n_trials", n_trials, 1)
        self.n_jobs = _check_int("hydra.sweeper.n_jobs", n_jobs, 1)
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ConfigError("hydra.sweeper.max_failure_rate", max_failure_rate, "a number in [0, 1]")
        self.max_failure_rate = float(max_failure_rate)
        self.params = {} if params is None else {str(k): str(v) for k, v in params.items()}
        self.custom_search_space: Callable[[DictConfig, Trial], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )
        self.monitor = monitor
        self.trial_node = trial_node
        self.heartbeat_interval = (
            None
            if heartbeat_interval is None
            else _check_int("hydra.sweeper.heartbeat_interval", heartbeat_interval, 1)
        )
        self.grace_period = grace_period
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.sweep_dir: Path | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        try:
            self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        except InterpolationResolutionError as exc:  # ${optuna_study:...} refused a study name
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, WeightshareError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise

    def _storage(self) -> tuple[str, optuna.storages.RDBStorage]:
        assert self.sweep_dir is not None
        if self.storage_url is None:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        else:
            url = absolute_sqlite_url(str(self.storage_url), Path.cwd())
        try:
            storage = open_storage(url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period)
        except Exception as exc:
            raise ConfigError("hydra.sweeper.storage", safe_url(url), f"a reachable database URL ({exc})") from exc
        return url, storage

    def _sampler(self, space: SearchSpace, n_previous: int) -> optuna.samplers.BaseSampler:
        """Instantiate the sampler; a grid gets the search space of the choice params.

        On a resumed study the seed is shifted by the number of existing trials: the same
        seed would replay the same random start-up points, duplicating finished trials.
        """
        cfg = dict(self.sampler_cfg)
        target = cfg.get("_target_")
        try:
            cls = get_class(str(target))
        except Exception as exc:
            raise ConfigError("hydra.sweeper.sampler._target_", target, "an importable Optuna sampler") from exc
        if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
            raise ConfigError("hydra.sweeper.sampler._target_", target, "a subclass of optuna.samplers.BaseSampler")
        if issubclass(cls, optuna.samplers.GridSampler):
            cfg["search_space"] = space.grid()
        if issubclass(cls, optuna.samplers.CmaEsSampler) and find_spec("cmaes") is None:
            raise ConfigError(
                "hydra.sweeper.sampler._target_",
                target,
                "a sampler whose packages are installed (pip install cmaes)",
            )
        if cfg.get("seed") is not None and n_previous:
            cfg["seed"] = (int(cfg["seed"]) + 1_000_003 * n_previous) % 2**32
        try:
            return instantiate(cfg, _convert_="all")
        except Exception as exc:
            raise ConfigError(
                "hydra.sweeper.sampler",
                self.sampler_cfg,
                f"arguments {cls.__name__} accepts ({exc}); "
                "to change sampler use hydra/sweeper/sampler=<tpe|random|grid|cmaes|nsgaii>",
            ) from exc

    def _open_study(self, url: str, storage: optuna.storages.RDBStorage, name: str) -> optuna.Study:
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=self.directions,
                load_if_exists=self.load_if_exists,
            )
        except optuna.exceptions.DuplicatedStudyError as exc:
            raise ConfigError(
                "hydra.sweeper.study_name", name, "a new study name, or load_if_exists=true to resume it"
            ) from exc
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise ConfigError("hydra.sweeper.direction", self.directions, f"{found}, the directions of study {name}")
        return study

    # ------------------------------------------------------------------ sweep
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None and self.sweep_dir is not None
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space = parse_search_space(lines)
        grid = space.grid() if _is_grid(self.sampler_cfg) else None
        n_trials = self.n_trials
        if grid is not None:
            n_trials = min(n_trials, space.grid_size())
            log.info("GridSampler: %d grid points, n_trials=%d", space.grid_size(), n_trials)
        pruner = pruner_from_config(self.pruner_cfg)  # fail early on a bad pruner config
        url, storage = self._storage()
        name = study_name(str(self.config.hydra.job.name), self.study_name, self.directions, self.params, arguments)
        study = self._open_study(url, storage, name)
        study.set_user_attr(STUDY_ATTR_PRUNER, self.pruner_cfg)
        study.pruner = pruner
        study.sampler = self._sampler(space, n_previous=len(study.trials))
        study_id = storage.get_study_id_from_name(name)
        monitor = self.monitor or OmegaConf.select(self.config, "optimized_metric", default=None)
        log.info(
            "Study %s in %s: %s, sampler %s, pruner %s, n_trials=%d, n_jobs=%d",
            name, safe_url(url), self.directions, type(study.sampler).__name__,
            type(pruner).__name__, n_trials, self.n_jobs,
        )  # fmt: skip

        self._announce(study, grid, n_trials)
        recover_interrupted(study, storage, self.owner, space.distributions)
        # once here and once at the end: each reads every job directory's overrides
        record_interrupted(study, self.sweep_dir, self.trial_node)
        waiting_for: set[int] = set()
        while True:
            recover_interrupted(study, storage, self.owner, space.distributions)
            trials = study.get_trials(deepcopy=False)
            counted = [t for t in trials if is_counted(t, grid)]
            self._check_failures(counted, n_trials)
            # RUNNING trials of other live sweepers count (they will finish); RUNNING trials
            # without an owner were not started by this plugin: nothing would ever end them
            running = [t for t in trials if t.state == TrialState.RUNNING and ATTR_OWNER in t.user_attrs]
            to_go = n_trials - len(counted) - len(running)
            if to_go <= 0:
                if not running:
                    break
                if {t.number for t in running} != waiting_for:
                    waiting_for = {t.number for t in running}
                    log.info("waiting for trial(s) %s running under another sweeper", sorted(waiting_for))
                time.sleep(min(self.heartbeat_interval or 10, 10))
                continue
            batch = [self._ask(study, space) for _ in range(min(self.n_jobs, to_go))]
            overrides = [self._configure(study, trial, space, url, name, monitor) for trial in batch]
            ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in batch]
            returns = self._launch(study, batch, overrides, ids, storage)
            for trial, ret in zip(batch, returns):
                try:
                    self._tell(study, trial, ret)
                except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
                    # finished meanwhile: another host took it for a dead sweeper's trial
                    log.warning("trial %d was finished elsewhere, its result is dropped: %s", trial.number, exc)
        record_interrupted(study, self.sweep_dir, self.trial_node)  # name the retries that ran
        self._write_results(study, url, n_trials)

    def _announce(self, study: optuna.Study, grid: dict[str, list[Any]] | None, n_trials: int) -> None:
        """Say whether this run starts the study or resumes it, and how far it got."""
        assert self.sweep_dir is not None
        trials = study.get_trials(deepcopy=False)
        if not trials:
            log.info("new study %s in %s: %d trials to run", study.study_name, self.sweep_dir, n_trials)
            return
        done = sum(is_counted(t, grid) for t in trials)
        log.info(
            "resuming study %s: %d of %d trials done (in %s; a new study: hydra.sweeper.study_name=<new name>)",
            study.study_name, min(done, n_trials), n_trials, self.sweep_dir,
        )  # fmt: skip

    @staticmethod
    def _ask(study: optuna.Study, space: SearchSpace) -> Trial:
        with warnings.catch_warnings():  # the heartbeat is beaten by _Heartbeat, not optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            try:
                return study.ask(fixed_distributions=space.distributions)
            except ValueError as exc:  # e.g. another choice list than the study's earlier trials
                raise ConfigError(
                    "hydra.sweeper.params",
                    {k: str(d) for k, d in space.distributions.items()},
                    f"a search space compatible with study {study.study_name} ({exc}); "
                    "change study_name to start a new study",
                ) from exc

    def _configure(
        self, study: optuna.Study, trial: Trial, space: SearchSpace, url: str, name: str, monitor: str | None
    ) -> list[str]:
        """Suggest the custom params, record the trial's owner and overrides, build its overrides."""
        if self.custom_search_space is not None:
            assert self.config is not None
            self.custom_search_space(self.config, trial)
        overlap = set(trial.params) & set(space.fixed)
        if overlap:
            raise ConfigError("hydra.sweeper.params", sorted(overlap), "keys either swept or fixed, not both")
        lines = trial_override_lines(trial.params, space.fixed)
        trial.set_user_attr(ATTR_OWNER, self.owner)
        trial.set_user_attr(ATTR_OVERRIDES, lines)
        if self.trial_node:
            link = TrialLink(url, name, trial.number, monitor, self.directions[0])
            lines = lines + _link_overrides(link, self.trial_node)
        return lines

    def _launch(
        self,
        study: optuna.Study,
        batch: list[Trial],
        overrides: list[list[str]],
        trial_ids: list[int],
        storage: optuna.storages.RDBStorage,
    ) -> list[JobReturn]:
        """Launch the batch (job number = trial number); on any exception mark it interrupted."""
        by_number = dict(zip((t.number for t in batch), overrides))
        returns: list[JobReturn] = []
        try:
            with Heartbeat(storage, trial_ids):
                for run in _consecutive_runs(batch):
                    jobs = [by_number[t.number] for t in run]
                    returns.extend(self.launcher.launch(jobs, initial_job_idx=run[0].number))
        except BaseException as exc:
            stopped = batch[len(returns) :]
            for trial in stopped:
                interrupt(study, storage, trial.number, "the sweep was stopped while the job ran")
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):  # SIGTERM (exit 143), Ctrl+C
                assert self.config is not None and self.sweep_dir is not None
                log.error(
                    "sweep stopped while trial(s) %s ran; they are recorded interrupted and re-run when "
                    "the sweep resumes. Resume the study %s (finished trials are kept): %s",
                    [t.number for t in stopped], study.study_name, resume_command(self.config, self.sweep_dir),
                )  # fmt: skip
            raise
        return returns

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn) -> None:
        """Record a job's outcome: FAIL (with the error), PRUNED (job set ``pruned``) or COMPLETE."""
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        if output_dir is not None:
            trial.set_user_attr(ATTR_OUTPUT_DIR, str(output_dir))
        try:
            values = objective_values(ret.return_value, len(self.directions))
        except Exception as exc:  # the job raised (re-raised by return_value) or returned junk
            message = str(exc) if isinstance(exc, BadReturnError) else f"{type(exc).__name__}: {exc}"
            recorded = job_error(output_dir) if ret.status == JobStatus.COMPLETED else None
            if recorded:
                message = f"the task returned None: the job failed ({recorded})"
            message = message[:MAX_ERROR_CHARS]
            log.warning("trial %d failed: %s", trial.number, message)
            trial.set_user_attr(ATTR_ERROR, message)
            self._tell_state(study, trial.number, TrialState.FAIL)
            return
        trial.set_user_attr(ATTR_RETURNED, values[0] if len(values) == 1 else values)
        current = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        attrs = next((t.user_attrs for t in current if t.number == trial.number), {})
        if attrs.get(ATTR_PRUNED):
            self._tell_state(study, trial.number, TrialState.PRUNED)
        else:
            self._tell_state(study, trial.number, TrialState.COMPLETE, values)

    @staticmethod
    def _tell_state(study: optuna.Study, number: int, state: TrialState, values: list[float] | None = None) -> None:
        """``study.tell``, tolerating GridSampler's ``study.stop()`` outside ``optimize``.

        Optuna stores the state before the sampler's hook raises, so the error is only
        re-raised when the state did not reach the storage.
        """
        try:
            study.tell(number, values, state=state)
        except RuntimeError:
            stored = next((t.state for t in study.get_trials(deepcopy=False) if t.number == number), None)
            if stored != state:
                raise

    def _check_failures(self, counted: list[FrozenTrial], n_trials: int) -> None:
        failed = [t for t in counted if t.state == TrialState.FAIL]
        allowed = self.max_failure_rate * n_trials
        if len(failed) <= allowed:
            return
        last = "; ".join(f"trial {t.number}: {t.user_attrs.get(ATTR_ERROR)}" for t in failed[-3:])
        raise TooManyFailedTrialsError(
            f"{len(failed)} of n_trials={n_trials} trials failed, more than "
            f"max_failure_rate={self.max_failure_rate} allows ({math.floor(allowed)}); last errors: {last}"
        )

    def _write_results(self, study: optuna.Study, url: str, n_trials: int) -> None:
        assert self.sweep_dir is not None
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": safe_url(url),
            "n_trials": n_trials,
            "counts": counts,
        }
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(self.directions) == 1:
            best = study.best_trial if complete else None
            results["best_params"] = dict(best.params) if best else None
            results["best_value"] = best.value if best else None
            results["best_trial"] = best.number if best else None
            if best:
                log.info("Best value %s with %s (trial %d)", best.value, best.params, best.number)
        else:
            results["solutions"] = [
                {"params": dict(t.params), "values": list(t.values), "trial": t.number} for t in study.best_trials
            ]
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / RESULTS_FILE)


def _link_overrides(link: TrialLink, node: str) -> list[str]:
    """Override lines setting ``<node>.*`` in the job (``++``: the node may be absent)."""
    values = {
        "storage": link.storage,
        "study_name": link.study_name,
        "trial_number": link.trial_number,
        "monitor": link.monitor,
        "direction": link.direction,
    }
    return [format_override(f"++{node}.{key}", value) for key, value in values.items()]


def _container(cfg: Any, key: str) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        out = OmegaConf.to_container(cfg, resolve=True)
    elif isinstance(cfg, dict):
        out = dict(cfg)
    else:
        raise ConfigError(key, cfg, "a config with _target_")
    assert isinstance(out, dict)
    if "_target_" not in out:
        raise ConfigError(key, out, "a config with _target_")
    return {str(k): v for k, v in out.items()}


def _check_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")
    return value


def _is_grid(sampler_cfg: dict[str, Any]) -> bool:
    try:
        cls = get_class(str(sampler_cfg.get("_target_")))
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, optuna.samplers.GridSampler)
