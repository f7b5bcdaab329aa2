"""What training budget the jobs measured, against the protocol the paper's numbers were made with.

A 3,000-image, 2-epoch sweep printed differences to the paper down to -0.51 and nothing said
that the runs were not the paper's: this module is where the report learns it. Per job,
:func:`job_budget` reads the budget from the job's resolved config (``results.json`` ``config``):
the data limits (``data.limit_train``/``limit_val``, ``trainer.limit_train_batches``/
``limit_val_batches``), ``trainer.max_epochs``, early stopping and its patience, and
``data.n_folds``. :func:`budget_differences` compares the completed jobs of each data set and
split with the protocol (``reference_data/protocol_budget.csv``: MNIST 250 epochs / patience
50, CIFAR-10 500 / 100, 5 folds; the search on the standard split 100 / 25 and 200 / 50), and
adds the folds actually run (a k-fold cell of the paper is the median over all 5 folds).

The report turns the differences into a banner at the top of ``report.md``
(:func:`banner_markdown`), a subtitle on every figure (:func:`budget_subtitles`) and a
``comparable`` flag per table cell (:func:`mark_comparable`): a difference to the paper of a
cell measured under another budget is shown as ``n/c`` (not comparable), never as a number.

Data sets without a protocol entry (``synthetic``, ``digits``) have no paper numbers to
compare with and are not checked. A job whose ``results.json`` has no config (written by an
older version) has an unknown budget: it is not counted as a difference, and the banner says
how many such jobs there are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from weightshare.report.reference import default_reference_dir
from weightshare.report.tables import CELL, with_shared_level_zero
from weightshare.results import _lookup  # the one dotted-key lookup of a config read back from disk

PROTOCOL_FILE = "protocol_budget.csv"

#: budget column of the jobs frame -> dotted key of the resolved run config
BUDGET_KEYS: dict[str, str] = {
    "budget/limit_train": "data.limit_train",
    "budget/limit_val": "data.limit_val",
    "budget/limit_train_batches": "trainer.limit_train_batches",
    "budget/limit_val_batches": "trainer.limit_val_batches",
    "budget/max_epochs": "trainer.max_epochs",
    "budget/early_stopping": "callbacks.early_stopping.enabled",
    "budget/patience": "callbacks.early_stopping.patience",
    "budget/n_folds": "data.n_folds",
}
#: 1.0 where the job's config recorded its budget, 0.0 where it did not (budget unknown)
KNOWN_COLUMN = "budget/known"
BUDGET_COLUMNS = (KNOWN_COLUMN, *BUDGET_KEYS)


def number_or_nan(value: Any) -> float:
    """A float for numbers (and numeric strings), NaN for anything else (None: no limit, dicts, text)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def job_budget(cfg: Any) -> dict[str, float]:
    """The :data:`BUDGET_COLUMNS` of one job from its resolved config (a mapping, or anything else).

    ``budget/known`` is 1 when the config has a ``trainer`` and a ``data`` section; limits that
    are None (no limit) are NaN.
    """
    if (
        not isinstance(cfg, Mapping)
        or not isinstance(cfg.get("trainer"), Mapping)
        or not isinstance(cfg.get("data"), Mapping)
    ):
        return {KNOWN_COLUMN: 0.0, **{column: math.nan for column in BUDGET_KEYS}}
    return {KNOWN_COLUMN: 1.0, **{column: number_or_nan(_lookup(cfg, key)) for column, key in BUDGET_KEYS.items()}}


@dataclass(frozen=True)
class Protocol:
    """The protocol budget of one data set and split (a row of ``protocol_budget.csv``)."""

    data: str
    split: str
    max_epochs: int
    patience: int
    n_folds: int


def load_protocol(ref_dir: Path | str | None = None) -> dict[tuple[str, str], Protocol]:
    """``{(data, split): Protocol}`` from ``protocol_budget.csv`` (the package's copy by default).

    A ``--reference-dir`` without the file falls back to the package's copy: the budget of
    the protocol is not something a user's own reference tables change.
    """
    path = Path(ref_dir) / PROTOCOL_FILE if ref_dir is not None else default_reference_dir() / PROTOCOL_FILE
    if not path.is_file():
        path = default_reference_dir() / PROTOCOL_FILE
    table = pd.read_csv(path)
    return {
        (str(r.data), str(r.split)): Protocol(
            str(r.data), str(r.split), int(r.max_epochs), int(r.patience), int(r.n_folds)
        )
        for r in table.itertuples(index=False)
    }


