"""Hydra sweeper on current Optuna (``hydra/sweeper=optuna``), with pruning across processes.

Jobs talk to their trial with :func:`report_and_maybe_prune` (no Lightning needed) or the
Lightning callback ``weightshare.callbacks.optuna_pruning.OptunaPruningCallback``.
"""

from ._protocol import TrialLink, TrialReporter, open_storage, report_and_maybe_prune

__all__ = ["TrialLink", "TrialReporter", "open_storage", "report_and_maybe_prune"]
