"""What a job running under SLURM knows about itself, from the environment SLURM gives it.

Why: a requeued job (``scontrol requeue``, a preemption, submitit's checkpoint at a time
limit) is started again with the same command and config; only ``SLURM_RESTART_COUNT``
says it ran before, so that is what makes it resume from its last checkpoint instead of
starting over. The job id, array index and log path go into ``results.json`` so a failed
job's record leads to its log; the CPUs SLURM gave the task set torch's thread count
(torch would otherwise start one thread per core of the node, oversubscribing it).
"""

from __future__ import annotations

import os
from typing import Any


def in_slurm_job() -> bool:
    """Whether this process runs inside a SLURM allocation."""
    return "SLURM_JOB_ID" in os.environ


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def restart_count() -> int:
    """How many times SLURM has restarted (requeued) this job; 0 outside SLURM."""
    return _int_env("SLURM_RESTART_COUNT") or 0


def requeued() -> bool:
    """This is a SLURM job that ran before and was requeued: it resumes its run directory."""
    return in_slurm_job() and restart_count() > 0


def cpus_per_task() -> int | None:
    """The CPUs SLURM gave each task (``--cpus-per-task``); None outside SLURM or when not set."""
    return _int_env("SLURM_CPUS_PER_TASK") if in_slurm_job() else None


def torch_threads(configured: int | None) -> int | None:
    """The torch thread count of a run: ``threads`` from the config, else the task's SLURM CPUs."""
    return configured or cpus_per_task()


def _log_path() -> str | None:
    """submitit's stdout file of this job (None when submitit did not start it)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # a job started by hand with SUBMITIT_* left over: no log path, not a failure
        return None


def job_record() -> dict[str, Any] | None:
    """``results.json``'s ``slurm`` entry: job id, array job id and index, restarts, node, log path."""
    if not in_slurm_job():
        return None
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    index = _int_env("SLURM_ARRAY_TASK_ID")
    return {
        "job_id": f"{array_job}_{index}" if array_job and index is not None else os.environ["SLURM_JOB_ID"],
        "array_job_id": array_job,
        "array_index": index,
        "restart_count": restart_count(),
        "node": os.environ.get("SLURMD_NODENAME"),
        "log": _log_path(),
    }
