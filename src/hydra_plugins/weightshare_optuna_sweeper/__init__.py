"""Hydra sweeper on current Optuna (``hydra/sweeper=optuna``), with pruning across processes.

Jobs talk to their trial with ``_protocol.report_and_maybe_prune`` (no Lightning needed) or
the Lightning callback ``weightshare.callbacks.optuna_pruning.OptunaPruningCallback``.

This ``__init__`` imports nothing: Hydra's plugin scan imports the package at every start
of every process (also ``--help``), and Optuna with its storage layer costs a second there.
Import what you use from ``hydra_plugins.weightshare_optuna_sweeper._protocol``.
"""
