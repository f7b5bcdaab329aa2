"""Sweep report: the paper's tables, differences to the paper, plots and the failure list.

``python -m weightshare.report DIR [DIR ...] [--out OUT] [--reference-dir PATH] [--no-plots]
[--fd-layers all|first] [--per-trial]`` (console script ``weightshare-report``) reads every job
under the given directories (:mod:`.collect`), builds the tables (:mod:`.tables`) next to the
paper's numbers (:mod:`.reference`, shipped as package data) and writes into ``OUT`` (default
``<first DIR>/report/``):

- ``report.md``: a banner when the jobs' budget is not the protocol's (:mod:`.budget`: data
  limits, epochs, patience, folds; those cells read ``n/c`` instead of a difference); one
  section per Optuna search (:mod:`.search`: trials by objective, the lr x depth x model grid,
  Optuna's figures), whose trials are left out of the tables unless ``--per-trial``; one
  section per data x augmentation-type table, each in the three labelled
  conventions, cells ``measured (paper, measured - paper)``, n folds per cell; then one section
  per VCP group (:mod:`.vcp`: FCN accuracy vs connectivity, Figures C.1-C.2), which replaces
  the single-row tables of a connectivity sweep; then the missing and failed jobs (and why the
  list may be incomplete) and any warnings; then the plots;
- ``tables/<data>_<aug_type>[_<setting>]_<convention>.csv``: wide tables in the paper's layout,
  ``tables/all_long.csv``: every cell of every table in long form (columns in :mod:`.tables`);
  ``tables/vcp_<data>_<aug_type>_<level>[_<setting>]_<convention>.csv`` and
  ``tables/vcp_long.csv``: the VCP view, when the sweep has one;
- ``failures.csv``: jobs that are not completed (status, identity, error, directory, overrides)
  and completed jobs with a note (e.g. no ``metrics.csv``);
- ``tables/search_<study>_trials.csv`` (and ``_grid.csv`` for a grid search);
- ``plots/*.png`` (:mod:`.figures`, :mod:`.figures_runs` for one run, :mod:`.search_figures`)
  unless ``plots=False``; every figure of a reduced budget says so in its title.

The writer is :mod:`.write`; this package's namespace re-exports its entry points.
"""

from weightshare.report.collect import load_sweep
from weightshare.report.write import FAILURE_COLUMNS, Report, ReportTable, failure_list, render_markdown, write_report

__all__ = ["FAILURE_COLUMNS", "Report", "ReportTable", "failure_list", "load_sweep", "render_markdown", "write_report"]
