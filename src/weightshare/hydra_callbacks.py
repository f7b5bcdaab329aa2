"""Hydra callbacks: a summary table printed at the end of every multirun, and its exit status.

A sweep's jobs may run in other processes (joblib) or on other hosts (SLURM); the summary
reads their ``results.json`` files from the sweep directory, so it works for every launcher.

A failed job does not stop the sweep (the task records it and returns), so the sweep itself
must say that it did not fully succeed: under the table each distinct error is printed once
with the jobs it hit, then one ``error:`` line on stderr, and the process exits with status 1
when any job ended in a status other than :data:`DONE_STATUSES`. That is raised as :class:`SystemExit` from
``on_multirun_end`` because Hydra turns any ``Exception`` a callback raises into a warning
(``Callbacks._notify``) and the multirun would exit 0; ``SystemExit`` passes through it and
through ``hydra.main``, after the table has been printed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from weightshare.augment.validate import EVAL_VARIANTS
from weightshare.job import RETRIED_AS
from weightshare.results import find_jobs, read_json, read_overrides

log = logging.getLogger("weightshare")

#: the statuses of a job that did its work (a pruned trial was stopped by the sweeper on purpose);
#: any other makes the multirun exit 1: failed, diverged, interrupted (SIGTERM), running (killed
#: without a word), corrupt (results.json does not parse), missing (a job dir without one)
#: A job whose record names a retry (``retried_as``, written by the Optuna sweeper for a trial it
#: re-ran) counts as done when that retry is done: the work was done once, by the retry.
DONE_STATUSES = ("completed", "pruned")
# the order of the verdict's counts; a status outside this list (none today) is counted last
_STATUS_ORDER = ("failed", "diverged", "interrupted", "refused", "running", "corrupt", "missing")
_NO_RESULT = {
    "corrupt": "results.json unreadable",
    "missing": "no results.json (killed before it wrote one?)",
    "running": "still 'running' when the sweep ended (killed without a word?)",
}
#: the final validation accuracy of every evaluation variant, as results.json names them
COLUMNS = tuple("val/acc" if v == "clean" else f"val/{v}/acc" for v in EVAL_VARIANTS)


#: below this much free space (or 5% of the filesystem) a job without a final record is blamed on a full disk
LOW_SPACE_BYTES = 64 * 2**20


def low_space_note(directory: Path) -> str | None:
    """A note naming ENOSPC when the filesystem holding ``directory`` is (nearly) full, else None.

    Why: a job that found the disk full may not have been able to write even its failure
    (``results.json`` stays ``running`` or is missing); the sweep's summary still says why.
    """
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    if free >= LOW_SPACE_BYTES and free >= 0.05 * total:
        return None
    return f"only {free / 2**20:.1f} MiB free on the disk holding {directory}: a full disk (ENOSPC) may have stopped it"


def _overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (Hydra's .hydra/overrides.yaml), as key -> value."""
    out = {}
    for item in read_overrides(job_dir) or []:
        key, _, value = str(item).partition("=")
        if not key.lstrip("+~").startswith(("hydra.", "trial.")):
            out[key.lstrip("+~")] = value
    return out


