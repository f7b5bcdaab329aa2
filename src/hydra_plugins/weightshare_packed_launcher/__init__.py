"""Hydra launcher ``hydra/launcher=packed``: the jobs of a multirun trained as packs (K single runs as one network).

Hydra's plugin scan imports this package at every start, so it imports nothing here; the
launcher class is in ``packed_launcher`` and the work in ``_plan``, ``_run`` and ``_submit``
(modules starting with ``_`` are skipped by the scan and imported on first use).
"""
