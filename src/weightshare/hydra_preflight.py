"""A Hydra callback that checks, before the first job of a multirun, that its launcher can run here.

Why: a SLURM launcher on a machine without SLURM, or with settings the cluster cannot
satisfy, otherwise ends in a submitit or ``sbatch`` traceback after the sweep has been
composed, or in jobs that pend forever. A user who typed it wants one line naming the
setting, its value and what to use instead, and exit status 2, before anything is submitted.

Both SLURM launchers are checked: ``hydra/launcher=slurm`` (and ``slurm_cpu``) and
``hydra/launcher=packed hydra.launcher.executor=slurm``. The cluster's partitions come from
``scontrol`` (:mod:`weightshare.slurm.partitions`). The joblib plugin's own ``n_jobs=-1``
(``hydra/launcher=joblib``; ``parallel`` is the project's preset) is refused the same way.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: exit status of a sweep that cannot start (the same as a single run's config error)
_USER_ERROR_EXIT = 2
#: ``_target_`` suffixes of the launchers that submit to SLURM with every setting below
_SLURM_TARGETS = ("submitit_launcher.SlurmLauncher", "weightshare_slurm_launcher.slurm_launcher.SlurmLauncher")
_PACKED_TARGET = "weightshare_packed_launcher.packed_launcher.PackedLauncher"


def slurm_available() -> bool:
    """Whether this machine can submit to SLURM: ``sbatch``, ``srun`` and ``scontrol`` on ``PATH``."""
    from weightshare.slurm.partitions import missing_commands

    return not missing_commands()


def slurm_launcher_name(config: DictConfig) -> str | None:
    """How the user asked for SLURM (for messages), or None when the launcher does not submit to it."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith(_SLURM_TARGETS):
        return "hydra/launcher=slurm"
    if target.endswith(_PACKED_TARGET) and launcher.get("executor") == "slurm":
        return "hydra/launcher=packed hydra.launcher.executor=slurm"
    return None


def launcher_problems(config: DictConfig) -> list[str]:
    """One-line reasons why the configured launcher cannot run on this machine (empty: it can)."""
    from weightshare.slurm.partitions import Request, missing_commands, query_cluster, request_problems

    target = str(config.hydra.launcher.get("_target_", ""))
    n_jobs = config.hydra.launcher.get("n_jobs")
    if target.endswith("joblib_launcher.JoblibLauncher") and isinstance(n_jobs, int) and n_jobs < 1:
        # the joblib plugin's own config (hydra/launcher=joblib) says n_jobs=-1: one job per
        # core, each training with every core's threads
        return [
            f"hydra.launcher.n_jobs={n_jobs} starts one job per core, each using every core; "
            "use hydra/launcher=parallel (2 jobs) or set hydra.launcher.n_jobs=N (N x threads <= cores)"
        ]
    name = slurm_launcher_name(config)
    if name is None:
        return []
    missing = missing_commands()
    if missing:
        return [
            f"{name} needs SLURM, and this machine has none (no {'/'.join(missing)}); "
            "use hydra/launcher=local_submitit (or hydra.launcher.executor=submitit_local) to run the SLURM "
            "code path as local processes, or hydra/launcher=parallel"
        ]
    p = config.hydra.launcher
    req = Request(
        partition=p.get("partition"),
        nodes=int(p.get("nodes") or 1),
        tasks_per_node=int(p.get("tasks_per_node") or 1),
        cpus_per_task=p.get("cpus_per_task"),
        gpus_per_node=p.get("gpus_per_node"),
        mem_gb=p.get("mem_gb"),
        timeout_min=int(p.get("timeout_min")),
        signal_delay_s=int(p.get("signal_delay_s", 120)),
    )
    try:
        partitions = query_cluster()
    except (RuntimeError, OSError) as exc:
        return [f"{name}: SLURM does not answer ({exc})"]
    return request_problems(req, partitions)


def launcher_problem(config: DictConfig) -> str | None:
    """The first of :func:`launcher_problems`, or None."""
    problems = launcher_problems(config)
    return problems[0] if problems else None


class LauncherPreflight(Callback):
    """``on_multirun_start``: each reason the launcher cannot run here is a one-line error; exit status 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        problems = launcher_problems(config)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            sys.exit(_USER_ERROR_EXIT)
