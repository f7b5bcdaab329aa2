"""Find the jobs of one or several sweep directories and load them into two frames.

Any directory is accepted: it is walked recursively, and every directory holding a
``results.json`` or a ``.hydra/`` folder is one job (a job holds no other job, so the walk
does not descend into it; :func:`weightshare.results.find_jobs`, the walk the end-of-sweep table
uses too). Hydra's ``multirun.yaml`` in a sweep directory lists the sweep's
overrides; for the basic sweeper it is expanded into the job list Hydra launched, so a
numbered job whose directory was never created is reported as ``missing`` too.

A ``multirun.yaml`` that cannot be expanded adds a line to :attr:`Sweep.notes` (the report
prints it: missing-job detection is off for that sweep). Nothing here raises on a bad job: a
half-written or malformed ``results.json`` becomes a row with status ``corrupt`` and the parse
error, a job directory without ``results.json`` becomes ``missing``, an unreadable
``metrics.csv`` leaves a ``note``. Only a root that does not exist is an error
(:class:`ConfigError`).

Frames (:class:`Sweep`)
-----------------------
``jobs``: one row per job, columns

- ``job_dir`` (str, absolute; the key), ``root`` (the directory given on the command line),
  ``status`` (``completed | diverged | failed | pruned | running | missing | corrupt``),
  ``error`` (message or None), ``note`` (problems that did not stop the job from counting,
  e.g. an unreadable ``metrics.csv``), ``overrides`` (Hydra overrides, space-separated);
- identity (:data:`IDENTITY_FIELDS`, those of :func:`~weightshare.results.run_identity`): ``data,
  model, depth, arch, split, fold, aug_type, aug_level, connectivity, share_tile, share_penalty, lr,
  optimizer, seed, init_from`` (for jobs without a readable
  ``results.json`` taken from the job's resolved Hydra config when present); ``aug_type`` is
  ``none`` whenever the level is 0;
- ``setting``: a short label of the identity fields that are not the paper's protocol
  (``""`` for depth 3, k-fold split, full connectivity, no tiles, no penalty, no init_from;
  e.g. ``"connectivity=0.5"``; any ``init_from`` checkpoint is ``"init_from=cnn"``, so the folds
  of ``experiment=divergence`` pool although each has its own checkpoint path), plus
  ``lr``/``optimizer``/``arch`` where these take several values within one data set, so runs
  of different experiments are never pooled;
- ``param_count, wall_time_s, epochs_completed, stopped_epoch, best_epoch``;
- from ``results.json`` ``config``: the training budget (``budget/*``, :mod:`.budget`) and the
  Optuna trial the job ran as (``study_storage, study_name, trial_number, trial_monitor``,
  :mod:`.search`; None outside a search);
- ``final/<metric>`` (results.json ``final``: last epoch), ``best/<metric>`` (``best``: the
  early-stopping epoch, the one with the best ``val/acc``), ``init/<metric>``, ``test/<metric>``;
  where ``final``/``best`` lack a metric that ``metrics.csv`` has, it is filled from the last
  row / the row of ``best_epoch``.

``epochs``: one row per (job, epoch) of every readable ``metrics.csv``, columns ``job_dir,
status, data, model, aug_type, aug_level, fold, setting`` then the CSV's own columns
(``epoch`` 0-based, ``step``, ``train/acc``, ``val/acc``, ``val/<variant>/acc``,
``fd/<layer>/r<r>/euclid`` ...), all numeric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from weightshare.errors import ConfigError
from weightshare.report.budget import BUDGET_COLUMNS, job_budget, number_or_nan
from weightshare.report.search import TRIAL_COLUMNS, trial_of
from weightshare.results import SPECTRUM_FIELDS, find_jobs, read_overrides, run_identity

# the identity fields of results.json (run_identity is their one list); ``aug``, the four
# levels, is summarised by aug_type and aug_level
IDENTITY_FIELDS = tuple(key for key in run_identity({}) if key != "aug") + SPECTRUM_FIELDS
GROUP_FIELDS = ("data", "model", "aug_type", "aug_level")
KNOWN_STATUSES = ("completed", "diverged", "failed", "pruned", "running", "interrupted")
RESULT_SECTIONS = ("final", "best", "init", "test")
META_COLUMNS = (
    "job_dir",
    "root",
    "status",
    "error",
    "note",
    "overrides",
    *IDENTITY_FIELDS,
    "setting",
    "param_count",
    "wall_time_s",
    "epochs_completed",
    "stopped_epoch",
    "best_epoch",
    *BUDGET_COLUMNS,
    *TRIAL_COLUMNS,
)
EPOCH_KEY_COLUMNS = ("job_dir", "status", "data", "model", "aug_type", "aug_level", "fold", "setting")
NUMERIC_META = (
    "depth",
    "fold",
    "aug_level",
    "connectivity",
    "share_tile",
    "share_penalty",
    "seed",
    "lr",
    "rank",
    "param_count",
    "wall_time_s",
    "epochs_completed",
    "stopped_epoch",
    "best_epoch",
    *BUDGET_COLUMNS,
)

# identity values of the paper's protocol; anything else goes into the ``setting`` label
_PROTOCOL_SETTING: dict[str, Any] = {
    "depth": 3,
    "split": "kfold",
    "connectivity": 0.0,
    "share_tile": None,
    "share_penalty": 0.0,
    "init_from": None,
    "rank": None,
    "combining": None,
    "share_penalty_kind": None,
    "dynamic_sharing": None,
}
# the setting label of any job started from a checkpoint (only CNN checkpoints are unshared)
INIT_FROM_LABEL = "cnn"
# fields without one protocol value (the learning rate depends on the data set): they enter the
# ``setting`` label only where they take several values among the jobs of one data set
_VARYING_SETTING = ("lr", "optimizer", "arch")


@dataclass
class Sweep:
    """The loaded jobs of one or several sweep directories (see the module docstring)."""

    jobs: pd.DataFrame
    epochs: pd.DataFrame
    roots: list[Path] = field(default_factory=list)
    # problems that make the job list incomplete (e.g. a multirun.yaml that could not be
    # expanded, so never-created jobs cannot be reported missing); printed by the report
    notes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> pd.DataFrame:
        """Jobs whose ``results.json`` says ``completed``: the only ones the tables count."""
        return self.jobs[self.jobs["status"] == "completed"]

    @property
    def failures(self) -> pd.DataFrame:
        """Jobs that are not completed (failed, diverged, pruned, running, missing, corrupt)."""
        return self.jobs[self.jobs["status"] != "completed"]


# ----------------------------------------------------------------------------- discovery


def expected_jobs(multirun_yaml: Path) -> tuple[list[tuple[Path, list[str]]], str | None]:
    """``(jobs, note)``: the (job dir, overrides) pairs Hydra's basic sweeper launched, and why not.

    Uses Hydra's own override parser and :meth:`BasicSweeper.split_arguments` so the job
    numbering is exactly Hydra's. ``jobs`` is ``[]`` with ``note=None`` when the list is not
    knowable by design (another sweeper: Optuna decides its trials as it goes; a custom
    ``hydra.sweep.subdir``), and ``[]`` with a note
    ``"could not list the expected jobs of <dir>: <reason>"`` when the file should have told but
    could not be read or expanded: missing-job detection is then off for that sweep, which the
    report must say rather than claim every job was found.
    """
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = yaml.safe_load(multirun_yaml.read_text())
        if not isinstance(cfg, dict) or not isinstance(cfg.get("hydra"), dict):
            raise ValueError("no hydra section")
        hydra_cfg = cfg["hydra"]
        sweeper = hydra_cfg.get("sweeper") or {}
        if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return [], None
        if str((hydra_cfg.get("sweep") or {}).get("subdir")) != "${hydra.job.num}":
            return [], None
        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += list((hydra_cfg.get("overrides") or {}).get("task") or [])
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as exc:  # yaml, Hydra's grammar, a file of the wrong shape: a note, never a crash
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        return [], f"could not list the expected jobs of {multirun_yaml.parent}: {reason}"
    jobs = [job for batch in batches for job in batch]
    return [(multirun_yaml.parent / str(num), list(overrides)) for num, overrides in enumerate(jobs)], None


# ----------------------------------------------------------------------------- one job


def _identity_from_config(job_dir: Path) -> dict[str, Any]:
    """Best-effort identity of a job without a usable ``results.json``, from its saved config.

    Read by :func:`~weightshare.results.run_identity` (a key the file lacks gives None;
    interpolations between config keys resolve), so a job that died before writing results
    still shows in the failure list as "mnist fcn translate 0.1 fold 3".
    """
    for path in (job_dir / "config.yaml", job_dir / ".hydra" / "config.yaml"):
        try:
            cfg = yaml.safe_load(path.read_text())
            if not isinstance(cfg, dict):
                continue
            identity = run_identity(OmegaConf.create(cfg))
        except (OSError, yaml.YAMLError, OmegaConfBaseException, TypeError, ValueError):
            continue  # unreadable, or a value of the wrong type: try the other file
        return {key: identity[key] for key in IDENTITY_FIELDS if key in identity}
    return {}


def _read_overrides(job_dir: Path) -> str | None:
    overrides = read_overrides(job_dir)
    return " ".join(overrides) if overrides is not None else None


def read_results(job_dir: Path) -> dict[str, Any]:
    """One flat row for a job directory (see ``jobs`` in the module docstring). Never raises."""
    job_dir = Path(job_dir)
    row: dict[str, Any] = {
        "job_dir": str(job_dir.resolve()),
        "status": None,
        "error": None,
        "note": None,
        "overrides": _read_overrides(job_dir),
    }
    path = job_dir / "results.json"
    if not path.is_file():
        row.update(_identity_from_config(job_dir))
        row.update(status="missing", error="no results.json (job not started, or killed before it wrote one)")
        return row
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict):
            raise ValueError(f"top level is {type(payload).__name__}, not an object")
        status = payload.get("status")
        if status not in KNOWN_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(KNOWN_STATUSES)}")
        identity = payload.get("identity")
        if not isinstance(identity, dict) or not identity.get("data") or not identity.get("model"):
            raise ValueError("no identity with data and model")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        row.update(_identity_from_config(job_dir))
        row.update(status="corrupt", error=f"results.json unreadable: {exc}")
        return row

    row.update({k: identity.get(k) for k in IDENTITY_FIELDS})
    row["status"] = status
    error = payload.get("error")
    row["error"] = None if error in (None, "") else str(error)
    for key in ("param_count", "wall_time_s", "epochs_completed", "stopped_epoch"):
        row[key] = payload.get(key)
    if row.get("seed") is None:
        row["seed"] = payload.get("seed")
    row.update(job_budget(payload.get("config")) | trial_of(payload.get("config")))
    for section in RESULT_SECTIONS:
        values = payload.get(section)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if section == "best" and name == "epoch":
                row["best_epoch"] = number_or_nan(value)
            else:
                row[f"{section}/{name}"] = number_or_nan(value)
    return row


def _read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The raw CSV, or ``(None, problem)``. A line with too many fields is skipped."""
    if not path.is_file():
        return None, "no metrics.csv"
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        return None, f"metrics.csv unreadable: {exc}"
    if "epoch" not in frame.columns:
        return None, "metrics.csv has no epoch column"
    return frame, None


