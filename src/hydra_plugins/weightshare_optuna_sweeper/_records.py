"""The job records (``results.json``) of a study's interrupted trials.

Why the sweeper writes them: a trial whose job was killed without a word (SIGKILL, the OOM
killer) leaves ``results.json`` at ``running``, or none at all, and the end-of-sweep table would
count it as a failure on every rerun. Only the sweeper learns that the job is dead (its
``_resume`` marks the trial ``interrupted`` in the study), so it records that in the job's
directory too, and, once the trial's retry has run, names the retry there (``retried_as``), so
the table counts the work as done when the retry did it.

A trial's job directory is found by the trial's identity in the job's Hydra overrides
(``++<trial_node>.study_name`` and ``++<trial_node>.trial_number``), which Hydra writes before
the job starts, whatever the launcher and ``hydra.sweep.subdir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import FrozenTrial, TrialState

from weightshare.job import record_killed
from weightshare.results import find_jobs, read_overrides
from weightshare.trial_protocol import ATTR_INTERRUPTED, ATTR_RETRY_OF

from ._resume import is_counted

log = logging.getLogger(__name__)


def trial_job_dirs(sweep_dir: Path, study_name: str, trial_node: str) -> dict[int, Path]:
    """``{trial number: job directory}`` of the study's jobs under ``sweep_dir``."""
    parser = OverridesParser.create()
    out: dict[int, Path] = {}
    keys = {f"{trial_node}.study_name", f"{trial_node}.trial_number"}
    for job_dir in find_jobs(sweep_dir)[0]:
        lines = [line for line in read_overrides(job_dir) or [] if line.lstrip("+~").partition("=")[0] in keys]
        try:
            values = {o.key_or_group: o.value() for o in parser.parse_overrides(lines)}
        except Exception:  # not a line of ours: not a job of this study
            continue
        number = values.get(f"{trial_node}.trial_number")
        if values.get(f"{trial_node}.study_name") == study_name and isinstance(number, int):
            out[number] = job_dir
    return out


def _finished_retry(trial: FrozenTrial, retries: dict[int, FrozenTrial]) -> FrozenTrial | None:
    """The retry of an interrupted trial, once it has run to an end (a retry of a retry followed)."""
    retry = retries.get(trial.number)
    seen = {trial.number}
    while retry is not None and retry.number not in seen:
        if is_counted(retry):
            return retry
        seen.add(retry.number)
        retry = retries.get(retry.number)
    return None


def record_interrupted(study: optuna.Study, sweep_dir: Path, trial_node: str | None) -> None:
    """Write ``interrupted`` (and, once its retry has run, ``retried_as``) into the records of
    the study's interrupted trials found under ``sweep_dir``."""
    if not trial_node:
        return  # jobs carry no trial identity: nothing ties a directory to its trial
    trials = study.get_trials(deepcopy=False)
    interrupted = [t for t in trials if t.state == TrialState.FAIL and ATTR_INTERRUPTED in t.user_attrs]
    if not interrupted or not sweep_dir.is_dir():
        return
    retries = {int(t.user_attrs[ATTR_RETRY_OF]): t for t in trials if ATTR_RETRY_OF in t.user_attrs}
    dirs = trial_job_dirs(sweep_dir, study.study_name, trial_node)
    for trial in interrupted:
        job_dir = dirs.get(trial.number)
        if job_dir is None:
            continue  # killed before Hydra made its directory, or run from another sweep directory
        retry = _finished_retry(trial, retries)
        retry_dir = dirs.get(retry.number) if retry is not None else None
        retried_as = str(retry_dir.relative_to(sweep_dir)) if retry_dir is not None else None
        if record_killed(job_dir, str(trial.user_attrs[ATTR_INTERRUPTED]), retried_as=retried_as):
            log.info("trial %d: its record in %s says interrupted%s", trial.number, job_dir,
                     f", retried as {retried_as}" if retried_as else "")  # fmt: skip
