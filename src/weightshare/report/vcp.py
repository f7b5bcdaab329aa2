"""Variable connection patterns (the paper's Figures C.1-C.2): accuracy vs removed connections.

``experiment=paper_vcp`` sweeps ``model.connectivity`` (the fraction of an FCN's connections
removed at random) with everything else fixed (30% translation, 5 folds). Each connectivity
value has its own ``setting`` label (``connectivity=0.5``), so the ordinary tables would show
one single-row table per value; this module gathers them into one view instead.

A **VCP group** is the completed jobs sharing data, augmentation type and level, and the
setting apart from connectivity (:func:`base_setting`), in which the FCN jobs take at least two
connectivity values. Its members are those FCN jobs (every connectivity) and, as the reference
the paper draws against, the CNN jobs of the group at connectivity 0. Unknown connectivity
(NaN) is no evidence of a value: such jobs are left out.

Long frame (:func:`summarize_vcp`, ``tables/vcp_long.csv``), one row per (convention, group,
model, connectivity, metric): columns :data:`VCP_LONG_COLUMNS`, medians over folds in the
conventions of :mod:`.tables` (``setting`` is the group's base setting, ``level`` its
augmentation level). Wide frame (:func:`vcp_wide`): one row per connectivity; ``fcn/n`` and
``fcn/<metric>`` (median over folds), then ``cnn/n`` and ``cnn/<metric>`` filled on the
connectivity-0 row only (the CNN reference), where the group has CNN jobs.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from weightshare.report.tables import (
    CONVENTIONS,
    STAT_COLUMNS,
    cells_by_convention,
    convention_rows,
    format_level,
    slug,
    wide_cells,
    with_shared_level_zero,
)

VCP_MODEL = "fcn"
REFERENCE_MODEL = "cnn"
VCP_KEY = ["data", "base_setting", "aug_type", "aug_level"]
_VCP_CELL = ["convention", "data", "setting", "aug_type", "level", "model", "connectivity", "metric"]
VCP_LONG_COLUMNS = [*_VCP_CELL, *STAT_COLUMNS]
_CONNECTIVITY_PREFIX = "connectivity="


class VcpGroup(NamedTuple):
    """One VCP view: the jobs of these identity values (``setting`` without connectivity)."""

    data: str
    setting: str
    aug_type: str
    level: float

    @property
    def title(self) -> str:
        return f"{self.data} · VCP · {self.aug_type} {format_level(self.level)}" + (
            f" · {self.setting}" if self.setting else ""
        )

    def file_stem(self) -> str:
        """``vcp_<data>_<aug_type>_<level>[_<setting>]`` (file-name safe)."""
        parts = ("vcp", self.data, self.aug_type, format_level(self.level), self.setting)
        return "_".join(slug(p) for p in parts if p)

    def select(self, frame: pd.DataFrame, *, setting: str = "base_setting", level: str = "aug_level") -> pd.DataFrame:
        """The rows of ``frame`` in this group; the one place a group's rows are picked.

        ``setting`` and ``level`` name the columns: member and row frames (:func:`vcp_members`,
        :func:`vcp_rows`) have ``base_setting`` and ``aug_level``, the long frame ``setting`` and
        ``level``. Levels match within 1e-9 (they went through float parsing and the CSVs).
        """
        return frame[
            (frame["data"] == self.data)
            & (frame[setting] == self.setting)
            & (frame["aug_type"] == self.aug_type)
            & ((frame[level].astype(float) - self.level).abs() < 1e-9)
        ]


def base_setting(setting: str) -> str:
    """The setting label without its ``connectivity=...`` part (labels are ``key=value`` joined by ``,``)."""
    return ",".join(p for p in str(setting).split(",") if p and not p.startswith(_CONNECTIVITY_PREFIX))


def vcp_members(jobs: pd.DataFrame) -> pd.DataFrame:
    """Completed member jobs of every VCP group: ``job_dir, model, connectivity`` and :data:`VCP_KEY`."""
    columns = ["job_dir", "model", "connectivity", *VCP_KEY]
    if jobs.empty:
        return pd.DataFrame(columns=columns)
    done = jobs[(jobs["status"] == "completed") & jobs["connectivity"].notna() & jobs["aug_level"].notna()].copy()
    done["base_setting"] = done["setting"].map(base_setting)
    fcn = done[done["model"] == VCP_MODEL]
    n_values = fcn.groupby(VCP_KEY)["connectivity"].nunique()
    groups = n_values[n_values >= 2].index
    if groups.empty:
        return pd.DataFrame(columns=columns)
    in_group = pd.MultiIndex.from_frame(done[VCP_KEY]).isin(groups)
    reference = (done["model"] == REFERENCE_MODEL) & (done["connectivity"] == 0)
    is_member = (done["model"] == VCP_MODEL) | reference
    return done.loc[in_group & is_member.to_numpy(), columns].reset_index(drop=True)


def vcp_groups(jobs: pd.DataFrame) -> list[VcpGroup]:
    """The VCP groups of a sweep, sorted by data, setting, aug type, level."""
    members = vcp_members(jobs)
    keys = members[VCP_KEY].drop_duplicates().itertuples(index=False, name=None)
    return [VcpGroup(*k) for k in sorted(keys)]


def covered_tables(jobs: pd.DataFrame) -> set[tuple[str, str, str]]:
    """The ordinary ``(data, aug_type, setting)`` tables that the VCP view replaces.

    A table is replaced when its setting has a non-zero connectivity and every job feeding it
    (level-0 jobs shared in, as in the tables) is a VCP member: those are the single-row
    tables of a connectivity sweep. The connectivity-0 table is the paper's own and stays.
    """
    members = set(vcp_members(jobs)["job_dir"])
    if not members:
        return set()
    done = jobs.loc[jobs["status"] == "completed", ["job_dir", "data", "setting", "aug_type"]]
    shared = with_shared_level_zero(done.assign(_in=done["job_dir"].isin(members)))
    covered = set()
    for (data, aug_type, setting), table in shared.groupby(["data", "aug_type", "setting"], sort=False):
        if setting != base_setting(setting) and table["_in"].all():
            covered.add((data, aug_type, setting))
    return covered


def vcp_rows(jobs: pd.DataFrame, epochs: pd.DataFrame, convention: str) -> pd.DataFrame:
    """Values to take medians of, for VCP members only (one per job, or per epoch row).

    :func:`~weightshare.report.tables.convention_rows` plus ``connectivity`` and ``base_setting``.
    """
    members = vcp_members(jobs)
    rows = convention_rows(jobs, epochs, convention)
    extra = members[["job_dir", "connectivity", "base_setting"]]
    return rows.merge(extra, on="job_dir", how="inner").reset_index(drop=True)


def summarize_vcp(
    jobs: pd.DataFrame, epochs: pd.DataFrame, conventions: tuple[str, ...] = tuple(CONVENTIONS)
) -> pd.DataFrame:
    """The long VCP frame (columns :data:`VCP_LONG_COLUMNS`) of every group and convention."""
    id_vars = ["job_dir", "data", "base_setting", "aug_type", "aug_level", "model", "connectivity"]
    table = cells_by_convention(
        lambda convention: vcp_rows(jobs, epochs, convention), id_vars, id_vars[1:], conventions, sort=True
    )
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in VCP_LONG_COLUMNS})
    table = table.rename(columns={"base_setting": "setting", "aug_level": "level"})
    return table[VCP_LONG_COLUMNS].reset_index(drop=True)


def vcp_wide(long: pd.DataFrame, group: VcpGroup, convention: str) -> pd.DataFrame:
    """One VCP table: a row per connectivity, FCN columns, the CNN reference on the 0 row."""
    cells = group.select(long[long["convention"] == convention], setting="setting", level="level")
    return wide_cells(cells, "connectivity", [VCP_MODEL, REFERENCE_MODEL])


def cnn_reference_note(wide: pd.DataFrame) -> str:
    """One sentence under a VCP table saying what its CNN columns are (or that there are none)."""
    if f"{REFERENCE_MODEL}/n" not in wide.columns:
        return "No CNN at connectivity 0 with the same data, augmentation and setting: no reference."
    return (
        "CNN columns: the weight-shared reference at connectivity 0 (same data, augmentation and "
        "setting), on the 0.00 row only."
    )
