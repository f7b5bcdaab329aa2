"""One owner of a job's life: its ``results.json`` from the first line to the last, and its exit status.

Why one owner: a job can end in many ways (finished, a NaN loss, a config error before any
data is read, an unwritable output directory, SIGTERM from a scheduler, Ctrl+C, a bug), and
each way must leave the same kind of record: ``status``, ``error``, ``identity`` and, for a
process, the exit status. :func:`job_lifecycle` is the only place that writes the final
status of a failed job, and :func:`exit_policy` the only place that turns an exception into an
exit status (the way lightning-hydra-template's ``task_wrapper`` owns a run's start, failure
and end). The packed trainer enters one :func:`job_lifecycle` per member.

Statuses: ``running`` while the job runs; ``completed``, ``pruned`` (written by the job itself);
``diverged`` (:class:`~weightshare.errors.DivergenceError`), ``interrupted`` (SIGTERM, Ctrl+C,
``SystemExit``), ``failed`` (anything else), written here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from weightshare.errors import CheckpointError, ConfigError, DivergenceError, RunMismatchError, WeightshareError
from weightshare.fingerprint import check_same_run, run_fingerprint
from weightshare.results import (
    atomic_write_json,
    disk_full_error,
    error_text,
    overwrite_json_in_place,
    read_json,
    run_identity,
)
from weightshare.slurm.env import job_record, requeued

log = logging.getLogger("weightshare")

T = TypeVar("T")

#: exit status of a job stopped by SIGTERM (128 + 15, what shells and SLURM report)
SIGTERM_EXIT = 143
#: exit status of a single run that stopped on a user error (bad config, missing data)
USER_ERROR_EXIT = 2


def _is_lightning_sigterm(exc: BaseException) -> bool:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(exc, SIGTERMException)


def status_of(exc: BaseException) -> str:
    """The ``results.json`` status a job that raised ``exc`` ends with."""
    if isinstance(exc, DivergenceError):
        return "diverged"
    # SIGTERM (preemption, a time limit) and Ctrl+C: Lightning turns them into SystemExit
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "interrupted"
    # submitit's time-limit signal after the last allowed requeue ("not requeued because ...")
    if type(exc).__name__ == "UncompletedJobError" and type(exc).__module__.startswith("submitit"):
        return "interrupted"
    return "failed"


def wants_resume(cfg: DictConfig) -> bool:
    """Whether this start continues its run directory: ``ckpt_path=last``, ``resume=true``, or
    a SLURM job that was requeued (it runs the same command again and must not start over)."""
    return cfg.ckpt_path == "last" or bool(cfg.resume) or (cfg.ckpt_path is None and requeued())


def _writable_dir(out: Path) -> Path:
    probe = out / ".write_test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as exc:
        raise ConfigError("paths.output_dir", str(out), f"a writable directory ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)  # also when the write failed (a full disk leaves an empty file)
    return out


class Job:
    """Everything one run holds: config, output directory, and the summary being built.

    Creating a Job touches no file (so a job whose config is broken still gets one to record
    the failure in); :meth:`open` checks the directory and reads what an earlier start left.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.out = Path(str(cfg.paths.output_dir))
        self.results_path = self.out / "results.json"
        self.t0 = time.time()
        self.prior_wall_s = 0.0
        #: what an earlier start of this run directory left (empty if none)
        self.prev: dict[str, Any] = {}
        self.identity: dict[str, Any] | None = None
        #: the config values that define this run (:mod:`weightshare.fingerprint`)
        self.fingerprint: dict[str, Any] | None = None
        #: whether this start has written results.json yet (a failure before that leaves it as it was)
        self.written = False
        self.summary: dict[str, Any] = {"status": "running", "error": None, "task": cfg.get("task_name")}
        if slurm_job := job_record():  # where the job ran and its log, failed or not (None outside SLURM)
            self.summary["slurm"] = slurm_job
        self.opened = False

    def open(self) -> Job:
        """Check the output directory and read what an earlier start of it left (nothing is written yet).

        A resume (``ckpt_path=last`` / ``resume=true``) of a directory whose ``results.json``
        records another run's fingerprint is refused here (:class:`RunMismatchError`), before
        anything is written: a completed run stays as it was.
        """
        cfg = self.cfg
        _writable_dir(self.out)
        self.identity = run_identity(cfg)
        self.fingerprint = run_fingerprint(cfg)
        self.prev = read_json(self.results_path) or {}
        prev = self.prev
        if self.resume_asked:
            check_same_run(prev.get("fingerprint"), self.fingerprint, str(self.results_path))
        resuming = self.resume_asked and prev.get("identity") == self.identity
        # a resumed run keeps counting from its first start
        self.prior_wall_s = float(prev.get("wall_time_s") or 0.0) if resuming else 0.0
        self.summary.update(
            identity=self.identity,
            seed=cfg.seed,
            output_dir=str(self.out),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=prev.get("started_at") if resuming else time.strftime("%Y-%m-%dT%H:%M:%S"),
            started_unix=self.t0,
            resumed=int(prev.get("resumed", 0)) + 1 if resuming else 0,
            fingerprint=self.fingerprint,
        )
        self.opened = True
        return self

    @property
    def resume_asked(self) -> bool:
        """``ckpt_path=last``, ``resume=true``, or ``ckpt_path`` a checkpoint of this run directory (its best.ckpt)."""
        ckpt = self.cfg.ckpt_path
        if wants_resume(self.cfg):  # ckpt_path=last, resume=true, a requeued SLURM job
            return True
        return ckpt is not None and Path(str(ckpt)).resolve().is_relative_to(self.out.resolve())

    @property
    def completed_before(self) -> bool:
        """An earlier start of this directory completed this very config (``skip_completed``)."""
        if self.prev.get("status") != "completed":
            return False
        if self.prev.get("identity") != self.identity:
            log.warning("%s holds a completed run of another config: training this one anew", self.results_path)
            return False
        return True

    def save(self, **updates: Any) -> None:
        self.summary.update(updates)
        self.summary["wall_time_s"] = round(self.prior_wall_s + time.time() - self.t0, 3)
        atomic_write_json(self.results_path, self.summary)
        self.written = True

    def record_failure(self, exc: BaseException, *, unopened: bool = True) -> None:
        """Write the status ``exc`` ends this job with; never raises (the directory may be the problem).

        ``unopened=False`` (a single run): a job that failed before it wrote anything (a config
        error, a refused resume) leaves the directory as it was. In a sweep, a refused resume
        (another run's config, a damaged checkpoint) keeps the earlier record and adds
        ``refused``: the sweep's table shows it, and the record still describes its run.
        On a full disk, where the atomic write cannot get space for its temporary file, the
        failure is written over the existing ``results.json`` in place
        (:func:`~weightshare.results.overwrite_json_in_place`), so it never stays ``running``.
        """
        if self.summary.get("status") != "running":
            return  # finished before (a completed pack member, a recorded stage): keep its record
        if not self.written and not unopened:
            return
        if not self.written and isinstance(exc, (RunMismatchError, CheckpointError)):
            prev = self.prev or read_json(self.results_path) or {}
            if prev:
                try:
                    atomic_write_json(self.results_path, {**prev, "refused": error_text(exc)})
                except OSError as inner:
                    log.error("could not record the refusal in %s: %s", self.results_path, inner)
                return
        try:
            if self.identity is None:
                self.identity = _safe_identity(self.cfg)
            if not self.opened:  # failed before open(): keep what an earlier start recorded
                self.summary = {**(read_json(self.results_path) or {}), **self.summary}
            self.summary.setdefault("identity", self.identity)
            sigterm_without_message = not str(exc) and _is_lightning_sigterm(exc)
            error = f"{type(exc).__name__}: terminated (SIGTERM)" if sigterm_without_message else error_text(exc)
            self.save(status=status_of(exc), error=error, traceback=traceback.format_exc(limit=8))
        except Exception as inner:
            self.summary.update(status=status_of(exc), error=error_text(exc))
            if overwrite_json_in_place(self.results_path, self.summary):
                log.error("disk full? wrote the failure in place into %s (%s)", self.results_path, error_text(inner))
            else:
                log.error("could not record the failure in %s: %s", self.results_path, error_text(inner))


