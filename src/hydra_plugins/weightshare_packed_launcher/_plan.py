"""Composing, checking and grouping the jobs of one ``launch`` call into packs.

A job's config is composed exactly as Hydra's launchers compose it
(``config_loader.load_sweep_config`` plus ``hydra.job.num``/``id``), and its run directory is
the one Hydra's ``run_job`` would give it (``hydra.sweep.dir``/``hydra.sweep.subdir``). The
task config handed to the packed trainer is resolved while that job's ``HydraConfig`` is set,
so ``${hydra:runtime.output_dir}`` and friends mean what they mean in a single job.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from weightshare.errors import ConfigError

from .config import EXECUTORS

log = logging.getLogger(__name__)

PACK, SINGLE = "pack", "single"


def engine() -> ModuleType:
    """The packed trainer (``weightshare.packed``), imported on first use: it pulls in torch."""
    import weightshare.packed

    return weightshare.packed


def check_options(pack_size: Any, executor: Any) -> None:
    """``pack_size`` and ``executor``: a bad value is a one-line error and exit status 2."""
    try:
        if pack_size is not None and (isinstance(pack_size, bool) or not isinstance(pack_size, int) or pack_size < 1):
            raise ConfigError(
                "hydra.launcher.pack_size", pack_size, "an integer >= 1, or null (all compatible jobs in one pack)"
            )
        if executor not in EXECUTORS:
            raise ConfigError("hydra.launcher.executor", executor, " | ".join(EXECUTORS))
    except ConfigError as exc:
        exit_with_error(exc)


def exit_with_error(exc: Exception) -> None:
    """The project's command-line convention for bad input: one line on stderr, exit status 2.

    Hydra would print a launcher's exception with a stack trace; a ``SystemExit`` passes
    through it untouched.
    """
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


@dataclass
class Member:
    """One job of the sweep, composed and with its run directory decided (nothing written yet)."""

    idx: int
    overrides: list[str]
    #: the config as composed (what ``run_job`` gets for a single job)
    composed: DictConfig
    #: a copy with ``hydra.runtime.output_dir`` set, as ``run_job`` sets it
    config: DictConfig
    #: the task config as composed, without ``hydra`` (``.hydra/config.yaml``)
    task_cfg: DictConfig
    #: the task config resolved under this job's HydraConfig (what ``train_pack`` gets)
    resolved: DictConfig
    output_dir: Path
    #: why the job runs as an ordinary single job (None: it packs)
    reason: str | None = None
    #: jobs with equal keys share a pack
    key: Hashable | None = None


def compose(launcher: Any, overrides: Sequence[str], idx: int, job_id: str | int | None = None) -> DictConfig:
    """The job's config, composed as Hydra's basic and submitit launchers compose it."""
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx if job_id is None else job_id
        sweep_config.hydra.job.num = idx
    return sweep_config


class hydra_config_of:  # noqa: N801 (used like a function: ``with hydra_config_of(cfg):``)
    """Set the global ``HydraConfig`` to a job's config for a block, then restore it (as run_job does)."""

    def __init__(self, config: DictConfig) -> None:
        self.config = config

    def __enter__(self) -> None:
        self.saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(self.config)

    def __exit__(self, *exc: object) -> None:
        HydraConfig.instance().cfg = self.saved


def prepare(composed: DictConfig, idx: int, overrides: Sequence[str]) -> Member:
    """Decide the run directory and resolve the task config, as ``hydra.core.utils.run_job`` would."""
    config = copy.deepcopy(composed)
    with hydra_config_of(config):
        out = str(OmegaConf.select(config, "hydra.sweep.dir"))
        subdir = OmegaConf.select(config, "hydra.sweep.subdir")
        if subdir is not None:
            out = os.path.join(out, str(subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(out)
    with hydra_config_of(config):
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        resolved = copy.deepcopy(task_cfg)
        try:
            with read_write(resolved):
                OmegaConf.resolve(resolved)
        except Exception as exc:  # the single job reports it the way it reports any bad config
            return Member(idx, list(overrides), composed, config, task_cfg, resolved, Path(out).absolute(),
                          reason=f"its config does not resolve ({type(exc).__name__}: {exc})")  # fmt: skip
    return Member(idx, list(overrides), composed, config, task_cfg, resolved, Path(out).absolute())


def classify(member: Member) -> None:
    """Set ``member.reason`` (it runs alone) or ``member.key`` (it packs with equal keys)."""
    if member.reason is not None:
        return
    if member.config.hydra.job.chdir:
        member.reason = "hydra.job.chdir=true: every job needs its own working directory, a pack has one"
        return
    try:
        packed = engine()
        member.reason = packed.unpackable_reason(member.resolved)
        if member.reason is None:
            env = tuple(sorted((str(k), str(v)) for k, v in (member.config.hydra.job.env_set or {}).items()))
            member.key = (packed.pack_key(member.resolved), env)
    except Exception as exc:  # e.g. a bad value: the single job records it as a failed job
        member.reason = f"its config could not be checked for packing ({type(exc).__name__}: {exc})"
        member.key = None


def group(keys: Sequence[Hashable | None], pack_size: int | None) -> list[tuple[str, list[int]]]:
    """Positions of ``keys`` grouped into units: ``(PACK, [i, ...])`` or ``(SINGLE, [i])``.

    ``None`` keys run alone. Equal keys form packs of at most ``pack_size`` members, in job
    order (contiguous chunks: the last one may be smaller). Units are ordered by their first
    job, so a sweep of CNNs and FCNs trains its CNN packs and FCN packs one after the other.
    """
    if pack_size is not None and pack_size < 1:
        raise ValueError(f"pack_size must be >= 1 or None, got {pack_size}")
    by_key: dict[Hashable, list[int]] = {}
    units: list[tuple[str, list[int]]] = []
    for i, key in enumerate(keys):
        if key is None:
            units.append((SINGLE, [i]))
        else:
            by_key.setdefault(key, []).append(i)
    for positions in by_key.values():
        size = pack_size or len(positions)
        units.extend((PACK, positions[s : s + size]) for s in range(0, len(positions), size))
    return sorted(units, key=lambda u: u[1][0])


def check_devices(members: Sequence[Member], executor: str) -> None:
    """``trainer=gpu`` where this machine has no CUDA: a one-line error before anything runs.

    With ``executor=slurm`` the packs run on the cluster's GPU nodes, so the machine that
    submits them need not have one.
    """
    if executor == "slurm":
        return
    accelerators = {str(OmegaConf.select(m.resolved, "trainer.accelerator", default="auto")) for m in members}
    if accelerators & {"gpu", "cuda"}:
        import torch

        if not torch.cuda.is_available():
            accel = sorted(accelerators & {"gpu", "cuda"})[0]
            exit_with_error(
                ConfigError(
                    "trainer.accelerator",
                    accel,
                    "'cpu' or 'auto' with hydra/launcher=packed on a machine without CUDA "
                    "(or hydra.launcher.executor=slurm to run the packs on GPU nodes)",
                )
            )
