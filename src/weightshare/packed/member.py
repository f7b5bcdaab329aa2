"""One member of a pack: its run directory, control state and everything it writes.

A member writes what its single job writes, through the single job's own code: the
:class:`~weightshare.job.Job` (``results.json``, identity, resume counter,
``skip_completed``, :meth:`~weightshare.job.Job.record_failure` for the statuses of a
failed member; not the :func:`~weightshare.job.job_lifecycle` context manager itself, because
members end at different times and one member's exception must not unwind the others),
:class:`~weightshare.results.EpochTable` (``metrics.csv``), the
project's loggers (:func:`weightshare.builders.build_loggers`), filter metrics
(:func:`~weightshare.metrics.filter_distance.layer_filter_metrics`) and filter images
(:class:`~weightshare.callbacks.filter_images.FilterImageCallback`).

Control follows the single run's callbacks: :class:`EarlyStop` is Lightning's
``EarlyStopping`` rule (monitor, mode, patience, min_delta, no restore), the best
checkpoint is ``ModelCheckpoint``'s (strict improvement, the first epoch always), and
Lightning's ``min_epochs`` keeps a signalled stop waiting. Checkpoints are Lightning-style
dicts (``epoch``, ``global_step``, ``state_dict`` with ``net.*`` keys and
``val_acc_best.max_value``, ``optimizer_states``), plus a ``packed`` entry with the control
state, so ``init_from``, the report tools and a resumed pack read them.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from weightshare.results import EpochTable, atomic_write_text, best_and_final, read_json

log = logging.getLogger("weightshare.packed")

__all__ = ["EarlyStop", "Member", "f32"]


def f32(value: float | torch.Tensor) -> float:
    """``value`` as the single run logs it: Lightning stores logged scalars as float32."""
    return float(torch.tensor(float(value), dtype=torch.float32))


class EarlyStop:
    """Lightning's ``EarlyStopping`` decision (``check_finite``, no stopping threshold)."""

    def __init__(self, cfg: Any) -> None:
        self.enabled = bool(cfg.enabled)
        self.monitor = str(cfg.monitor)
        self.mode = str(cfg.mode)
        self.patience = int(cfg.patience)
        self.min_delta = abs(float(cfg.min_delta)) * (1.0 if self.mode == "max" else -1.0)
        self.best = -math.inf if self.mode == "max" else math.inf
        self.wait = 0

    def update(self, current: float) -> bool:
        """Feed the epoch's monitored value; True when the run should stop."""
        if not self.enabled:
            return False
        if not math.isfinite(current):
            return True
        better = current - self.min_delta > self.best if self.mode == "max" else current - self.min_delta < self.best
        if better:
            self.best, self.wait = current, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


