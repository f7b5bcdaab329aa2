"""``train_pack``: K jobs trained as one :class:`~weightshare.pack_module.PackModule` by one Trainer.

The Trainer is built as a single run's (:func:`weightshare.builders.build_trainer_kwargs`:
precision, devices, checkpoint I/O plugins, determinism), with a pack's progress bar and
:class:`~weightshare.packed.member.MemberCallbacks` / ``MemberLoggers`` in place of one run's
callbacks and loggers. Members that cannot step together (train/val sets of different sizes,
or resuming from different epochs) form sub-packs, trained one after the other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from weightshare.packed.key import pack_key, unpackable_reason
from weightshare.packed.member import Member, MemberCallbacks, MemberLoggers, speaking

log = logging.getLogger("weightshare.packed")

__all__ = ["train_pack"]


def train_pack(cfgs: Sequence[DictConfig]) -> list[float | None]:
    """Train the members (equal ``pack_key``, each packable); each one's objective, None if it failed.

    Raises ValueError when the configs cannot form one pack (a launcher bug, not a member
    error), and ``SystemExit(143)`` on SIGTERM after recording every unfinished member.
    """
    from weightshare.config import validate_config
    from weightshare.job import Job
    from weightshare.train import _check_device, _objective, _resolve_ckpt_path

    cfgs = list(cfgs)
    if not cfgs:
        return []
    key = pack_key(cfgs[0])
    for i, cfg in enumerate(cfgs):
        reason = unpackable_reason(cfg)
        if reason is not None:
            raise ValueError(f"train_pack: member {i} is not packable: {reason}")
        if pack_key(cfg) != key:
            diff = [k for (k, a), (_, b) in zip(key, pack_key(cfg)) if a != b]
            raise ValueError(f"train_pack: member {i} differs from member 0 in shared settings {diff}")
    pack_id = hashlib.sha1("|".join(str(c.paths.output_dir) for c in cfgs).encode()).hexdigest()[:12]
    results: list[float | None] = [None] * len(cfgs)
    members: list[Member] = []
    for i, cfg in enumerate(cfgs):
        try:
            validate_config(cfg)
            _check_device(cfg)
            m = Member(cfg, i, pack_id, len(cfgs))
            if cfg.skip_completed and cfg.ckpt_path is None and not cfg.resume and m.job.completed_before:
                log.info("job already completed (%s): skipping; set skip_completed=false to rerun", m.job.results_path)
                results[i] = _objective(cfg, m.job.prev)
                continue
            m.ckpt_path = _resolve_ckpt_path(cfg, m.out)
            members.append(m)
        except Exception as exc:
            log.error("pack member %d failed at start: %s: %s", i, type(exc).__name__, exc)
            Job(cfg).record_failure(exc)
    if members:
        _run(members)
    for m in members:
        results[m.position] = m.value
    return results


def _run(members: list[Member]) -> None:
    from weightshare.data.datamodule import TensorDataModule
    from weightshare.job import _is_lightning_sigterm
    from weightshare.loggers import finish_wandb
    from weightshare.train import _sweep_group

    cfg0 = members[0].cfg
    if any("wandb" in m.cfg.logger.names for m in members):
        import wandb

        wandb.setup(wandb.Settings(reinit="create_new"))  # one W&B run per member, open together
    index = {id(m): m.position for m in members}
    try:
        dataset = TensorDataModule(cfg0.data, cfg0.aug, cfg0.eval, seed=cfg0.seed).load()
        built = []
        for m in members:
            try:
                with speaking(m):
                    dm, module = m.build(dataset, _sweep_group(m.cfg))
                    start = _start_epoch(m)
            except Exception as exc:  # this member only (a broken logger, a foreign checkpoint)
                log.error("%s: member failed at start: %s: %s", m.out, type(exc).__name__, exc)
                m.fail(exc)
                continue
            built.append((m, dm, module, (start, len(dm.train_idx), len(dm.val_idx))))
        groups: dict[tuple, list] = {}
        for item in built:
            groups.setdefault(item[3], []).append(item[:3])
        for group in groups.values():
            _fit(group)
    except BaseException as exc:
        for m in members:
            if m.status in ("pending", "running"):
                m.fail(exc)
        if _is_lightning_sigterm(exc):
            log.error("terminated (SIGTERM): resume with resume=true")
            raise SystemExit(143) from None
        raise
    finally:
        for m in members:
            m.position = index[id(m)]
        finish_wandb()


def _start_epoch(m: Member) -> int:
    from weightshare.checkpoints import load_checkpoint

    if m.ckpt_path is None:
        return 0
    m.resume_ckpt = load_checkpoint(m.ckpt_path)  # refuses a file that is not weights-only
    log.info("resuming from %s", m.ckpt_path)
    return int(m.resume_ckpt["epoch"]) + 1


def _fit(group: list[tuple[Member, Any, Any]]) -> None:
    """Train one sub-pack to the end and finish its members."""
    import pytorch_lightning as pl

    from weightshare.builders import build_progress_bar, build_trainer_kwargs, to_precision
    from weightshare.pack_module import PackModule
    from weightshare.packed.data import PackData

    members = [m for m, _, _ in group]
    for k, m in enumerate(members):
        m.position = k
    pack = PackModule([module for _, _, module in group])
    data = PackData([dm for _, dm, _ in group], lambda: pack.active)
    control = MemberCallbacks(pack, members)

    def leave(k: int, exc: BaseException) -> None:
        with speaking(members[k]):
            log.error("%s: %s: %s", members[k].out, type(exc).__name__, exc)
            members[k].fail(exc)

    pack.on_leave = leave
    cfg0 = members[0].cfg
    bar = build_progress_bar(cfg0.callbacks.progress_bar)
    kwargs = {**build_trainer_kwargs(cfg0, members[0].out), "enable_checkpointing": False}
    trainer = pl.Trainer(**kwargs, callbacks=[control, *([bar] if bar else [])], logger=MemberLoggers(members))
    to_precision(trainer, pack)  # before the resume loads the members' weights
    log.info("pack %s: %d members, %s", members[0].job.pack["id"], len(members), ", ".join(m.out.name for m in members))
    resume = _resume_checkpoint(members)
    try:
        trainer.fit(pack, datamodule=data, ckpt_path=resume, weights_only=True)
    finally:
        if resume is not None:
            Path(resume).unlink(missing_ok=True)
    pack.active = [k for k, m in enumerate(members) if m.status == "running"]
    tests: dict[int, dict[str, float]] = {k: {} for k in pack.active}
    if pack.active and cfg0.test:
        (scores,) = trainer.test(pack, datamodule=data, verbose=False) or [{}]
        for name, value in scores.items():
            k, _, rest = name.partition("/")
            tests[int(k[1:])][rest.removeprefix("test/")] = float(value)
    for k in list(tests):
        with speaking(members[k]):
            members[k].finish(trainer, tests[k])


def _resume_checkpoint(members: list[Member]) -> str | None:
    """The members' last checkpoints as one pack checkpoint (a file Lightning resumes from)."""
    from weightshare.pack_module import merge_states

    ckpts = [getattr(m, "resume_ckpt", None) for m in members]
    if ckpts[0] is None:
        return None
    first = ckpts[0]
    pack = {key: first[key] for key in ("epoch", "global_step", "pytorch-lightning_version", "loops")}
    pack["state_dict"] = {f"members.{k}.{n}": v for k, c in enumerate(ckpts) for n, v in c["state_dict"].items()}
    pack["optimizer_states"] = [merge_states([c["optimizer_states"][0] for c in ckpts])]
    pack["lr_schedulers"] = [
        merge_states([c["lr_schedulers"][i] for c in ckpts]) for i in range(len(first["lr_schedulers"]))
    ]
    pack["callbacks"] = {MemberCallbacks.__qualname__: {k: c.get("callbacks", {}) for k, c in enumerate(ckpts)}}
    path = members[0].out / "checkpoints" / ".pack-resume.ckpt"
    torch.save(pack, path)
    for m in members:
        m.resume_ckpt = None
    return str(path)
