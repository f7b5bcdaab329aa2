"""Running the units of a launch: packs through ``weightshare.packed.train_pack``, the rest alone.

A pack member gets what Hydra's ``run_job`` gives a single job, written by the same steps:
its run directory, ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, its job
log file, the ``on_job_start``/``on_job_end`` callbacks, and a ``JobReturn``. ``run_job``
itself cannot be reused for a pack: it calls the task function once per job, and a pack is
one call for all its members. Unpackable jobs go through ``run_job`` unchanged.
"""

from __future__ import annotations

import copy
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from omegaconf import OmegaConf

from ._plan import PACK, Member, check_devices, classify, compose, engine, group, hydra_config_of, prepare

log = logging.getLogger(__name__)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Compose, group and run the jobs; one ``JobReturn`` per job, in job order."""
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep and config.hydra.sweep.mode is not None:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    members = []
    for k, overrides in enumerate(job_overrides):
        idx = initial_job_idx + k
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        member = prepare(compose(launcher, overrides, idx), idx, overrides)
        classify(member)
        members.append(member)
    check_devices(members, launcher.executor)
    units = [(kind, [members[i] for i in pos]) for kind, pos in group([m.key for m in members], launcher.pack_size)]
    log_plan(units, launcher)
    if launcher.executor == "local":
        results = [r for kind, unit in units for r in run_unit(launcher, kind, unit)]
    else:
        from ._submit import submit_units

        results = submit_units(launcher, units)
    by_idx = dict(results)
    return [by_idx[m.idx] for m in members]


def log_plan(units: Sequence[tuple[str, list[Member]]], launcher: Any) -> None:
    packs = [u for kind, u in units if kind == PACK]
    singles = [u[0] for kind, u in units if kind != PACK]
    where = "in this process" if launcher.executor == "local" else f"as submitit jobs ({launcher.executor})"
    log.info(
        "Packed launcher: %d jobs -> %d pack(s) of %s member(s) and %d single job(s), %s",
        sum(len(u) for _, u in units), len(packs), "/".join(str(len(p)) for p in packs) or "0", len(singles), where,
    )  # fmt: skip
    for pack in packs:
        log.info("\tpack: jobs %s", ", ".join(f"#{m.idx}" for m in pack))
    if singles:
        log.info("\tsingle jobs: %s", ", ".join(f"#{m.idx}" for m in singles))


def run_unit(launcher: Any, kind: str, members: list[Member]) -> list[tuple[int, JobReturn]]:
    """Run one pack or one single job in this process."""
    if kind == PACK:
        return run_pack(launcher, members)
    (m,) = members
    log.info("job #%d runs as a single job: %s", m.idx, m.reason)
    ret = run_job(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=m.composed,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return [(m.idx, ret)]


def _save_yaml(cfg: Any, path: Path) -> None:
    """Byte for byte what ``hydra.core.utils._save_config`` writes (that helper is private)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(OmegaConf.to_yaml(cfg))


def start_member(member: Member) -> JobReturn:
    """The run directory, ``.hydra/`` files and ``JobReturn`` of a member, as ``run_job`` makes them."""
    config = member.config
    member.output_dir.mkdir(parents=True, exist_ok=True)
    ret = JobReturn()
    ret.cfg = member.task_cfg
    with hydra_config_of(config):
        ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    overrides = OmegaConf.to_container(config.hydra.overrides.task)
    assert isinstance(overrides, list)
    ret.overrides = overrides
    ret.working_dir = os.getcwd()
    if config.hydra.output_subdir is not None:
        hydra_output = member.output_dir / str(config.hydra.output_subdir)
        _save_yaml(member.task_cfg, hydra_output / "config.yaml")
        _save_yaml(ret.hydra_cfg, hydra_output / "hydra.yaml")
        _save_yaml(config.hydra.overrides.task, hydra_output / "overrides.yaml")
    return ret


