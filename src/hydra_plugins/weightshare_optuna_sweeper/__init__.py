"""Hydra sweeper on current Optuna (``hydra/sweeper=optuna``), with pruning across processes.

Jobs talk to their trial with ``weightshare.trial_protocol.report_and_maybe_prune`` (no
Lightning needed) or the Lightning callback
``weightshare.callbacks.optuna_pruning.OptunaPruningCallback``; the contract lives in the
library, which never imports this plugin.

This ``__init__`` imports nothing heavy: Hydra's plugin scan imports the package at every start
of every process (also ``--help``), and Optuna with its storage layer costs a second there. It
only registers the ``${optuna_study:...}`` resolver (``_study``), which ``hydra.sweep.dir`` of
the ``hparams_search`` configs uses, so it exists wherever Hydra composes or unpickles a config.
"""

from typing import Any

from omegaconf import OmegaConf


def _optuna_study(job_name: Any, name: Any, direction: Any, params: Any, task_overrides: Any) -> str:
    from ._study import resolve_study_name

    return resolve_study_name(job_name, name, direction, params, task_overrides)


if not OmegaConf.has_resolver("optuna_study"):
    # cached: every job must see the sweep's value, not one computed from its own overrides
    OmegaConf.register_new_resolver("optuna_study", _optuna_study, use_cache=True)
