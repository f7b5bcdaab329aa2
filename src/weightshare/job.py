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

from weightshare.errors import ConfigError, DivergenceError, WeightshareError
from weightshare.results import atomic_write_json, read_json, run_identity

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
    return "failed"


def _writable_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("paths.output_dir", str(out), f"a writable directory ({exc.strerror or exc})") from None
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
        self.summary: dict[str, Any] = {"status": "running", "error": None, "task": cfg.get("task_name")}
        self.opened = False

    def open(self) -> Job:
        """Check the output directory and read what an earlier start of it left (nothing is written yet)."""
        cfg = self.cfg
        _writable_dir(self.out)
        self.identity = run_identity(cfg)
        self.prev = read_json(self.results_path) or {}
        prev = self.prev
        resuming = (cfg.ckpt_path == "last" or cfg.resume) and prev.get("identity") == self.identity
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
        )
        self.opened = True
        return self

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

    def record_failure(self, exc: BaseException, *, unopened: bool = True) -> None:
        """Write the status ``exc`` ends this job with; never raises (the directory may be the problem).

        ``unopened=False``: a job that failed before :meth:`open` (a config error) leaves no file.
        """
        if self.summary.get("status") != "running":
            return  # finished before (a completed pack member, a recorded stage): keep its record
        if not self.opened and not unopened:
            return
        try:
            if self.identity is None:
                self.identity = _safe_identity(self.cfg)
            if not self.opened:  # failed before open(): keep what an earlier start recorded
                self.summary = {**(read_json(self.results_path) or {}), **self.summary}
            self.summary.setdefault("identity", self.identity)
            self.save(
                status=status_of(exc),
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=8),
            )
        except Exception as inner:
            log.error("could not record the failure in %s: %s", self.results_path, inner)


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
            log.error("job failed: %s: %s", type(exc).__name__, exc)
            return None
        raise
