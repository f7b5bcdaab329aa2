"""The report of an Optuna search: its trials by objective, the paper's grid, Optuna's own figures.

A search is read from the jobs it ran: the Optuna sweeper gives every job its trial as the
config node ``trial`` (``storage``, ``study_name``, ``trial_number``), which
:mod:`.collect` puts into the jobs frame. The jobs of one (storage, study) are one
:class:`Search`, and the study is loaded read-only from its storage: Optuna's record of the
trials (state, objective, parameters, the epoch a pruned trial stopped at) is the one
source of truth for a search, the job directories add where each trial's run lives. A sweep
directory copied elsewhere still reads: a SQLite storage that is gone is looked for as
``optuna.db`` in the directory above the trial jobs. A storage that cannot be read (a
database server out of reach) gives a note instead of a study, and the trials are then
listed from the jobs alone.

:func:`write_search` writes, per search, into ``report.md``: the study's summary, the trials
sorted by objective (best first), and, where every swept parameter is a choice and the
learning rate and depth are among them (``hparams_search=paper_grid``), the grid as an
lr x depth x model table (the paper's Appendix A), with the paper's best points
(``reference_data/paper_search_best.csv``) beside it. Into ``plots/``: Optuna's matplotlib
figures (:mod:`.search_figures`, :mod:`optuna.visualization.matplotlib`: optimisation history, slice, parameter
importances, contour of lr against depth), not hand-made ones: they are the figures an Optuna
user knows, and they follow Optuna's own handling of pruned and failed trials. A figure Optuna
cannot draw for this study (importances of fewer than two finished trials) is a note, not an
error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from weightshare.report.reference import default_reference_dir
from weightshare.report.search_figures import param_named, search_figures
from weightshare.report.tables import model_order

SEARCH_BEST_FILE = "paper_search_best.csv"
#: the Optuna trial a job ran as (columns of the jobs frame, :func:`trial_of`)
TRIAL_COLUMNS = ("study_storage", "study_name", "trial_number", "trial_monitor")
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
# the columns of :func:`trials_frame` that are not swept parameters
TRIAL_INFO = ("trial", "state", "objective", "pruned_epoch", "epochs", "job_dir")


@dataclass
class Search:
    """One Optuna study of the report: its jobs, and the study when its storage could be read."""

    storage: str
    study_name: str
    jobs: pd.DataFrame
    study: Any = None  # optuna.Study, loaded read-only
    problem: str | None = None  # why the study could not be read
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)  # :func:`trials_frame`

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in self.study_name)


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def load_study(storage: str, study_name: str, job_dirs: Sequence[str]) -> tuple[Any, str | None]:
    """``(study, None)`` or ``(None, why)``. Never creates a storage.

    A SQLite file that does not exist is not opened (SQLAlchemy would create an empty one);
    ``optuna.db`` beside the trial jobs is tried instead (a sweep directory moved or copied).
    """
    import optuna

    candidates = [storage]
    path = _sqlite_path(storage)
    if path is not None and not path.is_file():
        candidates = [f"sqlite:///{p}" for p in sorted({Path(j).parent / "optuna.db" for j in job_dirs}) if p.is_file()]
        if not candidates:
            return None, f"storage `{storage}` not found (nor an optuna.db beside the trial jobs)"
    problems = []
    for url in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.load_study(study_name=study_name, storage=url), None
        except Exception as exc:  # unreachable server, no such study, not an Optuna database
            problems.append(f"`{url}`: {type(exc).__name__}: {exc}")
    return None, "could not load the study (" + "; ".join(problems) + ")"


def find_searches(jobs: pd.DataFrame) -> list[Search]:
    """Every Optuna study the jobs ran as trials of, in order of appearance, its study loaded."""
    trial_jobs = jobs[jobs["study_name"].notna()]
    searches = []
    for (storage, name), rows in trial_jobs.groupby(["study_storage", "study_name"], sort=False):
        study, problem = load_study(str(storage), str(name), list(rows["job_dir"]))
        search = Search(str(storage), str(name), rows.reset_index(drop=True), study, problem)
        search.trials = trials_frame(search)
        searches.append(search)
    return searches


def trial_of(config: Any) -> dict[str, Any]:
    """The :data:`TRIAL_COLUMNS` of a job from its resolved config's ``trial`` node ({} outside a search).

    The Optuna sweeper gives every job its trial there (``storage``, ``study_name``,
    ``trial_number``, ``monitor``); a job of any other sweep has the node's nulls.
    """
    trial = config.get("trial") if isinstance(config, Mapping) else None
    if not isinstance(trial, Mapping) or trial.get("study_name") is None or trial.get("storage") is None:
        return {}
    return {
        "study_storage": str(trial["storage"]),
        "study_name": str(trial["study_name"]),
        "trial_number": trial.get("trial_number"),
        "trial_monitor": trial.get("monitor"),
    }


def trial_jobs(jobs: pd.DataFrame) -> pd.Series:
    """True for the jobs that are trials of an Optuna search."""
    return jobs["study_name"].notna()


def _direction(search: Search) -> str:
    if search.study is not None:
        return search.study.directions[0].name.lower()
    return "maximize"


def trials_frame(search: Search) -> pd.DataFrame:
    """One row per trial, sorted by objective (best first; pruned and failed trials after).

    Columns: ``trial``, ``state``, ``objective`` (the value Optuna recorded; for a pruned
    trial the value the job returned when the pruner stopped it), ``pruned_epoch``, one column
    per swept parameter, ``epochs`` (trained, from the job) and ``job_dir``. Without a study:
    the trial jobs with their status, ``best/val/acc`` as the objective and their lr, depth
    and model.
    """
    jobs = search.jobs
    by_number = {int(n): row for n, row in zip(jobs["trial_number"], jobs.to_dict("records")) if not math.isnan(n)}
    rows: list[dict[str, Any]] = []
    if search.study is not None:
        for trial in search.study.get_trials(deepcopy=False):
            job = by_number.get(trial.number, {})
            value = trial.value if trial.values else trial.user_attrs.get("returned_value")
            rows.append(
                {
                    "trial": trial.number,
                    "state": trial.state.name,
                    "objective": math.nan if value is None else float(value),
                    "pruned_epoch": trial.user_attrs.get("pruned_epoch"),
                    **{name: trial.params.get(name) for name in sorted(trial.distributions)},
                    "epochs": job.get("epochs_completed"),
                    "job_dir": job.get("job_dir") or trial.user_attrs.get("output_dir"),
                }
            )
    else:
        for number, job in sorted(by_number.items()):
            rows.append(
                {
                    "trial": number,
                    "state": str(job.get("status")).upper(),
                    "objective": job.get("best/val/acc", math.nan),
                    "pruned_epoch": None,
                    "optimizer.lr": job.get("lr"),
                    "model.depth": job.get("depth"),
                    "model": job.get("model"),
                    "epochs": job.get("epochs_completed"),
                    "job_dir": job.get("job_dir"),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    sign = -1.0 if _direction(search) == "maximize" else 1.0
    frame["_state"] = frame["state"].map(STATE_ORDER).fillna(5)
    frame["_value"] = sign * frame["objective"].astype(float)
    frame = frame.sort_values(["_state", "_value", "trial"], na_position="last", kind="stable")
    return frame.drop(columns=["_state", "_value"]).reset_index(drop=True)


def _fmt_value(value: Any, digits: str = ".4f") -> str:
    """A table cell: whole numbers as integers, objectives with 4 decimals, parameters with 3 digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and value.is_integer() and digits != ".4f":
        return str(int(value))
    if isinstance(value, float):
        return f"{value:{digits}}"
    return str(value)