def clean_metrics(frame: pd.DataFrame, key: Sequence[str] = ()) -> pd.DataFrame:
    """Numeric metric columns, rows with an epoch, one row per (``key``..., epoch).

    A line cut short by a crash reads as NaNs; text in a number column becomes NaN; a
    repeated epoch keeps its last row (what a resume leaves). Done once on the concatenated
    frame of a sweep: per file it would cost more than reading the file.
    """
    frame = frame.copy()
    for column in frame.columns:
        if column not in key and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["epoch"]).drop_duplicates(subset=[*key, "epoch"], keep="last")
    return frame.sort_values([*key, "epoch"], kind="stable").reset_index(drop=True)


def read_metrics(job_dir: Path) -> tuple[pd.DataFrame | None, str | None]:
    """``(metrics.csv as a clean numeric frame, None)`` or ``(None, problem)``. Never raises."""
    frame, problem = _read_csv(Path(job_dir) / "metrics.csv")
    if frame is None:
        return None, problem
    return clean_metrics(frame), None


# ----------------------------------------------------------------------------- frames


def setting_label(row: pd.Series | dict[str, Any]) -> str:
    """Short label of the identity fields that differ from the paper's protocol ("" if none).

    ``init_from`` is labelled ``init_from=cnn`` whatever the checkpoint path: that path is
    per job (``<job>/cnn_stage/checkpoints/last.ckpt`` in ``experiment=divergence``), so putting
    it into the label would give every fold a table of its own instead of pooling the folds.
    """
    parts = []
    for key, default in _PROTOCOL_SETTING.items():
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # unknown is not evidence of a different experiment
        if key == "init_from":
            if str(value).strip():
                parts.append(f"init_from={INIT_FROM_LABEL}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if default is not None and float(value) == float(default):
                continue
            value = int(value) if float(value).is_integer() else value
        elif value == default:
            continue
        parts.append(f"{key}={value}")
    return ",".join(parts)


def _normalise_jobs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    jobs = pd.DataFrame(rows)
    for column in META_COLUMNS:
        if column not in jobs.columns:
            jobs[column] = None
    for column in NUMERIC_META:
        jobs[column] = pd.to_numeric(jobs[column], errors="coerce").astype(float)
    for column in ("data", "model", "split", "aug_type", "init_from", "error", "note", "overrides", "status"):
        jobs[column] = jobs[column].astype(object).where(jobs[column].notna(), None)
    # the zero level is one run shared by every augmentation type: call it "none" whatever it says
    zero = jobs["aug_level"] == 0
    jobs.loc[zero, "aug_type"] = "none"
    jobs["setting"] = [setting_label(r) for r in jobs[list(_PROTOCOL_SETTING)].to_dict("records")]
    for key in _VARYING_SETTING:
        varies = jobs.groupby("data", dropna=False)[key].transform("nunique") > 1
        label = [f"{key}={v:g}" if isinstance(v, float) else f"{key}={v}" for v in jobs[key]]
        extra = pd.Series(label, index=jobs.index).where(varies & jobs[key].notna(), "")
        jobs["setting"] = [",".join(p for p in pair if p) for pair in zip(jobs["setting"], extra)]
    metric_columns = sorted(c for c in jobs.columns if c not in META_COLUMNS)
    return jobs[list(META_COLUMNS) + metric_columns].reset_index(drop=True)


def _fill_from_epochs(jobs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Fill ``best/<m>`` and ``final/<m>`` that results.json lacks from metrics.csv rows."""
    if epochs.empty:
        return jobs
    metric_columns = [c for c in epochs.columns if c not in EPOCH_KEY_COLUMNS and c not in ("epoch", "step")]
    last = epochs.groupby("job_dir", sort=False).tail(1).set_index("job_dir")[metric_columns]
    best_epochs = jobs[["job_dir", "best_epoch"]].dropna()
    best = epochs.merge(best_epochs, left_on=["job_dir", "epoch"], right_on=["job_dir", "best_epoch"])
    best = best.set_index("job_dir")[metric_columns]
    fills = pd.concat([last.add_prefix("final/"), best.add_prefix("best/")], axis=1)
    jobs = jobs.set_index("job_dir")
    new_columns = [c for c in fills.columns if c not in jobs.columns]
    jobs = pd.concat([jobs, pd.DataFrame(float("nan"), index=jobs.index, columns=new_columns)], axis=1)
    jobs.update(fills, overwrite=False)
    ordered = list(META_COLUMNS[1:]) + sorted(c for c in jobs.columns if c not in META_COLUMNS)
    return jobs[ordered].reset_index()


def load_jobs(dirs: Iterable[Path | str]) -> tuple[list[dict[str, Any]], list[str]]:
    """``(rows, notes)``: raw rows of every job found under ``dirs`` (expected-but-absent jobs
    included) and the notes of :func:`expected_jobs` for sweeps whose job list is unknown."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise ConfigError("DIR", str(root), "an existing run or sweep directory")
        job_dirs, multiruns = find_jobs(root)
        for job_dir in job_dirs:
            row = read_results(job_dir)
            if row["job_dir"] in seen:
                continue
            seen.add(row["job_dir"])
            rows.append({**row, "root": str(root)})
        for multirun in multiruns:
            listed, note = expected_jobs(multirun)
            if note is not None:
                notes.append(note)
            for job_dir, overrides in listed:
                key = str(job_dir.resolve())
                if key in seen:
                    continue
                seen.add(key)
                rows.append(
                    {
                        "job_dir": key,
                        "root": str(root),
                        "status": "missing",
                        "error": "job directory never created (listed by multirun.yaml)",
                        "overrides": " ".join(overrides),
                    }
                )
    return rows, notes


def load_sweep(dirs: Sequence[Path | str]) -> Sweep:
    """Load every job under ``dirs`` into a :class:`Sweep` (frames documented above)."""
    rows, notes = load_jobs(dirs)
    if not rows:
        jobs = _normalise_jobs([{c: None for c in META_COLUMNS}]).iloc[0:0]
        return Sweep(
            jobs=jobs,
            epochs=pd.DataFrame(columns=[*EPOCH_KEY_COLUMNS, "epoch"]),
            roots=[Path(d) for d in dirs],
            notes=notes,
        )
    jobs = _normalise_jobs(rows)
    frames: dict[str, pd.DataFrame] = {}
    for index, (job_dir, status) in enumerate(zip(jobs["job_dir"], jobs["status"])):
        frame, problem = _read_csv(Path(job_dir) / "metrics.csv")
        if frame is not None:
            frames[job_dir] = frame
        elif status == "completed":
            jobs.loc[index, "note"] = f"{problem}: left out of the all-epochs convention"
    if frames:
        epochs = pd.concat(frames, names=["job_dir", None]).reset_index(level=0)
        epochs = clean_metrics(epochs, key=("job_dir",))
        keys = jobs[list(EPOCH_KEY_COLUMNS)]
        epochs = keys.merge(epochs, on="job_dir", how="inner")
    else:
        epochs = pd.DataFrame(columns=[*EPOCH_KEY_COLUMNS, "epoch"])
    jobs = _fill_from_epochs(jobs, epochs)
    return Sweep(jobs=jobs, epochs=epochs, roots=[Path(d) for d in dirs], notes=notes)