def member_log_files(members: Sequence[Member]) -> Callable[[], None]:
    """Give every member its job log file (``<run dir>/<job name>.log``), as a single job has.

    Hydra's job logging is configured for the first member; each file handler it opened in
    that member's directory is repeated in every other member's directory. Each file holds
    its member's own lines and the pack's (``weightshare.packed.member.MemberLogFilter``),
    never another member's. Returns the function that undoes all of it.
    """
    from weightshare.packed.member import MemberLogFilter

    first = members[0]
    with hydra_config_of(first.config):
        configure_log(first.config.hydra.job_logging, first.config.hydra.verbose)
    root = logging.getLogger()
    added: list[logging.Handler] = []
    added_filters: list[tuple[logging.Handler, logging.Filter]] = []
    for handler in list(root.handlers):
        if not isinstance(handler, logging.FileHandler):
            continue
        try:
            rel = Path(handler.baseFilename).relative_to(first.output_dir)
        except ValueError:
            continue  # a log file outside the run directory: shared already
        own = MemberLogFilter(first.output_dir)
        handler.addFilter(own)
        added_filters.append((handler, own))
        for m in members[1:]:
            extra = logging.FileHandler(m.output_dir / rel, mode=handler.mode, encoding=handler.encoding)
            extra.setLevel(handler.level)
            extra.setFormatter(handler.formatter)
            for f in handler.filters:
                if f is not own:
                    extra.addFilter(f)
            extra.addFilter(MemberLogFilter(m.output_dir))
            root.addHandler(extra)
            added.append(extra)

    def close() -> None:
        for h in added:
            root.removeHandler(h)
            h.close()
        for handler, own in added_filters:
            handler.removeFilter(own)

    return close


def run_pack(launcher: Any, members: list[Member]) -> list[tuple[int, JobReturn]]:
    """Train the members as one pack in this process; every member ends with a results.json."""
    callbacks = launcher.hydra_context.callbacks
    rets = [start_member(m) for m in members]
    close_logs = member_log_files(members)
    log.info("pack of %d: jobs %s", len(members), ", ".join(f"#{m.idx}" for m in members))
    values: list[Any] = [None] * len(members)
    error: str | None = None
    finished = False
    try:
        with ExitStack() as stack:
            stack.enter_context(env_override(rets[0].hydra_cfg.hydra.job.env_set))
            for m in members:
                with hydra_config_of(m.config):
                    callbacks.on_job_start(config=m.config, task_function=launcher.task_function)
            stack.enter_context(hydra_config_of(members[0].config))
            try:
                out = engine().train_pack([m.resolved for m in members])
                if len(out) != len(members):
                    raise RuntimeError(f"train_pack returned {len(out)} values for {len(members)} members")
                values = list(out)
            except Exception as exc:  # a pack-level failure: every unfinished member records it
                error = f"{type(exc).__name__}: {exc}"
                log.error("pack of jobs %s failed: %s", [m.idx for m in members], error)
                log.debug("%s", traceback.format_exc())
        finished = True
    finally:
        for m in members:  # nothing is dropped silently, not even on SIGTERM
            ensure_recorded(m, error if finished else "the pack was stopped", "failed" if finished else "interrupted")
        close_logs()
    task_name = JobRuntime.instance().get("name")
    for m, ret, value in zip(members, rets, values):
        ret.return_value = value
        ret.status = JobStatus.COMPLETED
        ret.task_name = task_name
        with hydra_config_of(m.config):
            callbacks.on_job_end(config=m.config, job_return=ret)
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return [(m.idx, ret) for m, ret in zip(members, rets)]


def ensure_recorded(member: Member, error: str | None, status: str) -> None:
    """A member the trainer left without a final status gets one (``status``, with the error)."""
    from weightshare.job import record_end
    from weightshare.results import run_identity

    error = error or "the packed trainer returned without finishing this member"
    record = record_end(member.output_dir, status, error, identity=lambda: run_identity(member.resolved))
    if record is not None:
        log.error("job #%d: %s (%s)", member.idx, record["status"], record["error"])