def grid_table(search: Search) -> pd.DataFrame | None:
    """The Appendix A view: a row per learning rate, a column per (model, depth), cells the objective.

    Only for a grid: every swept parameter a choice, with the learning rate and the depth
    among them. A cell of a trial that did not complete shows its state (``pruned``,
    ``fail``); a point never run is empty.
    """
    import optuna

    if search.study is None or search.trials.empty:
        return None
    distributions: dict[str, Any] = {}
    for trial in search.study.get_trials(deepcopy=False):
        distributions.update(trial.distributions)
    categorical = optuna.distributions.CategoricalDistribution
    if not distributions or not all(isinstance(d, categorical) for d in distributions.values()):
        return None
    lr, depth = param_named(list(distributions), "lr"), param_named(list(distributions), "depth")
    if lr is None or depth is None:
        return None
    model = "model" if "model" in distributions else None
    models = model_order([str(c) for c in distributions[model].choices]) if model else [""]
    depths = sorted(distributions[depth].choices)
    lrs = sorted(distributions[lr].choices, reverse=True)
    table = pd.DataFrame({"lr": lrs})
    for m in models:
        for d in depths:
            cells = []
            for rate in lrs:
                chosen = search.trials[(search.trials[lr] == rate) & (search.trials[depth] == d)]
                if model:
                    chosen = chosen[chosen[model] == m]
                if chosen.empty:
                    cells.append("")
                    continue
                row = chosen.iloc[0]  # trials_frame sorts best first
                cells.append(_fmt_value(row["objective"]) if row["state"] == "COMPLETE" else row["state"].lower())
            label = f"{m.upper()} depth {d}" if model else f"depth {d}"
            table[label] = cells
    return table


