"""Run summaries: atomic writes, the identity of a run, ``results.json``, and where a sweep keeps them.

A crash (or a kill) mid-write must never leave a half-written summary that a report would
misread, so every summary is written to a temporary file in the same directory and renamed
over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import csv
import errno
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from weightshare.augment.validate import LEVEL_KEYS

#: the four training augmentation types (one list for the whole project)
AUG_TYPES = LEVEL_KEYS


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: errno values that mean "the disk (or the user's quota) is full"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` that caused ``exc`` (itself or in its chain), else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_FULL_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def error_text(exc: BaseException) -> str:
    """``Type: message`` for a job's record; a full disk is named ``ENOSPC`` up front, whatever wrapped it."""
    text = f"{type(exc).__name__}: {exc}"
    full = disk_full_error(exc)
    if full is not None:
        name = errno.errorcode.get(full.errno or 0, "ENOSPC")
        where = f" writing {full.filename}" if full.filename else ""
        return f"{name}: the disk is full (no space left{where}); {text}"
    return text


def overwrite_json_in_place(path: str | Path, record: Mapping[str, Any]) -> bool:
    """Write ``record`` over the existing file at ``path`` without a temporary file; True if it worked.

    The last resort of a job that must record its failure on a full disk: an atomic write needs
    space for a second copy, while overwriting the blocks of the existing file needs none. To
    fit, the record is shortened to its essential keys if the full one is longer than the file.
    Not atomic: a kill during this write leaves a file the report lists as ``corrupt``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    essential = ("status", "error", "identity", "task", "output_dir", "seed", "resumed", "wall_time_s")
    candidates = [
        dict(record),
        {k: record[k] for k in essential if k in record},
        {k: record[k] for k in ("status", "error") if k in record},
    ]
    for candidate in candidates:
        data = (json.dumps(_json_safe(candidate), indent=1) + "\n").encode()
        if size and len(data) > size and candidate is not candidates[-1]:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.ftruncate(fd, len(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError:
            continue
    return False


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); tensors and numpy scalars become floats."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if absent or unreadable."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_overrides(job_dir: str | Path) -> list[str] | None:
    """The job's command-line overrides (Hydra's ``.hydra/overrides.yaml``), None if unreadable."""
    try:
        items = yaml.safe_load((Path(job_dir) / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in items] if isinstance(items, list) else None


def find_jobs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(job_dirs, multirun_files)`` under ``root``: the one reader of a sweep directory's layout.

    A job directory is one holding ``results.json`` or ``.hydra/`` (``root`` itself may be one).
    A job holds no other job, so the walk does not descend into it: its checkpoints, logs and
    the ``cnn_stage/`` of a two-stage divergence run (a results.json of its own) are not jobs of
    the sweep. Hidden directories are skipped. ``multirun_files`` are Hydra's ``multirun.yaml``
    outside job directories. Job directories sort naturally (0, 1, 2, ..., 10, not 0, 1, 10, 2).
    Used by the end-of-sweep table (:mod:`weightshare.hydra_callbacks`) and the report.
    """
    jobs: list[Path] = []
    multiruns: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "results.json" in filenames or ".hydra" in dirnames:
            jobs.append(Path(dirpath))
            dirnames[:] = []
            continue
        if "multirun.yaml" in filenames:
            multiruns.append(Path(dirpath) / "multirun.yaml")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(jobs, key=_natural_key), multiruns


