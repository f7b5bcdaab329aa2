"""Hydra entry point: ``python train.py [overrides]`` or ``weightshare-train [overrides]``.

One job = one run directory. The job validates its config before touching data, writes
``results.json`` (status ``running``, then ``completed``/``diverged``/``failed``/``pruned``),
trains, scores the held-out data on every evaluation variant, and returns the config's
``optimized_metric`` (for sweepers). In a multirun a failing job is recorded and the sweep
goes on; in a single run a user error is printed as one line and the exit status is 2.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from weightshare.config import register_configs, resolved_container, validate_config
from weightshare.config.compose import CONF_DIR, ROOT
from weightshare.errors import CheckpointError, ConfigError, WeightshareError
from weightshare.results import atomic_write_json, atomic_write_text, read_json, run_identity

log = logging.getLogger("weightshare")

os.environ.setdefault("WEIGHTSHARE_ROOT", str(ROOT))

register_configs()

# noise that hides the run's own log: a Lightning-internal deprecation, and a hint about
# log_every_n_steps that does not apply (epoch metrics are what this trainer logs)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _sweep_group(cfg: DictConfig) -> str | None:
    """W&B group of a multirun job: task and sweep directory name, shared by all its jobs."""
    if not _is_multirun():
        return None
    return f"{cfg.task_name}-{Path(HydraConfig.get().sweep.dir).name}"


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("paths.output_dir", str(out), f"a writable directory ({exc.strerror or exc})") from None
    return out


def _resolve_ckpt_path(cfg: DictConfig, out: Path) -> str | None:
    """``ckpt_path=last`` (or ``resume=true``) means this run directory's last checkpoint."""
    want = cfg.ckpt_path if cfg.ckpt_path is not None else ("last" if cfg.resume else None)
    if want is None:
        return None
    if want == "last":
        last = out / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        log.warning("no checkpoint to resume at %s: starting from scratch", last)
        return None
    if not Path(want).is_file():
        raise CheckpointError(f"ckpt_path={want!r}: no such file (use 'last' to resume this run directory)")
    return str(want)