def paper_best(data: Sequence[str], ref_dir: Path | str | None = None) -> list[str]:
    """The paper's best grid points (Appendix A) for the searched data sets, as Markdown lines."""
    path = (Path(ref_dir) if ref_dir is not None else default_reference_dir()) / SEARCH_BEST_FILE
    if not path.is_file():
        path = default_reference_dir() / SEARCH_BEST_FILE
    best = pd.read_csv(path)
    lines = []
    for name in sorted(set(data)):
        rows = best[best["data"] == name]
        if rows.empty:
            continue
        parts = [f"{r.model.upper()} depth {r.depth}, lr {r.lr:g}: {r.val_acc:.4f}" for r in rows.itertuples()]
        lines.append(f"Paper (Appendix A), best point on {name}: " + "; ".join(parts) + ".")
    return lines


def _markdown(
    frame: pd.DataFrame, columns: Sequence[str], headers: Sequence[str], formats: Mapping[str, str] | None = None
) -> list[str]:
    """Rows of ``frame`` as a Markdown table; ``formats`` per column (default: 4 decimals)."""
    formats = formats or {}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in frame.to_dict("records"):
        lines.append("| " + " | ".join(_fmt_value(row.get(c), formats.get(c, ".4f")) for c in columns) + " |")
    return lines