def _safe_identity(cfg: DictConfig) -> dict[str, Any]:
    try:
        return run_identity(cfg)
    except Exception:
        return {}


def _resume_hint(cfg: DictConfig, out: Path) -> str:
    """How to resume a job stopped by SIGTERM: a trial of a search is the sweeper's to re-run."""
    trial = cfg.get("trial")
    if trial is not None and trial.get("storage"):
        number = trial.get("trial_number")
        return f"trial {number} is re-run when the search's command runs again (the sweeper prints it)"
    return f"resume with ckpt_path=last in {out}"


@contextmanager
def job_lifecycle(cfg: DictConfig, *, record_unopened: bool = True) -> Iterator[Job]:
    """Own one job's ``results.json``: whatever ends the block, the file says how.

    The block opens the job (``job.open()``) once the config is validated; anything raised
    inside is recorded (:meth:`Job.record_failure`) and re-raised, a SIGTERM as
    ``SystemExit(143)``. W&B's run is finished in every case, failed when the block raised.
    ``record_unopened``: also record a failure before ``open()`` (a config error). A sweep
    wants that (every job of it ends with a ``results.json``); a single run prints the error
    and leaves nothing behind.
    """
    from weightshare.loggers import finish_wandb

    job = Job(cfg)
    exit_code = 1
    try:
        yield job
        exit_code = 0
    except BaseException as exc:
        job.record_failure(exc, unopened=record_unopened)
        if _is_lightning_sigterm(exc):
            log.error("terminated (SIGTERM): %s", _resume_hint(cfg, job.out))
            raise SystemExit(SIGTERM_EXIT) from None
        raise
    finally:
        finish_wandb(exit_code=exit_code)