class Job:
    """Everything one run holds: config, output directory, summary being built."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.out = _output_dir(cfg)
        self.results_path = self.out / "results.json"
        self.t0 = time.time()
        self.identity = run_identity(cfg)
        #: what an earlier start of this run directory left (empty if none)
        self.prev: dict[str, Any] = read_json(self.results_path) or {}
        prev = self.prev
        resuming = (cfg.ckpt_path == "last" or cfg.resume) and prev.get("identity") == self.identity
        # a resumed run keeps counting from its first start
        self.prior_wall_s = float(prev.get("wall_time_s") or 0.0) if resuming else 0.0
        self.summary: dict[str, Any] = {
            "status": "running",
            "error": None,
            "task": cfg.task_name,
            "identity": self.identity,
            "seed": cfg.seed,
            "output_dir": str(self.out),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": prev.get("started_at") if resuming else time.strftime("%Y-%m-%dT%H:%M:%S"),
            "started_unix": self.t0,
            "resumed": int(prev.get("resumed", 0)) + 1 if resuming else 0,
        }

    def save(self, **updates: Any) -> None:
        self.summary.update(updates)
        self.summary["wall_time_s"] = round(self.prior_wall_s + time.time() - self.t0, 3)
        atomic_write_json(self.results_path, self.summary)


def _completed_value(job: Job) -> float | bool | None:
    """The stored objective of an already-completed job (``skip_completed``), else False."""
    prev = job.prev
    if prev.get("status") != "completed":
        return False
    if prev.get("identity") != job.identity:
        log.warning("%s holds a completed run of another config: training this one anew", job.results_path)
        return False
    log.info("job already completed (%s): skipping; set skip_completed=false to rerun", job.results_path)
    return _objective(job.cfg, prev)


def _objective(cfg: DictConfig, summary: dict[str, Any]) -> float | None:
    """The value a sweeper optimises: ``optimized_metric`` from the last epoch, else the test pass.

    A metric the run did not log is a warning and None (the sweeper records the trial as
    failed with that message), never an error that would turn a finished run into a failure.
    """
    key = cfg.optimized_metric
    if not key:
        return None
    candidates = [("final", key), ("best", key), ("test", key.removeprefix("val/"))]
    for section, name in candidates:
        value = (summary.get(section) or {}).get(name)
        if value is not None:
            return float(value)
    logged = sorted(summary.get("final") or summary.get("test") or {})
    log.warning("optimized_metric=%r was not logged by this run (it logged %s); returning None", key, logged[:12])
    return None


def _check_device(cfg: DictConfig) -> None:
    """A GPU trainer config on a machine without one: a clear error before data is read."""
    import torch

    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", accelerator, "'cpu' or 'auto' (no CUDA device on this machine)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator", accelerator, "'cpu' or 'auto' (no MPS device on this machine)")


def train(cfg: DictConfig) -> float | None:
    """Run one job (no error handling: see :func:`task`)."""
    validate_config(cfg)
    _check_device(cfg)
    job = Job(cfg)
    if cfg.skip_completed and cfg.ckpt_path is None and not cfg.resume:
        done = _completed_value(job)
        if done is not False:
            return done  # type: ignore[return-value]
    ckpt_path = _resolve_ckpt_path(cfg, job.out)
    if cfg.divergence.cnn_epochs > 0:
        cfg = _run_cnn_stage(cfg, job)
    atomic_write_text(job.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    job.summary["config"] = resolved_container(cfg)
    job.save()
    exit_code = 1
    try:
        value = _fit_and_test(cfg, job, ckpt_path)
        exit_code = 0
        return value
    except BaseException as exc:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        from weightshare.module import DivergenceError

        status = "diverged" if isinstance(exc, DivergenceError) else "failed"
        # SIGTERM (a scheduler's preemption or time limit) and Ctrl+C: Lightning turns them into
        # SystemExit; the run is resumable, and a SIGTERM must not exit 0 as if it had finished
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        job.save(status=status, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
        if isinstance(exc, SIGTERMException):
            log.error("terminated (SIGTERM): resume with ckpt_path=last in %s", job.out)
            raise SystemExit(143) from None
        raise
    finally:
        from weightshare.loggers import finish_wandb

        finish_wandb(exit_code=exit_code)


def _run_cnn_stage(cfg: DictConfig, job: Job) -> DictConfig:
    """Stage 1 of the divergence experiment: train the CNN, return the FCN config that starts from it.

    The CNN stage is an ordinary job in ``<run>/cnn_stage/`` (its own results.json and
    checkpoints), so a killed two-stage run resumes or skips it like any other job.
    """
    stage_dir = job.out / "cnn_stage"
    cnn_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cnn_cfg.model.name = "cnn"
    cnn_cfg.model.share_penalty = 0.0
    cnn_cfg.divergence.cnn_epochs = 0
    cnn_cfg.trainer.max_epochs = cfg.divergence.cnn_epochs
    cnn_cfg.paths.output_dir = str(stage_dir)
    cnn_cfg.test = False
    cnn_cfg.logger.names = [n for n in cfg.logger.names if n != "wandb"]
    if (stage_dir / "checkpoints" / "last.ckpt").is_file() and (read_json(stage_dir / "results.json") or {}).get(
        "status"
    ) != "completed":
        cnn_cfg.ckpt_path = "last"
    log.info("divergence stage 1: training the CNN for %d epochs in %s", cfg.divergence.cnn_epochs, stage_dir)
    train(cnn_cfg)
    fcn_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    fcn_cfg.model.init_from = str(stage_dir / "checkpoints" / "last.ckpt")
    fcn_cfg.divergence.cnn_epochs = 0
    job.summary["stages"] = {"cnn": str(stage_dir), "init_from": fcn_cfg.model.init_from}
    log.info("divergence stage 2: unsharing into an FCN, fresh optimiser")
    return fcn_cfg


def _fit_and_test(cfg: DictConfig, job: Job, ckpt_path: str | None) -> float | None:
    import pytorch_lightning as pl
    import torch

    from weightshare.builders import build_callbacks, build_trainer_kwargs
    from weightshare.checkpoints import load_checkpoint
    from weightshare.data.datamodule import TensorDataModule
    from weightshare.loggers import build_loggers, make_run_name
    from weightshare.module import WeightShareModule
    from weightshare.results import best_and_final, read_metrics_csv

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = TensorDataModule(cfg.data, cfg.aug, cfg.eval, seed=cfg.seed)
    datamodule.setup("fit")
    info = datamodule.info
    module = WeightShareModule(
        cfg.model,
        cfg.optimizer,
        cfg.scheduler,
        info,
        list(cfg.eval.variants),
        max_epochs=cfg.trainer.max_epochs,
        nan_guard=cfg.callbacks.nan_guard,
    )
    job.save(param_count=module.param_count, data_info=info.__dict__)
    log.info("%s on %s: %s parameters, output %s", cfg.model.name, cfg.data.name, f"{module.param_count:,}", job.out)

    callbacks = build_callbacks(cfg, job.out)
    run_name = make_run_name(cfg)
    logger_cfg = cfg.logger.copy()
    logger_cfg.wandb.tags = list(dict.fromkeys([*cfg.logger.wandb.tags, *cfg.tags]))  # experiment tags too
    loggers = build_loggers(logger_cfg, job.out, run_name, job.summary["config"], group=_sweep_group(cfg))
    trainer = pl.Trainer(**build_trainer_kwargs(cfg, job.out), callbacks=callbacks, logger=loggers or False)

    if cfg.train:
        if ckpt_path is not None:
            load_checkpoint(ckpt_path)  # refuses a file that is not weights-only, with a clear error
            log.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    elif ckpt_path is not None:
        from weightshare.checkpoints import module_state

        module.net.load_state_dict(module_state(load_checkpoint(ckpt_path), "net.", ckpt_path))

    job.save()  # refresh wall_time_s
    for lg in trainer.loggers:  # end-of-run values beside the curves (CSV, TensorBoard, W&B)
        lg.log_metrics(
            {"param_count": float(module.param_count), "time/wall_s": job.summary["wall_time_s"]},
            step=trainer.global_step,
        )
    rows = read_metrics_csv(job.out / "metrics.csv")
    es = cfg.callbacks.early_stopping
    best, final = best_and_final(rows, es.monitor, es.mode, es.min_delta)
    pruned = any(getattr(cb, "pruned", False) for cb in callbacks)
    init = next((cb.init_metrics for cb in callbacks if getattr(cb, "init_metrics", None)), {})
    job.save(
        epochs_completed=len(rows),
        stopped_epoch=final.get("epoch"),
        best=best,
        final=final,
        init=init,
    )
    test_metrics: dict[str, float] = {}
    if cfg.test:
        (scores,) = trainer.test(module, datamodule=datamodule, verbose=False) or [{}]
        test_metrics = {k.removeprefix("test/"): float(v) for k, v in scores.items()}
    job.save(
        status="pruned" if pruned else "completed",
        test=test_metrics,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        finished_unix=time.time(),
    )
    value = _objective(cfg, job.summary)
    log.info("done: val/acc=%s best=%s -> %s", final.get("val/acc"), best.get("val/acc"), job.results_path)
    return value


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: one-line errors in single runs, recorded failures in multiruns."""
    multirun = _is_multirun()
    try:
        return train(cfg)
    except WeightshareError as exc:
        if multirun:
            log.error("%s", exc)
            _record_failure(cfg, exc)
            return None
        print(f"error: {exc}", file=sys.stderr)  # once, one line (the console log would repeat it)
        sys.exit(2)
    except Exception as exc:
        if multirun:
            log.error("job failed: %s: %s", type(exc).__name__, exc)
            _record_failure(cfg, exc)
            return None
        raise


def _record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """Make sure a failed multirun job leaves ``results.json`` with status failed/diverged."""
    try:
        path = Path(cfg.paths.output_dir) / "results.json"
        prev = read_json(path) or {}
        if prev.get("status") in ("failed", "diverged"):
            return
        prev.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        prev.setdefault("identity", _safe_identity(cfg))
        atomic_write_json(path, prev)
    except Exception as inner:  # the output dir itself may be the problem
        log.error("could not record the failure: %s", inner)


def _safe_identity(cfg: DictConfig) -> dict[str, Any]:
    try:
        return run_identity(cfg)
    except Exception:
        return {}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return task(cfg)


if __name__ == "__main__":
    main()
