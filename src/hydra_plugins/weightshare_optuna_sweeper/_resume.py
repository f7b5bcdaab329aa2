"""Resuming and sharing a study: which trials count, whose sweeper is dead, what to re-run.

A trial is *counted* towards ``n_trials`` when it is COMPLETE, PRUNED, or FAIL with an
``error`` (its job raised or returned no number). A trial left RUNNING by a sweeper that
died is *interrupted*: marked FAIL with the ``interrupted`` attribute, not counted, and its
parameters are enqueued again as a new trial whose ``retry_of`` names it, once. A dead
sweeper is recognised at once on the same host (its process is gone or, in the same process,
its token is old) and on other hosts by its Optuna heartbeat going stale.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from weightshare.trial_protocol import ATTR_ERROR, ATTR_INTERRUPTED, ATTR_OWNER, ATTR_RETRY_OF

log = logging.getLogger(__name__)


def is_counted(trial: FrozenTrial, grid: dict[str, list[Any]] | None = None) -> bool:
    """Counts towards ``n_trials``: finished, not merely interrupted, and on the grid if any.

    With a grid, trials of another search space in the same study are not points of this
    grid, so they do not use up its ``n_trials`` (at most the grid size).
    """
    if grid is not None and not (
        set(trial.params) >= set(grid) and all(trial.params[k] in values for k, values in grid.items())
    ):
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and ATTR_ERROR in trial.user_attrs


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def interrupt(study: optuna.Study, storage: optuna.storages.RDBStorage, number: int, reason: str) -> None:
    """Mark a RUNNING trial FAIL + ``interrupted`` (retried later); a no-op if already finished.

    The attribute is written through the storage, not a ``Trial`` object, whose
    constructor would let a GridSampler assign a grid point to the dying trial.
    """
    try:
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_user_attr(trial_id, ATTR_INTERRUPTED, reason)
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError) as exc:  # finished meanwhile (e.g. by another host)
        log.debug("trial %d not marked interrupted: %s", number, exc)
        return
    log.warning("trial %d interrupted: %s", number, reason)


def recover_interrupted(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    owner: dict[str, Any],
    distributions: dict[str, BaseDistribution],
) -> None:
    """Fail the trials of dead sweepers and enqueue their parameters again, once each."""
    host = owner["host"]
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        other = t.user_attrs.get(ATTR_OWNER)
        if not isinstance(other, dict) or other.get("host") != host or other.get("token") == owner["token"]:
            continue
        pid = int(other.get("pid", -1))
        if pid == os.getpid() or not pid_alive(pid):
            interrupt(study, storage, t.number, f"its sweeper (pid {pid} on {host}) is gone")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other hosts: heartbeat older than grace_period
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials}
    for t in trials:
        if t.state != TrialState.FAIL or ATTR_ERROR in t.user_attrs or t.number in retried:
            continue
        if any(t.distributions.get(k) != d for k, d in distributions.items()):
            continue  # killed before its parameters were drawn, or from another search space
        log.info("re-enqueueing the parameters of interrupted trial %d: %s", t.number, t.params)
        study.enqueue_trial(dict(t.params), user_attrs={ATTR_RETRY_OF: t.number})


class Heartbeat:
    """Records Optuna heartbeats of the running trials while their jobs run.

    Optuna only beats inside ``study.optimize``; here jobs run through a Hydra launcher, so
    this thread does it, letting sweeps on other hosts tell a dead sweeper's trials.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> None:
        self.storage = storage
        self.trial_ids = trial_ids
        self.interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as exc:  # a missed beat is harmless; never let it stop the sweep
                log.debug("heartbeat of trial id %d failed: %s", trial_id, exc)

    def __enter__(self) -> Heartbeat:
        if self.interval is not None:
            self.beat()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
