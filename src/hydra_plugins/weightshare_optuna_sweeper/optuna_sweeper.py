"""The Hydra ``Sweeper`` plugin class (``hydra/sweeper=optuna``).

Hydra's plugin scan imports this module at every start, so the Optuna logic lives in
``_impl`` (modules starting with ``_`` are skipped by the scan) and is imported on first use.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hyperparameter search with Optuna 4/5; arguments are those of ``OptunaSweeperConf``."""

    @staticmethod
    def check_before_launch(sweeper: DictConfig, lines: list[str]) -> None:
        """The whole search checked before Hydra starts (``python train.py`` calls it; see ``_preflight``)."""
        from ._preflight import check_optuna_sweep

        check_optuna_sweep(sweeper, lines)

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        pruner: Any = None,
        load_if_exists: bool = True,
        custom_search_space: str | None = None,
        monitor: str | None = None,
        trial_node: str | None = "trial",
        heartbeat_interval: int | None = 60,
        grace_period: int | None = None,
    ) -> None:
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            storage=storage,
            study_name=study_name,
            load_if_exists=load_if_exists,
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            params=params,
            custom_search_space=custom_search_space,
            monitor=monitor,
            trial_node=trial_node,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