#: ``results.json`` key of a job that a retry replaced: the retry's job directory, relative to the sweep's
RETRIED_AS = "retried_as"


def record_end(
    job_dir: str | Path,
    status: str,
    error: str,
    *,
    extra: dict[str, dict[str, Any]] | None = None,
    identity: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Give a job that ended without finishing its record a final ``status`` and ``error``.

    Its launcher calls this when the job cannot (a SLURM job SLURM ended, a pack member the
    packed trainer left). A record with a final status (the job wrote it) is kept as it is:
    returns None. ``extra`` sections are merged into the record's (``{"slurm": {...}}``);
    ``identity`` computes the run's identity when the record has none (the job died before
    writing one). Never raises on a write error (the directory may be the problem): logs it.
    """
    path = Path(job_dir) / "results.json"
    record = read_json(path) or {}
    if record.get("status") not in (None, "running"):
        return None
    if identity is not None and "identity" not in record:
        try:
            record["identity"] = identity()
        except Exception:  # a config too broken to name: the record still gets its status
            record["identity"] = {}
    record.update(status=status, error=error, output_dir=str(job_dir))
    for key, section in (extra or {}).items():
        record[key] = {**(record.get(key) or {}), **section}
    try:
        atomic_write_json(path, record)
    except OSError as exc:
        log.error("could not record the end of %s: %s", job_dir, exc)
    return record


def record_killed(job_dir: str | Path, reason: str, *, retried_as: str | None = None) -> bool:
    """Record, on behalf of a job that died without a word (SIGKILL, the OOM killer, a lost
    node), that it was ``interrupted``; returns True when the record changed.

    Only its sweeper knows such a job is dead (its record still says ``running``, or it died
    before writing one), so the sweeper calls this. A record that says anything else (the job
    finished, or recorded its own SIGTERM) keeps its status and error. ``retried_as`` names
    the job that re-ran it, so the end-of-sweep table can count the work as done.
    """
    path = Path(job_dir) / "results.json"
    record = read_json(path)
    status = (record or {}).get("status")
    if status not in (None, "running", "interrupted"):
        return False
    new = dict(record or {})
    if status != "interrupted":
        new.update(status="interrupted", error=f"killed: {reason}")
    if retried_as is not None:
        new[RETRIED_AS] = retried_as
    if new == record:
        return False
    atomic_write_json(path, new)
    return True


def exit_policy(run: Callable[[], T], *, multirun: bool) -> T | None:
    """Run a job and turn how it ended into the process's behaviour.

    - single run, user error (:class:`~weightshare.errors.WeightshareError`): one line on
      stderr, exit status 2;
    - multirun, any error: logged, the sweep goes on (the job's ``results.json`` has the
      status, and the end-of-sweep summary exits non-zero);
    - single run, a full disk (ENOSPC anywhere in the job): one line naming ENOSPC, exit
      status 1 (the job's ``results.json`` says ``failed`` with the same reason);
    - SIGTERM: exit status 143 in both; a bug in a single run: the traceback.
    """
    try:
        return run()
    except WeightshareError as exc:
        if multirun:
            log.error("%s", exc)
            return None
        print(f"error: {exc}", file=sys.stderr)  # once, one line (the console log would repeat it)
        sys.exit(USER_ERROR_EXIT)
    except Exception as exc:
        if multirun:
            log.error("job failed: %s", error_text(exc))
            return None
        if disk_full_error(exc) is not None:
            print(f"error: {error_text(exc)}", file=sys.stderr)
            sys.exit(1)
        raise