def write_search(
    searches: Sequence[Search],
    out_dir: Path,
    *,
    plots: bool,
    subtitles: Mapping[str, str],
    roots: Sequence[Path],
    reference_dir: Path | str | None = None,
) -> tuple[list[Path], list[str]]:
    """Files written (trial CSVs, Optuna's figures) and the ``report.md`` lines of every search."""
    import matplotlib.pyplot as plt

    from weightshare.report.budget import subtitle_for

    files: list[Path] = []
    lines: list[str] = []
    for search in searches:
        data = sorted(set(search.jobs["data"].dropna()))
        subtitle = subtitle_for(subtitles, data)
        trials = search.trials
        tables = out_dir / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        csv = tables / f"search_{search.slug}_trials.csv"
        trials.to_csv(csv, index=False)
        files.append(csv)
        monitors = sorted(set(search.jobs["trial_monitor"].dropna()))
        objective = monitors[0] if len(monitors) == 1 else "objective"
        direction = _direction(search)
        lines += [f"## Search: {search.study_name}", ""]
        if search.study is None:
            lines += [
                f"Study `{search.study_name}` in `{search.storage}`: {search.problem}. The trials below come from "
                "their job directories (status, `best/val/acc`); Optuna's figures need the study.",
                "",
            ]
        else:
            counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
            ordered = sorted(counts.items(), key=lambda kv: STATE_ORDER.get(kv[0], 5))
            count_text = ", ".join(f"{n} {state.lower()}" for state, n in ordered)
            lines += [
                f"Study `{search.study_name}` in `{search.storage}`, {direction} the objective; "
                f"{len(trials)} trials ({count_text}) on {', '.join(data) or 'unknown data'}.",
                "",
            ]
            complete = trials[trials["state"] == "COMPLETE"]
            if not complete.empty:
                best = complete.iloc[0]
                params = ", ".join(f"{c}={_fmt_value(best[c], '.3g')}" for c in trials.columns if c not in TRIAL_INFO)
                lines += [
                    f"Best: trial {int(best['trial'])}, objective {_fmt_value(best['objective'])} ({params}).",
                    "",
                ]
        if subtitle:
            lines += [f"Budget: {subtitle}.", ""]
        params = [c for c in trials.columns if c not in TRIAL_INFO]
        shown = trials.assign(
            rank=range(1, len(trials) + 1),
            job=[_relative(j, roots) for j in trials.get("job_dir", [])],
            pruned_epoch=trials.get("pruned_epoch"),
        )
        pruned = "pruned_epoch" in trials.columns and trials["pruned_epoch"].notna().any()
        info = [("pruned_epoch", "pruned at epoch")] if pruned else []
        heading = f"### Trials by {objective}, best first" + (
            "; a pruned trial: its value when stopped" if pruned else ""
        )
        lines += [heading, ""]
        lines += _markdown(
            shown,
            ["rank", "trial", "state", "objective", *(c for c, _ in info), *params, "epochs", "job"],
            ["rank", "trial", "state", objective, *(h for _, h in info), *params, "epochs", "job"],
            {c: ".3g" for c in ["rank", "trial", "pruned_epoch", *params, "epochs"]},
        )
        lines += ["", f"CSV: `tables/{csv.name}`.", ""]
        grid = grid_table(search)
        if grid is not None:
            grid_csv = tables / f"search_{search.slug}_grid.csv"
            grid.to_csv(grid_csv, index=False)
            files.append(grid_csv)
            lines += ["### The grid: learning rate x depth x model (the paper's Appendix A)", ""]
            columns = list(grid.columns)
            lines += _markdown(grid.assign(lr=[f"{v:g}" for v in grid["lr"]]), columns, columns)
            best_lines = paper_best(data, reference_dir)
            if not best_lines:
                best_lines = [
                    f"The paper's Appendix A has numbers for MNIST and CIFAR-10 only, none for {', '.join(data)}."
                ]
            lines += ["", *best_lines, ""]
        if plots and search.study is not None:
            lines += ["### Optuna's figures", ""]
            for name, fig, note in search_figures(search.study, search.slug, objective, subtitle):
                if fig is None:
                    lines += [f"- {note}"]
                    continue
                path = out_dir / "plots" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                # Optuna's own layout (colour bars, grids of slices): "tight" keeps the suptitle in
                fig.savefig(path, dpi=120, bbox_inches="tight")
                plt.close(fig)
                files.append(path)
                lines += [f"![{path.stem}](plots/{name})", ""]
            lines.append("")
    return files, lines


def _relative(path: Any, roots: Sequence[Path]) -> str:
    if not isinstance(path, str):
        return ""
    for root in roots:
        try:
            return str(Path(root.name) / Path(path).relative_to(Path(root).resolve()))
        except ValueError:
            continue
    return path


__all__ = [
    "Search",
    "find_searches",
    "grid_table",
    "load_study",
    "trial_jobs",
    "trials_frame",
    "write_search",
]