def _natural_key(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def aug_identity(aug: Mapping[str, Any]) -> tuple[str, float | None]:
    """``(aug_type, level)``: ``none`` at level 0 (shared by all types), ``mixed`` for several.

    A type missing from ``aug`` (or None) counts as level 0.
    """
    levels = {k: float(aug.get(k) or 0.0) for k in AUG_TYPES}
    active = [(k, level) for k, level in levels.items() if level > 0]
    if not active:
        return "none", 0.0
    if len(active) == 1:
        return active[0]
    return "mixed", None


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    """``cfg[a][b]`` for ``"a.b"``; None where a key is missing (a partial config read back from disk)."""
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def run_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config values that identify a run in a sweep (what the report groups by).

    The one list of identity fields: the report also reads a failed job's saved config with it
    (a partial config: a key it lacks gives None).
    """
    get = functools.partial(_lookup, cfg)
    aug = get("aug") or {}
    aug_type, level = aug_identity(aug)
    return {
        "data": get("data.name"),
        "model": get("model.name"),
        "depth": get("model.depth"),
        "arch": get("model.arch"),
        "split": get("data.split"),
        "fold": get("data.fold"),
        "aug_type": aug_type,
        "aug_level": level,
        "aug": {k: float(aug.get(k) or 0.0) for k in AUG_TYPES},
        "connectivity": _float(get("model.connectivity")),
        "share_tile": get("model.share_tile"),
        "share_penalty": _float(get("model.share_penalty")),
        "lr": _float(get("optimizer.lr")),
        "optimizer": get("optimizer.name"),
        "seed": get("seed"),
        # a two-stage divergence run is "cnn_stage" from its start, so its identity never
        # changes mid-run (resume and skip_completed compare identities)
        "init_from": get("model.init_from") or ("cnn_stage" if (get("divergence.cnn_epochs") or 0) > 0 else None),
        **spectrum_identity(get("model") or {}),
    }


#: the identity fields :func:`spectrum_identity` may add (absent from runs that do not use them)
SPECTRUM_FIELDS = ("rank", "combining", "lowrank_bias", "share_penalty_kind", "dynamic_sharing")


def spectrum_identity(model: Any) -> dict[str, Any]:
    """Identity fields of the sharing-spectrum mechanisms (issue #13), present only when used.

    A run without them keeps exactly the identity it had before these mechanisms existed, so
    ``skip_completed`` and ``resume`` still recognise completed runs of older sweeps.
    ``dynamic_sharing`` is one label (``every=N;strength=a;radius=r|all``) so the report groups by it.
    """
    out: dict[str, Any] = {}
    if model.get("name") == "lowrank":
        out["rank"] = model.get("rank")
        out["combining"] = model.get("combining")
        # the biases change the network; only the non-default (not both on) is named, so the
        # identity of a run with the authors' biases stays what it was before the switches existed
        filter_bias, spatial_bias = model.get("filter_bias", True), model.get("spatial_bias", True)
        if filter_bias is False or spatial_bias is False:
            out["lowrank_bias"] = f"filter={str(bool(filter_bias)).lower()};spatial={str(bool(spatial_bias)).lower()}"
    kind = model.get("share_penalty_kind", "l2_neighbours")
    if kind != "l2_neighbours":
        out["share_penalty_kind"] = kind
    ds = model.get("dynamic_sharing") or {}
    if ds.get("every") is not None:
        radius = "all" if ds.get("radius") is None else ds.get("radius")
        out["dynamic_sharing"] = f"every={ds.get('every')};strength={float(ds.get('strength', 1.0)):g};radius={radius}"
    return out


class EpochTable:
    """``metrics.csv``: one row per epoch, columns ``epoch, step`` then metric names sorted.

    The whole table is rewritten atomically after every epoch (it is small), so the file is
    always complete, and rows of epochs at or after a resume point can be dropped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def load(self) -> list[dict[str, Any]]:
        self.rows = read_metrics_csv(self.path)
        return self.rows

    def truncate(self, first_epoch: int) -> None:
        """Keep only epochs before ``first_epoch`` (called when a run resumes there)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) < first_epoch]
        self.write()

    def append(self, row: Mapping[str, Any]) -> None:
        epoch = int(row["epoch"])
        self.rows = [r for r in self.rows if int(r["epoch"]) != epoch] + [dict(row)]
        self.write()

    def columns(self) -> list[str]:
        names: set[str] = set()
        for r in self.rows:
            names.update(r)
        names -= {"epoch", "step"}
        return ["epoch", "step", *sorted(names)]

    def write(self) -> None:
        cols = self.columns()
        lines = [",".join(cols)]
        for r in self.rows:
            lines.append(",".join(_csv_cell(r.get(c)) for c in cols))
        atomic_write_text(self.path, "\n".join(lines) + "\n")


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.csv as dicts of floats (``epoch``/``step`` as ints); [] if absent."""
    p = Path(path)
    if not p.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with p.open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    continue
                row[k] = int(float(v)) if k in ("epoch", "step") else float(v)
            if "epoch" in row:
                rows.append(row)
    return rows


def best_and_final(
    rows: Iterable[Mapping[str, Any]], monitor: str = "val/acc", mode: str = "max", min_delta: float = 0.0
) -> tuple[dict, dict]:
    """Metrics of the best epoch and of the last epoch that has ``monitor``.

    "Best" counts as Lightning's early stopping does: an epoch improves on the best so far
    only by more than ``min_delta``, so the best epoch is the one early stopping waited on.
    The last epoch without validation (``check_val_every_n_epoch``) is not "final".
    """
    valid = [r for r in rows if isinstance(r.get(monitor), (int, float)) and not math.isnan(r[monitor])]
    if not valid:
        return {}, {}
    best = valid[0]
    sign = 1.0 if mode == "max" else -1.0
    for r in valid[1:]:
        if sign * (r[monitor] - best[monitor]) > min_delta:
            best = r
    return dict(best), dict(valid[-1])
