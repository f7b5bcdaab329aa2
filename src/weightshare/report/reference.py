"""The paper's published numbers, read from the reference CSVs into one long frame.

The CSVs ship with the package (:data:`PACKAGE_REFERENCE_DIR`, ``reference_data/`` beside this
module, its README names the paper's tables they come from), so a report made in any clone or
installation puts the paper's numbers beside the measured ones; ``--reference-dir`` points at
another directory holding files of the same names. Two files are read:

- ``paper_translation_tables.csv`` (Tables 1-2): ``dataset, aug_type, aug, model, train_acc,
  val_acc, translation_acc``;
- ``paper_other_aug_tables.csv`` (Tables B.1-B.3): ``aug_type, aug, model, mnist_val_acc,
  mnist_translation_acc, cifar10_val_acc, cifar10_translation_acc``.

Both are reshaped into rows ``data, aug_type, level_key, model, metric, paper`` where ``metric``
uses the run directory's metric names (``train/acc``, ``val/acc``, ``val/translate/acc``) so the
report can join them onto measured values without a translation table of its own. Levels are
joined on ``level_key = round(100 * level)`` (an int) because float levels written as ``0.10``
in a CSV and ``0.1`` in a config must meet exactly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from weightshare.errors import ConfigError

TRANSLATION_FILE = "paper_translation_tables.csv"
OTHER_AUG_FILE = "paper_other_aug_tables.csv"
REFERENCE_COLUMNS = ["data", "aug_type", "level_key", "model", "metric", "paper"]

# CSV column -> metric name of the run directory
_TRANSLATION_METRICS = {"train_acc": "train/acc", "val_acc": "val/acc", "translation_acc": "val/translate/acc"}
_OTHER_METRICS = {"val_acc": "val/acc", "translation_acc": "val/translate/acc"}
_EMPTY_DTYPES = {"data": str, "aug_type": str, "level_key": "Int64", "model": str, "metric": str, "paper": float}


#: the paper's tables as package data (listed in the wheel by ``[tool.hatch.build]``)
PACKAGE_REFERENCE_DIR = Path(__file__).resolve().parent / "reference_data"


def default_reference_dir() -> Path:
    """The package's own copy of the paper's numbers (:data:`PACKAGE_REFERENCE_DIR`)."""
    return PACKAGE_REFERENCE_DIR


def level_key(level: float | pd.Series) -> int | pd.Series:
    """Integer key of an augmentation level (hundredths), so 0.1 and 0.10 join; NaN stays NaN."""
    if isinstance(level, pd.Series):
        return (level.astype(float) * 100).round().astype("Int64")
    return round(float(level) * 100)


def _read_translation(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    long = raw.melt(
        id_vars=["dataset", "aug_type", "aug", "model"],
        value_vars=list(_TRANSLATION_METRICS),
        var_name="column",
        value_name="paper",
    )
    return pd.DataFrame(
        {
            "data": long["dataset"].astype(str),
            "aug_type": long["aug_type"].astype(str),
            "level_key": level_key(long["aug"]),
            "model": long["model"].astype(str),
            "metric": long["column"].map(_TRANSLATION_METRICS),
            "paper": long["paper"].astype(float),
        }
    )


def _read_other(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    value_columns = [c for c in raw.columns if c not in ("aug_type", "aug", "model")]
    long = raw.melt(
        id_vars=["aug_type", "aug", "model"], value_vars=value_columns, var_name="column", value_name="paper"
    )
    # "mnist_val_acc" -> data "mnist", column "val_acc"; data names hold no underscore
    split = long["column"].str.split("_", n=1, expand=True)
    return pd.DataFrame(
        {
            "data": split[0],
            "aug_type": long["aug_type"].astype(str),
            "level_key": level_key(long["aug"]),
            "model": long["model"].astype(str),
            "metric": split[1].map(_OTHER_METRICS),
            "paper": long["paper"].astype(float),
        }
    ).dropna(subset=["metric"])


def load_reference(ref_dir: Path | str | None = None, *, required: bool = False) -> pd.DataFrame:
    """Paper values as a long frame with :data:`REFERENCE_COLUMNS`.

    ``ref_dir=None`` uses :func:`default_reference_dir` (the package data, always there). A
    missing directory or file gives an empty frame (the report then shows measured values
    only) unless ``required`` is set, in which case it raises :class:`ConfigError` naming the
    path: an explicitly given ``--reference-dir`` that does not exist is a user mistake worth
    stopping for.

    The level-0 row is one run shared by the four augmentation types, so its values are also
    registered under ``aug_type="none"`` (taken from the translation table, the only one that
    has a training accuracy).
    """
    directory = Path(ref_dir) if ref_dir is not None else default_reference_dir()
    frames = []
    for name, reader in ((TRANSLATION_FILE, _read_translation), (OTHER_AUG_FILE, _read_other)):
        path = directory / name
        if path.is_file():
            frames.append(reader(path))
        elif required:
            allowed = f"a directory holding {TRANSLATION_FILE} and {OTHER_AUG_FILE}"
            raise ConfigError("--reference-dir", str(directory), allowed)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_DTYPES.items()})
    ref = pd.concat(frames, ignore_index=True)
    zero = ref[(ref["level_key"] == 0) & (ref["aug_type"] == "translate")].assign(aug_type="none")
    ref = pd.concat([ref, zero], ignore_index=True)
    return ref.drop_duplicates(subset=["data", "aug_type", "level_key", "model", "metric"], keep="first")