def _aug_label(aug: str, level: Any) -> str:
    if aug in ("none", "mixed") or not isinstance(level, (int, float)):
        return str(aug)
    return f"{aug} {level:g}"


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of the sweep (:func:`~weightshare.results.find_jobs`, job number order).

    A job without ``results.json`` is ``missing``, one whose ``results.json`` does not parse ``corrupt``.
    A job whose resume was refused (another run's config, a damaged checkpoint) is ``refused``
    with the reason; its record otherwise stays that of its earlier run.
    """
    rows = []
    space_note: str | None = None
    for job_dir in find_jobs(sweep_dir)[0]:
        path = job_dir / "results.json"
        res = read_json(path) or {"status": "corrupt" if path.is_file() else "missing"}
        if res.get("refused"):
            res = {**res, "status": "refused", "error": res["refused"]}
        if res.get("status") in _NO_RESULT and not res.get("error"):
            space_note = space_note or low_space_note(sweep_dir) or ""
            if space_note:
                res = {**res, "error": f"{_NO_RESULT[res['status']]}; {space_note}"}
        ident = res.get("identity") or {}
        final = res.get("final") or {}
        aug = ident.get("aug_type", "?")
        level = ident.get("aug_level")
        rows.append(
            {
                "job": str(path.parent.relative_to(sweep_dir)),
                "model": ident.get("model", "?"),
                "data": ident.get("data", "?"),
                "aug": _aug_label(aug, level),
                "fold": ident.get("fold", "?") if ident.get("split") != "standard" else "-",
                "status": res.get("status", "?"),
                "error": res.get("error") or _NO_RESULT.get(res.get("status", "")),
                "epochs": res.get("epochs_completed", ""),
                **{c: final.get(c) for c in COLUMNS},
                "overrides": _overrides(path.parent),
                RETRIED_AS: res.get(RETRIED_AS),
            }
        )
    return rows


def not_done(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose work was not done: a status outside :data:`DONE_STATUSES`, unless a retry
    that is in :data:`DONE_STATUSES` did it (``retried_as``)."""
    status = {r["job"]: r["status"] for r in rows}
    return [
        r for r in rows if r["status"] not in DONE_STATUSES and status.get(r.get(RETRIED_AS) or "") not in DONE_STATUSES
    ]


def varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs: what the sweep swept."""
    keys: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r["overrides"].items():
            keys.setdefault(k, set()).add(v)
    return [k for k, values in keys.items() if len(values) > 1 or any(k not in r["overrides"] for r in rows)]


def error_list(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """``[(error, [job, ...]), ...]``: each distinct error of a failed job once, first seen first.

    A failed job without a recorded message counts as the error ``"<status>, no error recorded"``.
    """
    errors: dict[str, list[str]] = {}
    for r in not_done(rows):
        message = " ".join(str(r.get("error") or f"{r['status']}, no error recorded").split())
        errors.setdefault(message, []).append(r["job"])
    return list(errors.items())


def print_sweep_table(sweep_dir: Path) -> list[dict[str, Any]]:
    """Print the table and, under it, each distinct error with its jobs; returns the rows.

    A failed job's status cell names its error's number in that list (``failed [1]``).
    """
    from rich.console import Console
    from rich.table import Table

    rows = sweep_rows(sweep_dir)
    errors = error_list(rows)
    number = {job: i for i, (_, jobs) in enumerate(errors, 1) for job in jobs}
    swept = [k for k in varying_overrides(rows) if k not in ("model", "data.fold")]
    for r in rows:
        r.update({k: r["overrides"].get(k, "") for k in swept})
    table = Table(title=f"sweep {sweep_dir}")
    keys = ["job", "model", "data", "aug", "fold", *swept, "status", "epochs", *COLUMNS]
    for k in keys:
        table.add_column(k.replace("val/", "").replace("/acc", " acc"), justify="right" if k in COLUMNS else "left")
    for row in rows:
        r = {**row, "status": f"{row['status']} [{number[row['job']]}]"} if row["job"] in number else row
        if row.get(RETRIED_AS) and row["job"] not in number:
            r = {**r, "status": f"{row['status']}, retried as {row[RETRIED_AS]}"}
        cells = [f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k] if r[k] is not None else "-") for k in keys]
        table.add_row(*cells)
    # a log file or pipe gets the full width rather than an 80-column squeeze
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for i, (message, jobs) in enumerate(errors, 1):
        label = "job" if len(jobs) == 1 else "jobs"
        # markup off: an error message may hold [brackets] that rich would read as styles
        console.print(f"[{i}] {label} {', '.join(jobs)}: {message}", markup=False, highlight=False)
    return rows


def sweep_failure(rows: list[dict[str, Any]]) -> str | None:
    """The one-line verdict of a sweep with failed jobs; None when every job is :data:`DONE_STATUSES`."""
    failed = not_done(rows)
    if not failed:
        return None
    counts = Counter(r["status"] for r in failed)
    order = [*_STATUS_ORDER, *sorted(set(counts) - set(_STATUS_ORDER), key=str)]
    by_status = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    return f"{len(failed)} of {len(rows)} jobs did not complete ({by_status}); their errors are listed under the table"


class SweepSummary(Callback):
    """Print every job's status and final accuracies, then the report command (when a job completed);
    exit 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = print_sweep_table(sweep_dir)
        verdict = sweep_failure(rows)
        if any(r["status"] == "completed" for r in rows):  # a report of no completed job is empty
            print(f"tables and figures of this sweep: weightshare-report {sweep_dir}", flush=True)
        if verdict is not None:
            sys.stdout.flush()
            print(f"error: {verdict}", file=sys.stderr)
            raise SystemExit(1)  # not an Exception: Hydra would turn that into a warning
