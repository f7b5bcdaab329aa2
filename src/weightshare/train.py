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
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from weightshare.config import register_configs, resolved_container
from weightshare.config.paths import CONF_DIR
from weightshare.config.preflight import check_environment, preflight
from weightshare.errors import CheckpointError, ConfigError, WeightshareError
from weightshare.job import USER_ERROR_EXIT, Job, exit_policy, job_lifecycle, wants_resume
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
    """The checkpoint to resume from, verified: ``ckpt_path=last`` (``resume=true``, a requeued SLURM job) means
    this run directory's.

    The file is read before anything of the run is written: a truncated or corrupt one, one
    that is not weights-only, or one written by a run with another config
    (:func:`~weightshare.fingerprint.check_same_run`) is a one-line error.
    """
    from weightshare.checkpoints import load_checkpoint
    from weightshare.fingerprint import CHECKPOINT_KEY, check_same_run, run_fingerprint

    want = cfg.ckpt_path if cfg.ckpt_path is not None else ("last" if wants_resume(cfg) else None)
    if want is None:
        return None
    if want == "last":
        last = out / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.warning("no checkpoint to resume at %s: starting from scratch", last)
            return None
        path = str(last)
    elif not Path(want).is_file():
        raise CheckpointError(f"ckpt_path={want!r}: no such file (use 'last' to resume this run directory)")
    else:
        path = str(want)
    ckpt = load_checkpoint(path)
    check_same_run(ckpt.get(CHECKPOINT_KEY), run_fingerprint(cfg), f"checkpoint {path}")
    return path


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


#: the packed trainer's name for the machine checks of one member (device, W&B, files, memory)
_check_device = check_environment