class Member:
    """A pack member: config, run directory (``Job``), per-epoch table, loggers, control state."""

    def __init__(self, cfg: DictConfig, position: int) -> None:
        from weightshare.job import Job

        self.cfg = cfg
        self.position = position
        self.job = Job(cfg)
        self.job.open()
        self.out = self.job.out
        self.table = EpochTable(self.out / "metrics.csv")
        self.early = EarlyStop(cfg.callbacks.early_stopping)
        self.ckpt_cfg = cfg.callbacks.checkpoint
        self.best_score: float | None = None  # ModelCheckpoint's best monitored value
        self.val_acc_best = -math.inf
        self.init_metrics: dict[str, float] = {}
        self.should_stop = False
        self.pruned = False
        self.status = "pending"
        self.value: float | None = None
        self.start_epoch = 0
        self.resume_ckpt: dict[str, Any] | None = None
        self.loggers: list[Any] = []
        self.last_val: dict[str, float] = {}
        self.images: Any = None
        self.trial: Any = None
        self.lr = float(cfg.optimizer.lr)
        self.penalty = float(cfg.model.share_penalty)

    # ------------------------------------------------------------------ start
    def prepare(self) -> float | bool | None:
        """``skip_completed``: the stored objective of a completed run, else False (train it)."""
        from weightshare.train import _objective

        cfg = self.cfg
        if cfg.skip_completed and cfg.ckpt_path is None and not cfg.resume and self.job.completed_before:
            log.info("job already completed (%s): skipping; set skip_completed=false to rerun", self.job.results_path)
            self.job.summary = self.job.prev  # the record stays as it was
            self.status = "skipped"
            return _objective(cfg, self.job.prev)
        return False

    def load_resume(self) -> None:
        """With ``resume=true`` / ``ckpt_path=last``: read ``checkpoints/last.ckpt`` if present."""
        from weightshare.checkpoints import load_checkpoint
        from weightshare.train import _resolve_ckpt_path

        path = _resolve_ckpt_path(self.cfg, self.out)
        if path is None:
            return
        ckpt = load_checkpoint(path)
        if "packed" not in ckpt:
            from weightshare.errors import CheckpointError

            raise CheckpointError(f"{path} was written by a single run; resume it with the single trainer")
        self.resume_ckpt = ckpt
        self.start_epoch = int(ckpt["epoch"]) + 1
        state = ckpt["packed"]
        self.early.load(state["early_stopping"])
        self.best_score = state.get("best_score")
        self.val_acc_best = float(state.get("val_acc_best", -math.inf))
        self.init_metrics = dict(state.get("init_metrics") or {})
        self.should_stop = bool(state.get("should_stop", False))
        self.pruned = bool(state.get("pruned", False))
        log.info("resuming %s from %s (epoch %d)", self.out, path, self.start_epoch)

    def start(self, param_count: int, data_info: dict[str, Any]) -> None:
        """Write ``config.yaml`` and ``results.json`` (running), open loggers and metrics.csv."""
        from weightshare.builders import build_loggers
        from weightshare.config import resolved_container
        from weightshare.loggers import make_run_name
        from weightshare.models.registry import is_free_model

        cfg = self.cfg
        atomic_write_text(self.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        self.job.summary["config"] = resolved_container(cfg)
        self.job.summary["packed"] = True
        self.job.save(param_count=param_count, data_info=data_info)
        self.param_count = param_count
        logger_cfg = cfg.logger.copy()
        logger_cfg.wandb.tags = list(dict.fromkeys([*cfg.logger.wandb.tags, *cfg.tags]))
        self.loggers = build_loggers(logger_cfg, self.out, make_run_name(cfg), self.job.summary["config"], _group(cfg))
        self.table.load()
        self.table.truncate(self.start_epoch)
        if self.table.rows:  # resumed: the last validation so far (a member already stopped is tested on it)
            self.last_val = {k: v for k, v in self.table.rows[-1].items() if k.startswith("val/")}
        fi = cfg.callbacks.filter_images
        if fi.enabled and is_free_model(str(cfg.model.name)):  # as build_callbacks
            from weightshare.callbacks.filter_images import FilterImageCallback

            layers = list(fi.layers) if fi.layers else None
            self.images = FilterImageCallback(
                epochs=list(fi.epochs), last=fi.last, filter_index=fi.filter_index, layers=layers, out_dir=self.out
            )
        if cfg.trial.storage:
            # one reporter per member (the single job's module-level reporter holds one trial)
            from weightshare.trial_protocol import TrialLink, TrialReporter

            link = TrialLink.from_config(cfg.trial)
            if link is not None and link.monitor is not None:
                self.trial = TrialReporter(link)
            elif link is not None:
                log.warning("trial %d: no metric to monitor, pruning is off", link.trial_number)
        self.status = "running"

    # ------------------------------------------------------------------ epochs
    def draw_filters(self, net: torch.nn.Module, label: str, step: int) -> None:
        if self.images is not None:
            stub = SimpleNamespace(is_global_zero=True, global_step=step, loggers=self.loggers)
            self.images.draw(stub, net, label)  # type: ignore[arg-type]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_metrics(dict(metrics), step=step)

    def end_epoch(self, epoch: int, step: int, row: dict[str, float]) -> None:
        """Control (pruning, early stopping) and the epoch's row, like the single run's callbacks."""
        self.last_val = {k: v for k, v in row.items() if k.startswith("val/")}
        if self.trial is not None and not self.pruned and self.trial.report(epoch, row.get(self.trial.link.monitor)):
            self.pruned = self.should_stop = True
        self.table.append({"epoch": epoch, "step": step, **row})
        self.log_metrics({**row, "epoch": float(epoch)}, step)
        if self.early.monitor in row and self.early.update(row[self.early.monitor]):
            self.should_stop = True

    def improved(self, row: dict[str, float]) -> bool:
        """``ModelCheckpoint(save_top_k=1)``: save best when the monitored value strictly improves."""
        value = row.get(str(self.ckpt_cfg.monitor))
        if value is None:
            return False
        if self.best_score is None:
            return True
        return value > self.best_score if self.ckpt_cfg.mode == "max" else value < self.best_score

    def save_checkpoints(
        self, net: torch.nn.Module, optimizer_state: dict[str, Any], epoch: int, step: int, row: dict[str, float]
    ) -> None:
        import pytorch_lightning as pl

        if not self.ckpt_cfg.enabled:
            return
        best = self.improved(row)
        if best:
            self.best_score = row[str(self.ckpt_cfg.monitor)]
        state = {f"net.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state["val_acc_best.max_value"] = torch.tensor(self.val_acc_best, dtype=torch.float32)
        ckpt = {
            "epoch": epoch,
            "global_step": step,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": state,
            "optimizer_states": [optimizer_state],
            "lr_schedulers": [],
            "packed": {
                "early_stopping": self.early.state(),
                "best_score": self.best_score,
                "val_acc_best": self.val_acc_best,
                "init_metrics": dict(self.init_metrics),
                "should_stop": self.should_stop,
                "pruned": self.pruned,
            },
        }
        ckpt_dir = self.out / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if best:
            _atomic_save(ckpt, ckpt_dir / "best.ckpt")
        if self.ckpt_cfg.save_last:
            _atomic_save(ckpt, ckpt_dir / "last.ckpt")

    # ------------------------------------------------------------------ end
    def finish(self, status: str, error: str | None = None, step: int = 0) -> None:
        """End the member like ``weightshare.train`` ends a job (summary, test pass, objective)."""
        from weightshare.train import _objective

        self.status = status
        try:
            if status in ("completed", "pruned"):
                self.job.save()
                self.log_metrics(
                    {"param_count": float(self.param_count), "time/wall_s": self.job.summary["wall_time_s"]}, step
                )
                rows = self.table.rows
                es = self.cfg.callbacks.early_stopping
                best, final = best_and_final(rows, es.monitor, es.mode, es.min_delta)
                # the test stage scores the held-out fold with the final weights: exactly the
                # last validation pass (same weights, same samples, same perturbations)
                test = {k.removeprefix("val/"): v for k, v in self.last_val.items() if k != "val/acc_best"}
                self.job.save(
                    epochs_completed=len(rows), stopped_epoch=final.get("epoch"), best=best, final=final,
                    init=dict(self.init_metrics),
                )  # fmt: skip
                self.job.save(
                    status=status,
                    test=test if self.cfg.test else {},
                    finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    finished_unix=time.time(),
                )
                self.value = _objective(self.cfg, self.job.summary)
                log.info("%s done: val/acc=%s -> %s", self.out.name, final.get("val/acc"), self.job.results_path)
            else:
                self.job.save(status=status, error=error)
        finally:
            self.close_loggers(0 if status in ("completed", "pruned") else 1)

    def close_loggers(self, exit_code: int) -> None:
        for lg in self.loggers:
            try:
                lg.finalize("success" if exit_code == 0 else "failed")
                if type(lg).__name__ == "WandbLogger":
                    lg.experiment.finish(exit_code=exit_code)
            except Exception as exc:  # a logger failing at the end must not fail the member
                log.warning("%s: closing logger %s failed: %s", self.out, type(lg).__name__, exc)
        self.loggers = []


def _group(cfg: DictConfig) -> str | None:
    """The W&B group of a multirun job (as the single job's ``_sweep_group``), None outside Hydra."""
    try:
        from weightshare.train import _sweep_group

        return _sweep_group(cfg)
    except Exception:
        return None


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def previous_status(cfg: DictConfig) -> str | None:
    """The status in the member's existing ``results.json`` (None if there is none)."""
    return (read_json(Path(cfg.paths.output_dir) / "results.json") or {}).get("status")
