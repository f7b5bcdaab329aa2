"""One member of a pack: its job, its single-run callbacks and loggers, its log lines.

A member is its single run: the parts come from :func:`weightshare.builders.build_parts`
(data module, module, the callbacks of ``build_callbacks`` and the loggers), and it ends
like ``weightshare.train`` ends a job. Per-member control is those callbacks, unchanged:
Lightning's ``EarlyStopping`` and ``ModelCheckpoint`` (best/last in the single-run format),
the CSV writer, the pruning, filter metrics, filter images and dynamic-sharing callbacks.
:class:`MemberCallbacks` runs them for every member still training, each through a
:class:`MemberTrainer`; :class:`MemberLoggers` hands each member's logged metrics to its
own loggers; :class:`MemberLogFilter` keeps other members' lines out of its ``train.log``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from weightshare.job import Job
from weightshare.pack_module import PackModule

log = logging.getLogger("weightshare.packed")

__all__ = ["Member", "MemberCallbacks", "MemberLogFilter", "MemberLoggers", "MemberTrainer"]

#: the run directory of the member whose code is running (None: the pack's own lines)
_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("pack_member", default=None)


@contextlib.contextmanager
def speaking(member: Member) -> Iterator[None]:
    """Log records emitted in this block belong to ``member`` (see :class:`MemberLogFilter`)."""
    token = _CURRENT.set(str(member.out))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class MemberLogFilter(logging.Filter):
    """On a member's log file: its own lines and the pack's, not the other members'."""

    def __init__(self, out: str | Path) -> None:
        super().__init__()
        self.out = str(Path(out).absolute())

    def filter(self, record: logging.LogRecord) -> bool:
        owner = _CURRENT.get()
        return owner is None or str(Path(owner).absolute()) == self.out


class PackJob(Job):
    """The member's :class:`~weightshare.job.Job`, whose record says it trained in a pack.

    ``wall_time_s`` is the member's share of the pack's time (each stretch of the pack divided
    among the members training in it, :attr:`share_s`); the pack's own elapsed time is
    ``pack.elapsed_s``, never read as the member's cost.
    """

    def __init__(self, cfg: DictConfig, pack_id: str, size: int) -> None:
        super().__init__(cfg)
        self.pack = {"id": pack_id, "size": size}
        self.share_s = 0.0

    def save(self, **updates: Any) -> None:
        from weightshare.results import atomic_write_json

        self.summary.update(updates, pack={**self.pack, "elapsed_s": round(time.time() - self.t0, 3)})
        self.summary["wall_time_s"] = round(self.prior_wall_s + self.share_s, 3)
        atomic_write_json(self.results_path, self.summary)


