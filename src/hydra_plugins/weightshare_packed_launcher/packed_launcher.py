"""The Hydra ``Launcher`` plugin class (``hydra/launcher=packed``).

Hydra's plugin scan imports this module at every start, so the work (composing, grouping,
training packs, submitit) lives in the ``_plan``, ``_run`` and ``_submit`` modules, imported
on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class PackedLauncher(Launcher):
    """Compose every job, group them by ``weightshare.packed.pack_key``, train each group as one pack.

    Arguments are those of ``PackedLauncherConf`` (``pack_size``, ``executor`` and the
    submitit settings). Returns one ``JobReturn`` per job in job order, like every launcher,
    so sweepers and the end-of-sweep callbacks work unchanged.
    """

    def __init__(self, pack_size: int | None = None, executor: str = "local", **submitit: Any) -> None:
        self.pack_size = pack_size
        self.executor = executor
        self.submitit = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                         for k, v in submitit.items()}  # fmt: skip
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ._plan import check_options

        check_options(self.pack_size, self.executor)
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ._run import launch

        return launch(self, job_overrides, initial_job_idx)

    def __call__(self, unit: Any, singleton_state: dict[type, Singleton]) -> list[tuple[int, JobReturn]]:
        """Run one pack or single job inside a submitit job (the callable submitit pickles)."""
        from ._submit import run_submitted_unit

        return run_submitted_unit(self, unit, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On a SLURM time limit or preemption, submitit requeues the same unit."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
