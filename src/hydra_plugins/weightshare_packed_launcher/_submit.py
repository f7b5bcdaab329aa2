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
    """Submit every unit as one job (an array), wait, and collect the members' returns."""
    executor = executor_for(launcher)
    payload: list[Unit] = [(kind, [(m.idx, m.overrides, m.reason) for m in members]) for kind, members in units]
    log.info("submitit '%s': %d job(s) for %s", launcher.executor, len(payload), launcher.config.hydra.sweep.dir)
    jobs = executor.map_array(launcher, payload, [Singleton.get_state()] * len(payload))
    results: list[tuple[int, JobReturn]] = []
    for (kind, members), job in zip(units, jobs):
        try:
            results.extend(job.results()[0])
        except Exception as exc:  # the submitted job itself died: its members still get a status
            log.error("submitit job %s (%s of jobs %s) failed: %s", job.job_id, kind, [m.idx for m in members], exc)
            for m in members:
                ensure_recorded(m, f"the submitit job {job.job_id} failed: {type(exc).__name__}: {exc}", "failed")
                results.append((m.idx, _failed_return(m, exc)))
    return results


def _failed_return(member: Member, exc: Exception) -> JobReturn:
    ret = JobReturn(overrides=member.overrides, cfg=member.task_cfg, working_dir=os.getcwd())
    with hydra_config_of(member.config):
        from hydra.core.hydra_config import HydraConfig

        ret.hydra_cfg = HydraConfig.instance().cfg
    ret.task_name = JobRuntime.instance().get("name")
    ret.status = JobStatus.FAILED
    ret.return_value = exc
    return ret


def run_submitted_unit(
    launcher: Any, unit: Unit, singleton_state: dict[type, Singleton]
) -> list[tuple[int, JobReturn]]:
    """Inside the submitted job: compose the unit's members again and run them here."""
    import submitit

    Singleton.set_state(singleton_state)
    setup_globals()
    kind, jobs = unit
    job_id = submitit.JobEnvironment().job_id
    members = []
    for idx, overrides, reason in jobs:
        member = prepare(compose(launcher, overrides, idx, job_id=job_id), idx, overrides)
        member.reason = reason
        members.append(member)
    if kind == PACK:
        log.info("submitit job %s: pack of jobs %s", job_id, [m.idx for m in members])
    return run_unit(launcher, kind, members)