class Member:
    """A pack member: config, job, and the single run's parts once :meth:`build` ran."""

    def __init__(self, cfg: DictConfig, position: int, pack_id: str, size: int) -> None:
        self.cfg, self.position = cfg, position
        self.job = PackJob(cfg, pack_id, size)
        self.job.open()
        self.out = self.job.out
        self.value: float | None = None
        self.status = "pending"
        self.ckpt_path: str | None = None
        self.callbacks: list[pl.Callback] = []
        self.loggers: list[Logger] = []

    def build(self, dataset: Any, group: str | None) -> tuple[Any, Any]:
        """The member's data module and module (seeded as its single run); writes config and record."""
        from omegaconf import OmegaConf

        from weightshare.builders import build_parts
        from weightshare.config import resolved_container
        from weightshare.results import atomic_write_text

        cfg = self.cfg
        atomic_write_text(self.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        self.job.summary["config"] = resolved_container(cfg)
        dm, module, self.callbacks, self.loggers = build_parts(
            cfg, self.out, dataset=dataset, resolved_config=self.job.summary["config"], group=group, progress_bar=False
        )
        self.module = module
        self.job.save(param_count=module.param_count, data_info=dm.info.__dict__)
        self.status = "running"
        return dm, module

    def finish(self, trainer: pl.Trainer, test: dict[str, float]) -> None:
        """End the member as ``weightshare.train`` ends a job (summary, test scores, objective)."""
        from weightshare.results import best_and_final, read_metrics_csv
        from weightshare.train import _objective

        self.job.save()
        for lg in self.loggers:  # end-of-run values beside the curves
            lg.log_metrics(
                {"param_count": float(self.module.param_count), "time/wall_s": self.job.summary["wall_time_s"]},
                step=trainer.global_step,
            )
        rows = read_metrics_csv(self.out / "metrics.csv")
        es = self.cfg.callbacks.early_stopping
        best, final = best_and_final(rows, es.monitor, es.mode, es.min_delta)
        pruned = any(getattr(cb, "pruned", False) for cb in self.callbacks)
        init = next((cb.init_metrics for cb in self.callbacks if getattr(cb, "init_metrics", None)), {})
        self.job.save(epochs_completed=len(rows), stopped_epoch=final.get("epoch"), best=best, final=final, init=init)
        self.status = "pruned" if pruned else "completed"
        self.job.save(
            status=self.status,
            test=test if self.cfg.test else {},
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            finished_unix=time.time(),
        )
        self.value = _objective(self.cfg, self.job.summary)
        log.info("done: val/acc=%s best=%s -> %s", final.get("val/acc"), best.get("val/acc"), self.job.results_path)
        self.close_loggers(0)

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the member's end (``diverged``, ``failed``, ``interrupted``)."""
        self.close_loggers(1)
        self.job.record_failure(exc)
        self.status = str(self.job.summary.get("status", "failed"))

    def close_loggers(self, exit_code: int) -> None:
        for lg in self.loggers:
            try:
                lg.finalize("success" if exit_code == 0 else "failed")
                if type(lg).__name__ == "WandbLogger":
                    lg.experiment.finish(exit_code=exit_code)
            except Exception as exc:  # a logger failing at the end must not fail the member
                log.warning("closing logger %s failed: %s", type(lg).__name__, exc)
        self.loggers = []


class _MemberOptimizer:
    """The pack optimizer as a member's callbacks read it: its own parameter group only."""

    def __init__(self, optimizer: Any, k: int) -> None:
        self.param_groups = [optimizer.param_groups[k]]


class MemberTrainer:
    """The pack's Trainer as one member's callbacks see it.

    A Trainer has one ``callback_metrics``, one ``should_stop``, one set of loggers, and saves
    the whole module; a member's early stopping, checkpoints and CSV writer must see the
    member's own. Those are this view's; everything else (epoch, step, strategy, precision,
    ``sanity_checking`` ...) is read from the pack's Trainer.
    """

    def __init__(self, trainer: pl.Trainer, pack: PackModule, member: Member) -> None:
        self._trainer, self._pack, self._member = trainer, pack, member
        self._prefix = f"m{member.position}/"
        self.should_stop = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)

    def _mine(self, metrics: dict[str, Any]) -> dict[str, Any]:
        n = len(self._prefix)
        return {k[n:]: v for k, v in metrics.items() if k.startswith(self._prefix)}

    @property
    def callback_metrics(self) -> dict[str, Any]:
        return self._mine(self._trainer.callback_metrics)

    @property
    def logged_metrics(self) -> dict[str, Any]:
        return self._mine(self._trainer.logged_metrics)

    @property
    def lightning_module(self) -> pl.LightningModule:
        return self._member.module

    @property
    def loggers(self) -> list[Logger]:
        return self._member.loggers

    @property
    def logger(self) -> Logger | None:
        return self._member.loggers[0] if self._member.loggers else None

    @property
    def optimizers(self) -> list[Any]:
        return [_MemberOptimizer(o, self._member.position) for o in self._trainer.optimizers]

    def save_checkpoint(self, filepath: str | Path, weights_only: bool = False, storage_options: Any = None) -> None:
        """The member's checkpoint in the single-run format, through the pack's checkpoint I/O."""
        states = {cb.state_key: cb.state_dict() for cb in self._member.callbacks}
        ckpt = self._pack.member_checkpoint(self._member.position, {k: v for k, v in states.items() if v}, weights_only)
        self._trainer.strategy.save_checkpoint(ckpt, filepath, storage_options=storage_options)


