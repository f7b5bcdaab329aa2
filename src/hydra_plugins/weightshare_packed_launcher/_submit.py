"""One submitit job per pack (``executor=slurm``: one SLURM job with one GPU; ``submitit_local``).

The launching process composes and groups the jobs (the grouping needs every config); each
submitted job gets its unit's overrides and composes its members again, as Hydra's own
submitit launcher does: ``Singleton`` state (the config loader, ``JobRuntime``) travels with
the pickled launcher, and the sweep config's cache keeps ``${now:...}`` the same.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, setup_globals

from ._plan import PACK, Member, compose, hydra_config_of, prepare
from ._run import ensure_recorded, run_unit

log = logging.getLogger(__name__)

#: keys every submitit executor takes (submitit's generic parameters)
GENERIC = ("timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "name",
           "stderr_to_stdout")  # fmt: skip
#: SLURM-only keys, passed as ``slurm_<key>``
SLURM_ONLY = ("partition", "qos", "account", "constraint", "comment", "exclude", "gres", "signal_delay_s",
              "array_parallelism", "setup", "additional_parameters")  # fmt: skip

#: what a submitted job gets: (kind, [(job number, overrides, reason), ...])
Unit = tuple[str, list[tuple[int, list[str], str | None]]]


def executor_for(launcher: Any) -> Any:
    """A submitit executor with the launcher's settings (the slurm-only ones for SLURM only)."""
    import submitit

    cluster = "slurm" if launcher.executor == "slurm" else "local"
    params = dict(launcher.submitit)
    executor = submitit.AutoExecutor(
        cluster=cluster,
        folder=params["submitit_folder"],
        **{f"{cluster}_max_num_timeout": params["max_num_timeout"]},
    )
    update = {k: params[k] for k in GENERIC if params.get(k) is not None}
    if cluster == "slurm":
        update.update({f"slurm_{k}": params[k] for k in SLURM_ONLY if params.get(k) is not None})
    executor.update_parameters(**update)
    return executor


def submit_units(launcher: Any, units: Sequence[tuple[str, list[Member]]]) -> list[tuple[int, JobReturn]]:
    """Submit every unit as one job (an array), wait until SLURM ends each, collect the members' returns.

    A job that ended without a result (killed, out of memory, a time limit's SIGKILL) or
    whose callable raised gives each of its members a final status in ``results.json``
    (``interrupted`` when SLURM stopped it, else ``failed``, with the reason and the log) and
    an outcome, never a traceback that ends the sweep (:mod:`weightshare.slurm.wait`).
    """
    from weightshare.slurm.wait import wait_for

    executor = executor_for(launcher)
    payload: list[Unit] = [(kind, [(m.idx, m.overrides, m.reason) for m in members]) for kind, members in units]
    log.info("submitit '%s': %d job(s) for %s", launcher.executor, len(payload), launcher.config.hydra.sweep.dir)
    jobs = executor.map_array(launcher, payload, [Singleton.get_state()] * len(payload))
    results: list[tuple[int, JobReturn]] = []
    for (kind, members), job, ended in zip(units, jobs, wait_for(jobs)):
        returned = dict(ended.result or [])
        for m in members:
            ret = returned.get(m.idx)
            if ret is not None and ret.status == JobStatus.COMPLETED:
                results.append((m.idx, ret))
                continue
            failure = getattr(ret, "_return_value", None)  # a FAILED return raises on .return_value
            error = ended.error or f"{type(failure).__name__}: {failure}"
            log.error("submitit job %s (%s of jobs %s, %s): %s", job.job_id, kind, [x.idx for x in members],
                      ended.state, error)  # fmt: skip
            ensure_recorded(m, error, ended.status if ended.error else "failed")
            results.append((m.idx, ended_return(m)))
    return results


def ended_return(member: Member) -> JobReturn:
    """The ``JobReturn`` of a member that ended without a value; its ``results.json`` says how.

    Status COMPLETED with no value, as a failed job in a multirun returns: a FAILED return
    would make Hydra's sweeper re-raise it and end the sweep in a traceback.
    """
    ret = JobReturn(overrides=member.overrides, cfg=member.task_cfg, working_dir=os.getcwd())
    with hydra_config_of(member.config):
        from hydra.core.hydra_config import HydraConfig

        ret.hydra_cfg = HydraConfig.instance().cfg
    ret.task_name = JobRuntime.instance().get("name")
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret


def run_submitted_unit(
    launcher: Any, unit: Unit, singleton_state: dict[type, Singleton]
) -> list[tuple[int, JobReturn]]:
    """Inside the submitted job: compose the unit's members again and run them here.

    A SIGTERM (scancel, preemption, the end of a time limit) stops the unit with every
    unfinished member ``interrupted``, returned as outcomes so submitit writes a result; the
    ``SystemExit(143)`` would otherwise leave the job without one. submitit's own exit after
    it requeued the job passes through: the job comes back, and its members resume
    (:func:`weightshare.slurm.env.requeued`).
    """
    import submitit
    import torch

    from weightshare.job import SIGTERM_EXIT
    from weightshare.slurm.env import cpus_per_task

    Singleton.set_state(singleton_state)
    setup_globals()
    if cpus := cpus_per_task():  # the pack's threads follow the CPUs SLURM gave it (threads=... wins)
        torch.set_num_threads(cpus)
    kind, jobs = unit
    job_id = submitit.JobEnvironment().job_id
    members = []
    for idx, overrides, reason in jobs:
        member = prepare(compose(launcher, overrides, idx, job_id=job_id), idx, overrides)
        member.reason = reason
        members.append(member)
    if kind == PACK:
        log.info("submitit job %s: pack of jobs %s", job_id, [m.idx for m in members])
    try:
        return run_unit(launcher, kind, members)
    except SystemExit as exc:
        if exc.code != SIGTERM_EXIT:
            raise
        for m in members:
            ensure_recorded(m, "terminated (SIGTERM)", "interrupted")
        log.error("submitit job %s stopped by SIGTERM: jobs %s recorded", job_id, [m.idx for m in members])
        return [(m.idx, ended_return(m)) for m in members]
