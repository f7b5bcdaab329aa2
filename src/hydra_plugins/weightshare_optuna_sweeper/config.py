"""Config schema of ``hydra/sweeper=optuna``, registered in Hydra's ConfigStore.

The layout follows hydra-optuna-sweeper 1.2 (``params``, ``direction``, ``n_trials``,
``n_jobs``, ``sampler``, ``storage``, ``study_name``, ``max_failure_rate``, ``pruner``,
``custom_search_space``) so existing sweep configs keep working, with the parameters of
Optuna 4/5 (the published plugin pins Optuna < 3). Samplers and pruners are ``_target_``
configs; their groups (``hydra/sweeper/sampler=grid``, ``hydra/sweeper/pruner=median``) only
carry defaults, and any Optuna sampler or pruner can be named with ``_target_`` directly.

This module is imported by Hydra's plugin scan at every start, so it imports nothing heavy.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PROVIDER = "weightshare_optuna_sweeper"


@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 0
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True  # trials of one batch run at once: do not propose the same point


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 0


@dataclass
class GridSamplerConfig(SamplerConfig):
    """The grid is built from the ``choice``/``range`` params; ``seed`` shuffles the visiting order."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = 0


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """Needs the ``cmaes`` package (``pip install cmaes``)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = 0
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    popsize: int | None = None
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """Multi-objective (``direction: [maximize, minimize]``)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = 0
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NopPrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig:
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` when ``hydra/sweeper=optuna``.

    - ``n_trials`` counts the trials of the whole study: rerunning the same command (same
      storage and study name) resumes it and runs only what is missing; a grid runs at most
      its number of points. ``n_jobs`` trials are asked at once and launched as one batch
      through ``hydra/launcher`` (basic: one after the other; joblib/submitit: in parallel).
    - ``storage``: null is ``sqlite:///<sweep dir>/optuna.db``; any SQLAlchemy URL works
      (several hosts can share one study). It is passed to every job as an override, so put
      no password in it (use ~/.pgpass or the driver's environment variables).
    - ``study_name``: null derives ``<job name>-<hash of search space, fixed overrides and
      directions>``, the same for the same command (``resume=true`` is left out of it). The
      ``hparams_search`` configs put the sweep in ``outputs/<task>/search/<study name>/``, so
      the same command resumes its study there; a name given here starts (or resumes) that
      study, in its own directory.
    - ``max_failure_rate``: share of ``n_trials`` that may fail (job raised or returned no
      number) before the sweep stops with an error; 0 stops at the first failure.
    - ``monitor``: metric the jobs report each epoch for pruning (null: ``optimized_metric``).
    - ``trial_node``: config node that receives the trial identity (null: none is passed).
    - ``heartbeat_interval``/``grace_period`` (s): the sweeper beats for its running trials,
      so a sweeper on another host can tell a dead sweeper's trials and re-run them.
    """

    _target_: str = "hydra_plugins.weightshare_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # sampler and pruner reach the sweeper as configs: it instantiates them itself (the grid
    # needs the search space, the pruner config is stored in the study for the jobs)
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])

    sampler: Any = MISSING
    pruner: Any = None  # null: no pruning (Optuna itself would default to MedianPruner)
    direction: Any = "minimize"
    storage: str | None = None
    study_name: str | None = None
    load_if_exists: bool = True
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.25
    params: dict[str, str] | None = None
    custom_search_space: str | None = None
    monitor: str | None = None
    trial_node: str | None = "trial"
    heartbeat_interval: int | None = 60
    grace_period: int | None = None


def register() -> None:
    """Store the sweeper, sampler and pruner configs (idempotent: the plugin scan may rerun it)."""
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
    samplers = {
        "tpe": TPESamplerConfig,
        "random": RandomSamplerConfig,
        "grid": GridSamplerConfig,
        "cmaes": CmaEsSamplerConfig,
        "nsgaii": NSGAIISamplerConfig,
    }
    for name, node in samplers.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider=PROVIDER)
    pruners = {
        "nop": NopPrunerConfig,
        "median": MedianPrunerConfig,
        "percentile": PercentilePrunerConfig,
        "successive_halving": SuccessiveHalvingPrunerConfig,
        "hyperband": HyperbandPrunerConfig,
    }
    for name, node in pruners.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider=PROVIDER)


register()