#: hooks passed on to every member still in the pack, as they are
_HOOKS = ("setup", "on_fit_start", "on_train_start", "on_validation_start", "on_validation_epoch_end",
          "on_validation_end")  # fmt: skip


class MemberCallbacks(pl.Callback):
    """Run every member's single-run callbacks on that member, while it is in the pack.

    At the end of each training epoch, a member whose callbacks asked to stop (early
    stopping, pruning) leaves the pack, once ``trainer.min_epochs`` allows it, as the single
    run's Trainer would stop; the pack stops when no member is left.
    """

    def __init__(self, pack: PackModule, members: list[Member]) -> None:
        self.pack, self.members = pack, members
        self.views: dict[int, MemberTrainer] = {}
        self.epoch_t0 = time.perf_counter()

    def _each(self, hook: str, trainer: pl.Trainer, ids: list[int] | None = None, *args: Any, **kw: Any) -> None:
        """Run ``hook`` of members ``ids`` (default: all in the pack); one failing fails only itself."""
        for k in list(self.pack.active) if ids is None else ids:
            m = self.members[k]
            view = self.views.setdefault(k, MemberTrainer(trainer, self.pack, m))
            m.module._current_fx_name = self.pack._current_fx_name
            with speaking(m):
                try:
                    for cb in m.callbacks:
                        getattr(cb, hook)(view, m.module, *args, **kw)
                except Exception as exc:  # a full disk, a broken logger: this member ends as failed
                    log.error("%s: member failed: %s: %s", m.out, type(exc).__name__, exc)
                    m.fail(exc)
                    self.pack.leave(k)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        x, y, ids = batch
        for i, k in enumerate(ids):
            if k in self.pack.active:
                self._each("on_train_batch_end", trainer, [k], outputs, (x[i], y[i]), idx)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.epoch_t0 = time.perf_counter()
        self._each("on_train_epoch_start", trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        active = list(self.pack.active)
        self._each("on_train_epoch_end", trainer, active)
        share = (time.perf_counter() - self.epoch_t0) / max(len(active), 1)
        for k in active:
            self.members[k].job.share_s += share
            if (
                k in self.pack.active
                and self.views[k].should_stop
                and trainer.current_epoch + 1 >= (trainer.min_epochs or 0)
            ):
                self.leave(trainer, k)
        rate = self.pack._images / max(time.perf_counter() - self.epoch_t0, 1e-9)
        log.info("pack epoch %d: %d of %d members still training, %.0f member-images/s",
                 trainer.current_epoch, len(self.pack.active), len(self.members), rate)  # fmt: skip
        if not self.pack.active:
            trainer.should_stop = True

    def leave(self, trainer: pl.Trainer, k: int) -> None:
        """Member ``k`` stops training: its ``on_train_end`` (last filter images), then out."""
        self._each("on_train_end", trainer, [k])
        self.pack.leave(k)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for k in list(self.pack.active):
            self.leave(trainer, k)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed pack: each member's callbacks get the states its checkpoint holds."""
        for k, states in state_dict.items():
            for cb in self.members[int(k)].callbacks:
                if cb.state_key in states:
                    cb.load_state_dict(states[cb.state_key])


def _forward(hook: str) -> Any:
    def run(self: MemberCallbacks, trainer: pl.Trainer, pl_module: Any, *args: Any, **kw: Any) -> None:
        self._each(hook, trainer, None, *args, **kw)

    run.__name__ = hook
    return run


for _hook in _HOOKS:
    setattr(MemberCallbacks, _hook, _forward(_hook))


class MemberLoggers(Logger):
    """The pack's one Lightning logger: each member's logged metrics go to its own loggers."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__()
        self.members = members

    @property
    def name(self) -> str:
        return "pack"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: each member's loggers got that member's config when they were built."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for m in self.members:
            prefix = f"m{m.position}/"
            mine = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
            if mine and "epoch" in metrics:
                mine["epoch"] = metrics["epoch"]
            for lg in m.loggers if mine else ():
                lg.log_metrics(mine, step=step)
