"""A Hydra callback that checks, before the first job of a multirun, that its launcher can run here.

Why: ``hydra/launcher=slurm`` on a machine without SLURM otherwise ends in a submitit
traceback ("Could not detect srun") after the sweep has been composed. A user who typed it
on a laptop wants one line naming the launcher and what to use instead. Likewise the joblib
plugin's own ``n_jobs=-1`` (``hydra/launcher=joblib``; ``parallel`` is the project's preset).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: exit status of a sweep that cannot start (the same as a single run's config error)
_USER_ERROR_EXIT = 2


def slurm_available() -> bool:
    """Whether submitit can submit to SLURM from this machine (it looks for ``srun``)."""
    import submitit

    return submitit.SlurmExecutor.affinity() >= 0


def launcher_problem(config: DictConfig) -> str | None:
    """A one-line reason why the configured launcher cannot run on this machine, else None."""
    target = str(config.hydra.launcher.get("_target_", ""))
    n_jobs = config.hydra.launcher.get("n_jobs")
    if target.endswith("joblib_launcher.JoblibLauncher") and isinstance(n_jobs, int) and n_jobs < 1:
        # the joblib plugin's own config (hydra/launcher=joblib) says n_jobs=-1: one job per
        # core, each training with every core's threads
        return (
            f"hydra.launcher.n_jobs={n_jobs} starts one job per core, each using every core; "
            "use hydra/launcher=parallel (2 jobs) or set hydra.launcher.n_jobs=N (N x threads <= cores)"
        )
    if target.endswith("submitit_launcher.SlurmLauncher") and not slurm_available():
        return (
            "hydra/launcher=slurm needs SLURM, and this machine has none (no srun); "
            "use hydra/launcher=local_submitit to run the SLURM code path as local processes, "
            "or hydra/launcher=parallel"
        )
    return None


class LauncherPreflight(Callback):
    """``on_multirun_start``: a launcher that cannot run here is a one-line error, exit status 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        problem = launcher_problem(config)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(_USER_ERROR_EXIT)
