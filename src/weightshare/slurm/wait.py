"""Waiting for submitit jobs until SLURM says they ended, and what each one left.

Why not submitit's ``job.results()``: it returns as soon as a result file exists and
raises when a job ended without one, and on a cluster both happen in ordinary operation.
A job that SLURM requeues (``scontrol requeue``, preemption, submitit's own checkpoint at
a time limit) may have written the result of its first start and then runs again; a job
killed hard (SIGKILL at the end of a time limit, out of memory, a node failure) writes
none, and the sweep must still get an outcome for it instead of a traceback. submitit
also learns a job's state only from ``sacct``: on a cluster without accounting storage
every call fails, the state stays UNKNOWN, and a job that died without a result is waited
for forever. Here a job's state comes from ``sacct`` when accounting works, else from
``squeue --states=all`` (slurmctld keeps ended jobs for ``MinJobAge`` seconds); a job that
SLURM no longer knows at all counts as ended.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: states of a job that has not ended (it may run, or run again after a requeue)
UNFINISHED = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
     "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
)  # fmt: skip
#: ended states of a job stopped from outside (its run was cut short, not broken): ``interrupted``
STOPPED = frozenset({"TIMEOUT", "PREEMPTED", "CANCELLED", "DEADLINE"})
#: a job SLURM no longer lists (purged after MinJobAge) after this many polls in a row has ended
GONE_AFTER_POLLS = 3


@dataclass
class Ended:
    """One submitted job at its end: the callable's return, or why there is none."""

    job_id: str
    state: str
    result: Any = None
    error: str | None = None
    log: str | None = None

    @property
    def status(self) -> str:
        """The ``results.json`` status of a job that ended without a result."""
        return "interrupted" if self.state in STOPPED else "failed"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@functools.lru_cache(maxsize=1)
def accounting_works() -> bool:
    """Whether ``sacct`` answers on this cluster (no accounting storage: it cannot)."""
    try:
        proc = _run(["sacct", "-n", "-P", "-X", "-o", "JobID", "-j", "1"])
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "disabled" not in proc.stderr


def _expand(job_id: str) -> list[str]:
    """``123_[0-2,5]`` -> ``123_0 ... 123_5`` (a pending array's elements on one line)."""
    from submitit.slurm.slurm import read_job_id

    out = []
    for parts in read_job_id(job_id):
        if len(parts) == 3:
            out += [f"{parts[0]}_{i}" for i in range(int(parts[1]), int(parts[2]) + 1)]
        else:
            out.append("_".join(parts))
    return out


def parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines (sacct -P or squeue -o '%i|%T') as id -> state; a later line wins.

    sacct lists a requeued job once per start: the last line is the current one. A state
    such as ``CANCELLED by 0`` is kept as its first word; job steps (``123.batch``) are skipped.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        if not job_id or "." in job_id or not state:
            continue
        for jid in _expand(job_id):
            states[jid] = state.split()[0].upper()
    return states


def query_states(job_ids: Collection[str]) -> dict[str, str]:
    """SLURM's current state of each job (``123`` or ``123_4``); a job SLURM does not know is absent."""
    mains = sorted({j.split("_")[0] for j in job_ids})
    if not mains:
        return {}
    if accounting_works():
        cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(mains)]
    else:
        cmd = ["squeue", "--states=all", "-h", "-r", "-o", "%i|%T", "-j", ",".join(mains)]
    try:
        proc = _run(cmd)
        failure = None if proc.returncode == 0 else proc.stderr.strip()[:200]
    except (OSError, subprocess.SubprocessError) as exc:
        failure = str(exc)
    if failure is not None:
        if "Invalid job id" in failure:  # every one of them purged
            return {}
        # the controller is down or busy: the jobs may still run, so the sweep keeps waiting
        log.warning("%s failed (%s): asking again", cmd[0], failure)
        return {j: "UNKNOWN_QUERY_FAILED" for j in job_ids}
    return parse_states(proc.stdout)


def _ended(job: Any, state: str) -> Ended:
    """What an ended job left: its result when it wrote one, else the reason it did not."""
    log_path = str(job.paths.stdout)
    if job.paths.result_pickle.exists():
        try:
            return Ended(job.job_id, state, result=job.results()[0], log=log_path)
        except Exception as exc:  # the callable raised: submitit pickled its traceback
            first = str(exc).strip().splitlines()
            reason = next((ln for ln in reversed(first) if ln.strip() and not ln.startswith(("-", "You can"))), "")
            return Ended(job.job_id, state, error=f"{type(exc).__name__}: {reason}", log=log_path)
    return Ended(
        job.job_id,
        state,
        error=f"SLURM job {job.job_id} ended {state} without a result (log: {log_path})",
        log=log_path,
    )


def wait_for(jobs: Sequence[Any], max_poll_s: float = 30.0) -> list[Ended]:
    """Wait until every job has ended; one :class:`Ended` per job, in order.

    SLURM jobs end when SLURM says so (a result file alone is not the end: the job may
    have been requeued); submitit's local jobs when their process ends. SLURM is asked
    every second at first, then less often (``1 + elapsed/10`` seconds, at most
    ``max_poll_s``), one ``sacct``/``squeue`` call for all jobs, so a long sweep does not
    load the controller.
    """
    from submitit.slurm.slurm import SlurmJob

    done: dict[str, Ended] = {}
    for job in jobs:
        if not isinstance(job, SlurmJob):
            try:
                done[job.job_id] = Ended(job.job_id, "LOCAL", result=job.results()[0], log=str(job.paths.stdout))
            except Exception as exc:
                done[job.job_id] = Ended(job.job_id, "LOCAL", error=f"{type(exc).__name__}: {exc}")
    waiting = {j.job_id: j for j in jobs if j.job_id not in done}
    unseen: dict[str, int] = {}
    start = time.time()
    while waiting:
        states = query_states(waiting)
        for jid, job in list(waiting.items()):
            state = states.get(jid)
            if state is None:
                unseen[jid] = unseen.get(jid, 0) + 1
                if unseen[jid] < GONE_AFTER_POLLS:
                    continue
                state = "UNKNOWN"  # purged: SLURM forgot it (its result, if any, is on disk)
            elif state in UNFINISHED or state.startswith("UNKNOWN_"):
                unseen.pop(jid, None)
                continue
            done[jid] = _ended(job, state)
            del waiting[jid]
            log.info("SLURM job %s ended: %s", jid, state)
        if waiting:
            time.sleep(min(max_poll_s, 1.0 + (time.time() - start) / 10))
    return [done[j.job_id] for j in jobs]