def train(cfg: DictConfig) -> float | None:
    """Run one job, its ``results.json`` owned by :func:`~weightshare.job.job_lifecycle`.

    Errors are recorded there and re-raised; :func:`task` decides what they mean for the process.
    """
    with job_lifecycle(cfg, record_unopened=_is_multirun()) as job:
        preflight(cfg)  # the command line ran it before Hydra started; jobs of a sweep run it here
        job.open()
        if cfg.skip_completed and cfg.ckpt_path is None and not cfg.resume and job.completed_before:
            log.info("job already completed (%s): skipping; set skip_completed=false to rerun", job.results_path)
            job.summary = job.prev  # the record stays as it was
            return _objective(cfg, job.prev)
        # a two-stage divergence run resumes its second stage, an FCN started from the CNN stage
        train_cfg = _fcn_stage_config(cfg, job.out) if cfg.divergence.cnn_epochs > 0 else cfg
        ckpt_path = _resolve_ckpt_path(train_cfg, job.out)
        if cfg.divergence.cnn_epochs > 0:
            _run_cnn_stage(cfg, job)
        cfg = train_cfg
        atomic_write_text(job.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        job.summary["config"] = resolved_container(cfg)
        job.save()
        return _fit_and_test(cfg, job, ckpt_path)


def _fcn_stage_config(cfg: DictConfig, out: Path) -> DictConfig:
    """Stage 2 of the divergence experiment: the FCN config that starts from the CNN stage's last checkpoint."""
    fcn_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    fcn_cfg.model.init_from = str(out / "cnn_stage" / "checkpoints" / "last.ckpt")
    fcn_cfg.divergence.cnn_epochs = 0
    return fcn_cfg


def _run_cnn_stage(cfg: DictConfig, job: Job) -> None:
    """Stage 1 of the divergence experiment: train the CNN that :func:`_fcn_stage_config` starts from.

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
    job.summary["stages"] = {"cnn": str(stage_dir), "init_from": str(stage_dir / "checkpoints" / "last.ckpt")}
    log.info("divergence stage 2: unsharing into an FCN, fresh optimiser")


def _fit_and_test(cfg: DictConfig, job: Job, ckpt_path: str | None) -> float | None:
    from weightshare.builders import build_run
    from weightshare.checkpoints import load_checkpoint, module_state
    from weightshare.loggers import INIT_EPOCH
    from weightshare.results import best_and_final, read_metrics_csv

    run = build_run(cfg, job.out, resolved_config=job.summary["config"], group=_sweep_group(cfg))
    module, trainer = run.module, run.trainer
    job.save(param_count=module.param_count, data_info=run.info.__dict__)
    log.info("%s on %s: %s parameters, output %s", cfg.model.name, cfg.data.name, f"{module.param_count:,}", job.out)

    loaded_epoch = INIT_EPOCH  # train=false without a checkpoint: the initial weights
    if cfg.train:
        if ckpt_path is not None:  # verified by _resolve_ckpt_path
            log.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    elif ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        module.net.load_state_dict(module_state(ckpt, "net.", ckpt_path))
        loaded_epoch = int(ckpt.get("epoch", INIT_EPOCH))  # the epoch these weights were saved after

    job.save()  # refresh wall_time_s
    rows = read_metrics_csv(job.out / "metrics.csv")
    # the epoch of the weights the run ends with: the last trained, or (train=false) the loaded one
    final_epoch = int(rows[-1]["epoch"]) if rows and cfg.train else loaded_epoch
    # the last epoch's validation scored these very weights on the held-out data already
    validated = bool(cfg.train and rows and "val/acc" in rows[-1])
    for lg in trainer.loggers:  # end-of-run values beside the curves (CSV, TensorBoard, W&B)
        lg.log_metrics(
            {
                "param_count": float(module.param_count),
                "time/wall_s": job.summary["wall_time_s"],
                "epoch": float(final_epoch),
            },
            step=trainer.global_step,
        )
    es = cfg.callbacks.early_stopping
    best, final = best_and_final(rows, es.monitor, es.mode, es.min_delta)
    pruned = any(getattr(cb, "pruned", False) for cb in run.callbacks)
    init = next((cb.init_metrics for cb in run.callbacks if getattr(cb, "init_metrics", None)), {})
    job.save(epochs_completed=len(rows), stopped_epoch=final.get("epoch"), best=best, final=final, init=init)
    test_metrics: dict[str, float] = {}
    if cfg.test:
        loggers, trainer.loggers = trainer.loggers, []  # logged below, under its own name and epoch
        try:
            (scores,) = trainer.test(module, datamodule=run.datamodule, verbose=False) or [{}]
        finally:
            trainer.loggers = loggers
        test_metrics = {k.removeprefix("test/"): float(v) for k, v in scores.items()}
        if not validated:
            _log_test_pass(trainer, cfg, test_metrics, final_epoch)
    job.save(
        status="pruned" if pruned else "completed",
        test=test_metrics,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        finished_unix=time.time(),
    )
    value = _objective(cfg, job.summary)
    log.info("done: val/acc=%s best=%s -> %s", final.get("val/acc"), best.get("val/acc"), job.results_path)
    return value


def _log_test_pass(trainer: Any, cfg: DictConfig, scores: dict[str, float], epoch: int) -> None:
    """Send a test pass that adds to the curves to the loggers, named for the data it scored.

    The test stage scores the held-out data (``TensorDataModule.test_dataloader``): the
    official test set with ``data.split=standard``, the held-out fold with ``kfold``. Both are
    the validation data, so after a validated last epoch the pass repeats its ``val/*`` values
    exactly and the caller does not log it (``results.json`` keeps it as ``test``). Otherwise
    (an evaluation-only run, ``train=false``; a last epoch without validation) it is logged at
    ``epoch``, the epoch of the weights it scored, as ``test/*`` on the standard split and
    ``val/*`` on k-fold splits, which have no test set.
    """
    if not scores or not trainer.loggers:
        return
    prefix = "test" if cfg.data.split == "standard" else "val"
    metrics = {f"{prefix}/{name}": value for name, value in scores.items()}
    for lg in trainer.loggers:
        lg.log_metrics({**metrics, "epoch": float(epoch)}, step=trainer.global_step)
        lg.save()  # after the test stage's finalize: the CSV logger would keep the row in memory


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: one-line errors in single runs, recorded failures in multiruns."""
    return exit_policy(lambda: train(cfg), multirun=_is_multirun())


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return task(cfg)


def main() -> None:
    """``python train.py [overrides]``: check the whole command line, then run it through Hydra.

    Every mistake is one line on stderr before anything is written: exit status 2 for a bad
    config or command line (:func:`~weightshare.config.cli.check_command_line`), and for a
    config error a sweeper or launcher finds later; 1 for a sweep that stopped on failed
    trials (after its table). ``HYDRA_FULL_ERROR=1`` shows Hydra's own messages and tracebacks.
    """
    from weightshare.config.cli import check_command_line, normalize_argv

    argv = normalize_argv(sys.argv[1:])
    sys.argv = [sys.argv[0], *argv]
    try:
        check_command_line(argv)
    except WeightshareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    full = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors from inside Hydra reach the handler below
    try:
        _hydra_main()
    except ConfigError as exc:
        if full not in (None, "", "0"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except WeightshareError as exc:  # e.g. a study stopped by too many failed trials
        if full not in (None, "", "0"):
            raise
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        if full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full


if __name__ == "__main__":
    main()
