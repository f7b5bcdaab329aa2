"""Hydra entry point: ``python train.py [overrides]`` or ``weightshare-train [overrides]``.

One job = one run directory. The job validates its config before touching data, writes
``results.json`` (status ``running``, then ``completed``/``diverged``/``failed``/``pruned``),
trains, scores the held-out data on every evaluation variant, and returns the config's
``optimized_metric`` (for sweepers). In a multirun a failing job is recorded and the sweep
goes on; in a single run a user error is printed as one line and the exit status is 2.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from weightshare.config import register_configs, resolved_container, validate_config
from weightshare.config.paths import CONF_DIR
from weightshare.errors import CheckpointError, ConfigError
from weightshare.job import Job, exit_policy, job_lifecycle, wants_resume
from weightshare.results import atomic_write_text, read_json

log = logging.getLogger("weightshare")

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


def _resolve_ckpt_path(cfg: DictConfig, out: Path) -> str | None:
    """``ckpt_path=last`` (``resume=true``, a requeued SLURM job) means this run directory's last checkpoint."""
    want = cfg.ckpt_path if cfg.ckpt_path is not None else ("last" if wants_resume(cfg) else None)
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
    """Run one job, its ``results.json`` owned by :func:`~weightshare.job.job_lifecycle`.

    Errors are recorded there and re-raised; :func:`task` decides what they mean for the process.
    """
    with job_lifecycle(cfg, record_unopened=_is_multirun()) as job:
        validate_config(cfg)
        _check_device(cfg)
        job.open()
        if cfg.skip_completed and cfg.ckpt_path is None and not cfg.resume and job.completed_before:
            log.info("job already completed (%s): skipping; set skip_completed=false to rerun", job.results_path)
            job.summary = job.prev  # the record stays as it was
            return _objective(cfg, job.prev)
        ckpt_path = _resolve_ckpt_path(cfg, job.out)
        if cfg.divergence.cnn_epochs > 0:
            cfg = _run_cnn_stage(cfg, job)
        atomic_write_text(job.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        job.summary["config"] = resolved_container(cfg)
        job.save()
        return _fit_and_test(cfg, job, ckpt_path)


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
    from weightshare.builders import build_run
    from weightshare.checkpoints import load_checkpoint, module_state
    from weightshare.results import best_and_final, read_metrics_csv

    run = build_run(cfg, job.out, resolved_config=job.summary["config"], group=_sweep_group(cfg))
    module, trainer = run.module, run.trainer
    job.save(param_count=module.param_count, data_info=run.info.__dict__)
    log.info("%s on %s: %s parameters, output %s", cfg.model.name, cfg.data.name, f"{module.param_count:,}", job.out)

    if cfg.train:
        if ckpt_path is not None:
            load_checkpoint(ckpt_path)  # refuses a file that is not weights-only, with a clear error
            log.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    elif ckpt_path is not None:
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
    pruned = any(getattr(cb, "pruned", False) for cb in run.callbacks)
    init = next((cb.init_metrics for cb in run.callbacks if getattr(cb, "init_metrics", None)), {})
    job.save(epochs_completed=len(rows), stopped_epoch=final.get("epoch"), best=best, final=final, init=init)
    test_metrics: dict[str, float] = {}
    if cfg.test:
        (scores,) = trainer.test(module, datamodule=run.datamodule, verbose=False) or [{}]
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
    return exit_policy(lambda: train(cfg), multirun=_is_multirun())


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return task(cfg)


if __name__ == "__main__":
    main()