@dataclass(frozen=True)
class BudgetDifference:
    """One way the jobs of a data set and split differ from the protocol."""

    data: str
    split: str
    what: str  # the sentence part: "training examples limited to 3000"
    key: str  # the config key, or "folds"
    protocol: str  # what the protocol does: "the whole training set"
    short: str  # the figure-subtitle form: "limit_train=3000"

    def line(self) -> str:
        return f"{self.data} ({self.split} split): {self.what} (`{self.key}`; protocol: {self.protocol})"


def _values(series: pd.Series) -> list[float]:
    return sorted({float(v) for v in series if not (isinstance(v, float) and math.isnan(v))})


def _fmt(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def _fmt_all(values: Sequence[float]) -> str:
    return ", ".join(_fmt(v) for v in values)


def _job_differences(rows: pd.DataFrame, data: str, split: str, protocol: Protocol) -> list[BudgetDifference]:
    """Differences of the per-job settings (limits, epochs, patience, early stopping, n_folds)."""
    out: list[BudgetDifference] = []

    def add(what: str, key: str, expected: str, short: str) -> None:
        out.append(BudgetDifference(data, split, what, key, expected, short))

    for column, noun, expected in (
        ("budget/limit_train", "training examples", "the whole training set"),
        ("budget/limit_val", "validation examples", "the whole validation set"),
    ):
        limits = _values(rows[column])
        if limits:
            add(
                f"{noun} limited to {_fmt_all(limits)}",
                BUDGET_KEYS[column],
                expected,
                f"{column[7:]}={_fmt_all(limits)}",
            )
    for column, noun in (("budget/limit_train_batches", "training"), ("budget/limit_val_batches", "validation")):
        limits = [v for v in _values(rows[column]) if v != 1.0]
        if limits:
            add(
                f"{noun} batches limited to {_fmt_all(limits)}",
                BUDGET_KEYS[column],
                "every batch",
                f"{column[7:]}={_fmt_all(limits)}",
            )
    epochs = _values(rows["budget/max_epochs"])
    if epochs and epochs != [float(protocol.max_epochs)]:
        add(
            f"at most {_fmt_all(epochs)} epochs",
            BUDGET_KEYS["budget/max_epochs"],
            f"up to {protocol.max_epochs}",
            f"max_epochs={_fmt_all(epochs)}",
        )
    early = rows["budget/early_stopping"]
    if (early == 0.0).any():
        add(
            "early stopping off",
            BUDGET_KEYS["budget/early_stopping"],
            f"on, patience {protocol.patience}",
            "no early stopping",
        )
    patience = _values(rows.loc[early != 0.0, "budget/patience"])
    if patience and patience != [float(protocol.patience)]:
        add(
            f"early-stopping patience {_fmt_all(patience)}",
            BUDGET_KEYS["budget/patience"],
            str(protocol.patience),
            f"patience={_fmt_all(patience)}",
        )
    return out


def budget_differences(
    jobs: pd.DataFrame, protocol: Mapping[tuple[str, str], Protocol] | None = None
) -> list[BudgetDifference]:
    """Every difference between the completed jobs and the protocol, per data set and split.

    Folds: on the k-fold split the protocol runs all ``n_folds`` (5) folds of ``data.n_folds=5``;
    fewer folds run (or another ``n_folds``) is a difference. The standard split has one
    validation set and no folds.
    """
    protocol = load_protocol() if protocol is None else protocol
    done = jobs[(jobs["status"] == "completed") & (jobs[KNOWN_COLUMN] == 1.0)]
    out: list[BudgetDifference] = []
    for (data, split), rows in done.groupby(["data", "split"], sort=True, dropna=True):
        expected = protocol.get((str(data), str(split)))
        if expected is None:
            continue  # not one of the paper's data sets (or splits): nothing to compare with
        out += _job_differences(rows, str(data), str(split), expected)
        if split != "kfold":
            # the standard split is the protocol of a search (Appendix A), not of the tables
            tabulated = rows["study_name"].isna() if "study_name" in rows.columns else rows["split"].notna()
            if tabulated.any() and (str(data), "kfold") in protocol:
                out.append(
                    BudgetDifference(
                        str(data),
                        str(split),
                        f"the {split} split in the tables",
                        "data.split",
                        "kfold (the paper's tables are 5-fold cross-validation)",
                        f"split={split}",
                    )
                )
            continue
        n_folds = _values(rows["budget/n_folds"])
        if n_folds and n_folds != [float(expected.n_folds)]:
            out.append(
                BudgetDifference(
                    str(data),
                    str(split),
                    f"{_fmt_all(n_folds)} folds",
                    BUDGET_KEYS["budget/n_folds"],
                    str(expected.n_folds),
                    f"n_folds={_fmt_all(n_folds)}",
                )
            )
            continue
        folds = _values(rows["fold"])
        if len(folds) < expected.n_folds:
            out.append(
                BudgetDifference(
                    str(data),
                    str(split),
                    f"folds {_fmt_all(folds)} only, {len(folds)} of {expected.n_folds}",
                    "data.fold",
                    f"all {expected.n_folds}, median over them",
                    f"folds {len(folds)}/{expected.n_folds}",
                )
            )
    return out


def unknown_budget_jobs(jobs: pd.DataFrame) -> int:
    """Completed jobs whose results.json records no config (their budget is unknown)."""
    return int(((jobs["status"] == "completed") & (jobs[KNOWN_COLUMN] != 1.0)).sum())


def mark_comparable(
    long: pd.DataFrame,
    jobs: pd.DataFrame,
    differences: Sequence[BudgetDifference],
    protocol: Mapping[tuple[str, str], Protocol] | None = None,
) -> pd.DataFrame:
    """``long`` with a ``comparable`` column: False for cells measured under another budget.

    A cell is not comparable when its data set and split have a per-job difference (limits,
    epochs, patience, early stopping, ``n_folds``), it was not measured on the k-fold split,
    or it is a k-fold cell with fewer folds than the protocol's (a one-fold value is not a
    median over five). Cells of data sets
    without a protocol are comparable (there is no paper number to compare them with).
    """
    protocol = load_protocol() if protocol is None else protocol
    out = long.copy()
    if out.empty:
        out["comparable"] = pd.Series(dtype=bool)
        return out
    differing = {(d.data, d.split) for d in differences if d.key != "data.fold"}
    done = jobs[jobs["status"] == "completed"]
    cells = with_shared_level_zero(done[[*CELL, "split", "fold"]])
    rows = []
    for key, group in cells.groupby(CELL, dropna=False, sort=False):
        splits = set(group["split"].dropna())
        data = str(key[0])
        # the paper's tables are k-fold: a cell of another split is compared with nothing
        ok = splits <= {"kfold"} and not any((data, s) in differing for s in splits)
        for split in splits & {"kfold"}:
            expected = protocol.get((data, split))
            if expected is not None and group.loc[group["split"] == split, "fold"].nunique() < expected.n_folds:
                ok = False
        rows.append((*key, ok))
    flags = pd.DataFrame(rows, columns=[*CELL, "comparable"]).rename(columns={"aug_level": "level"})
    keys = ["data", "setting", "aug_type", "level", "model"]
    out = out.merge(flags, on=keys, how="left")
    out["comparable"] = out["comparable"].fillna(True).astype(bool)
    return out


def banner_markdown(differences: Sequence[BudgetDifference], n_unknown: int = 0) -> list[str]:
    """The lines that open ``report.md`` when the budget is not the protocol's ([] when it is)."""
    lines: list[str] = []
    if differences:
        lines += [
            "> **Reduced budget: these runs are not the paper's protocol** (`docs/protocol.md`, the budget "
            "the paper's numbers were made with). They differ in:",
            ">",
        ]
        lines += [f"> - {d.line()}" for d in differences]
        lines += [
            ">",
            "> Differences to the paper of the cells concerned are not comparable and show as `n/c`; "
            "the figures carry the same list in their subtitle.",
            "",
        ]
    if n_unknown:
        lines += [
            f"> {n_unknown} completed job(s) record no config in `results.json`: their budget is unknown "
            "and not checked against the protocol.",
            "",
        ]
    return lines


def budget_subtitles(differences: Sequence[BudgetDifference]) -> dict[str, str]:
    """``{data: subtitle}`` for figures of data sets with a difference: "reduced budget: ...".

    Figures of one data set show its differences (of every split it was run on).
    """
    by_data: dict[str, list[str]] = {}
    for d in differences:
        parts = by_data.setdefault(d.data, [])
        if d.short not in parts:
            parts.append(d.short)
    return {data: "reduced budget, not comparable to the paper: " + ", ".join(parts) for data, parts in by_data.items()}


def subtitle_for(subtitles: Mapping[str, str], data: Sequence[str] | str) -> str:
    """The subtitle of a figure showing ``data`` (one data set or several), "" when none applies."""
    names = [data] if isinstance(data, str) else list(data)
    return "; ".join(subtitles[d] for d in dict.fromkeys(names) if d in subtitles)
