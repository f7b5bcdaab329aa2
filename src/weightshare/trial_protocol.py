"""The contract between the sweeper and its jobs; everything goes through the Optuna storage.

The sweeper gives each job its trial's identity as overrides of the job config's ``trial``
node (``storage``, ``study_name``, ``trial_number``, ``monitor``, ``direction``). The job
reloads the study from the storage, reports its monitored metric once per epoch
(:func:`report_and_maybe_prune`) and asks the study's pruner, which the sweeper stored as a
study user attribute, because Optuna does not persist pruners. When the pruner says stop, the
job records the user attributes ``pruned=True`` and ``pruned_epoch`` on its trial, stops
training and returns its objective normally. Collecting results, the sweeper tells PRUNED
when ``pruned`` is set, COMPLETE otherwise. All of this works across processes and hosts
because nothing but the storage is shared.

Why here, in ``weightshare``: both sides need it. The sweeper plugin
(``hydra_plugins.weightshare_optuna_sweeper``) writes trials and the jobs (the Lightning
callback :mod:`weightshare.callbacks.optuna_pruning`, pack members) read and report them; the
library must never import a plugin's private module, so the contract lives in the library and
the plugin imports it. This module imports only Optuna (not Lightning): jobs without a Trainer
use it directly.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.pruners import BasePruner, NopPruner
from optuna.storages import RDBStorage

log = logging.getLogger(__name__)

# User attributes of a trial.
ATTR_PRUNED = "pruned"  # set by the job when its pruner stopped it
ATTR_PRUNED_EPOCH = "pruned_epoch"
ATTR_ERROR = "error"  # set by the sweeper on a job that raised or returned no number
ATTR_INTERRUPTED = "interrupted"  # set on a trial whose sweeper died while it ran
ATTR_RETRY_OF = "retry_of"  # number of the interrupted trial this one re-runs
ATTR_OVERRIDES = "overrides"
ATTR_OUTPUT_DIR = "output_dir"
ATTR_RETURNED = "returned_value"  # objective the job returned (kept for pruned trials too)
ATTR_OWNER = "sweeper_owner"  # {"host", "pid", "token"} of the sweeper that launched it
# User attribute of the study.
STUDY_ATTR_PRUNER = "pruner"  # the pruner's _target_ config

SQLITE_TIMEOUT_S = 60.0


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None) -> RDBStorage:
    """An RDB storage for ``url``; SQLite waits up to a minute for a lock.

    Several jobs write intermediate values to one SQLite file at once; the default 5 s
    lock timeout of sqlite3 makes them fail under load, so it is raised.
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )


@functools.lru_cache(maxsize=8)
def job_storage(url: str) -> RDBStorage:
    """One storage per URL and process: opening one checks the schema (about a second)."""
    return open_storage(url)


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for logs and result files."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def pruner_from_config(config: Mapping[str, Any] | None) -> BasePruner:
    """Instantiate a pruner ``_target_`` config; ``None`` gives ``NopPruner``.

    The config may come from a shared storage, so only subclasses of Optuna's
    ``BasePruner`` are instantiated.
    """
    from hydra.utils import get_class, instantiate

    from weightshare.errors import ConfigError

    if config is None:
        return NopPruner()
    target = config.get("_target_")
    if not isinstance(target, str):
        raise ConfigError("hydra.sweeper.pruner", dict(config), "a config with _target_: optuna.pruners.X")
    try:
        cls = get_class(target)
    except Exception as exc:
        raise ConfigError("hydra.sweeper.pruner._target_", target, "an importable pruner class") from exc
    if not (isinstance(cls, type) and issubclass(cls, BasePruner)):
        raise ConfigError("hydra.sweeper.pruner._target_", target, "a subclass of optuna.pruners.BasePruner")
    try:
        pruner = instantiate(dict(config), _convert_="all")
    except Exception as exc:
        raise ConfigError("hydra.sweeper.pruner", dict(config), f"arguments {cls.__name__} accepts ({exc})") from exc
    assert isinstance(pruner, BasePruner)
    return pruner


@dataclass(frozen=True)
class TrialLink:
    """A job's trial: mirrors ``TrialConfig`` of the training schema."""

    storage: str
    study_name: str
    trial_number: int
    monitor: str | None = None
    direction: str = "maximize"

    @classmethod
    def from_config(cls, cfg: Any) -> TrialLink | None:
        """From a ``trial`` config node (DictConfig, dataclass or mapping); None outside a sweep."""
        if cfg is None:
            return None

        def get(key: str) -> Any:
            return cfg.get(key) if isinstance(cfg, Mapping) else getattr(cfg, key, None)

        storage, study_name, number = get("storage"), get("study_name"), get("trial_number")
        if storage is None or study_name is None or number is None:
            return None
        monitor = get("monitor")
        return cls(
            storage=str(storage),
            study_name=str(study_name),
            trial_number=int(number),
            monitor=None if monitor is None else str(monitor),
            direction=str(get("direction") or "maximize"),
        )


class TrialReporter:
    """Job side of one trial: reports per-epoch values and asks the study's pruner."""

    def __init__(self, link: TrialLink) -> None:
        self.link = link
        self.pruned_epoch: int | None = None
        self._disabled = False
        self._warned_missing = False
        storage = job_storage(link.storage)
        # RandomSampler: constructing a Trial calls sampler.before_trial, which must not
        # touch the trial (GridSampler's would assign it a grid point).
        self.study = optuna.load_study(
            study_name=link.study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
        self.study.pruner = pruner_from_config(self.study.user_attrs.get(STUDY_ATTR_PRUNER))
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(link.study_name), link.trial_number
        )
        if len(self.study.directions) > 1:
            log.warning("study %s has several objectives: Optuna cannot prune it", link.study_name)
            self._disabled = True

    def report(self, epoch: int, value: Any) -> bool:
        """Report ``value`` at ``epoch``; True when the pruner says stop (recorded in the trial)."""
        if self._disabled:
            return False
        if value is None:
            if not self._warned_missing:
                log.warning(
                    "trial %d: no value of %r to report this epoch; pruning is off until it is logged",
                    self.link.trial_number,
                    self.link.monitor,
                )
                self._warned_missing = True
            return False
        number = float(value)
        try:
            trial = optuna.trial.Trial(self.study, self.trial_id)
            trial.report(number, int(epoch))
            prune = bool(trial.should_prune())
            if prune:
                trial.set_user_attr(ATTR_PRUNED, True)
                trial.set_user_attr(ATTR_PRUNED_EPOCH, int(epoch))
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            # The sweeper gave up on this trial (its sweep was killed and resumed): train on.
            log.warning("trial %d is already finished, reporting stops: %s", self.link.trial_number, exc)
            self._disabled = True
            return False
        if prune:
            self.pruned_epoch = int(epoch)
            log.info(
                "trial %d pruned at epoch %d (%s=%s)",
                self.link.trial_number,
                epoch,
                self.link.monitor,
                number if math.isfinite(number) else "nan",
            )
        return prune


_current: list[TrialReporter] = []  # the reporter of the job running in this process


def reporter_for(trial_cfg: Any) -> TrialReporter | None:
    """The reporter of the trial named by ``trial_cfg``; None outside an Optuna sweep.

    Kept between epochs (loading the study each epoch would cost a query per trial); only
    the latest one is kept, since jobs of one process (basic launcher) run one at a time.
    """
    link = TrialLink.from_config(trial_cfg)
    if link is None:
        return None
    if not _current or _current[0].link != link:
        _current[:] = [TrialReporter(link)]
    return _current[0]


def report_and_maybe_prune(trial_cfg: Any, epoch: int, value: Any) -> bool:
    """Report ``value`` (the monitored metric at ``epoch``) to the job's trial.

    Returns True when the study's pruner says the trial should stop; the trial then carries
    ``pruned=True`` and ``pruned_epoch``, and the caller should stop training and return its
    objective as usual. Does nothing (returns False) when ``trial_cfg.storage`` is null, so a
    task can call it whether or not it runs under the Optuna sweeper.
    """
    reporter = reporter_for(trial_cfg)
    return False if reporter is None else reporter.report(epoch, value)
