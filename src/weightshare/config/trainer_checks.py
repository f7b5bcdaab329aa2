"""Checks of the ``trainer`` node: every ``lightning.Trainer`` argument the config passes through.

Why here: Lightning checks these only when the Trainer is built (after the data is loaded),
some with a traceback (``devices=0``, ``max_time=bogus``), some not at all
(``check_val_every_n_epoch=5`` ran with no validation metrics, ``min_epochs > max_epochs``
ran, ``limit_train_batches=1.5`` passed a check whose own message allowed only (0, 1]).
"""

from __future__ import annotations

import math
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weightshare.config.checks import _in_range, _is_int, _number, _one_of, _positive_int, _require
from weightshare.data.datamodule import PRECISIONS
from weightshare.errors import ConfigError

__all__ = ["ACCELERATORS", "PROFILERS", "SEED_MAX", "check_trainer"]

#: ``trainer.accelerator`` values this project runs on (Lightning's TPU/HPU/XLA need packages it does not ship)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: ``trainer.profiler`` values (Lightning's ``xla`` profiler needs torch_xla)
PROFILERS = ("simple", "advanced", "pytorch")
#: ``seed`` range: what ``lightning.seed_everything`` (numpy's generator) accepts
SEED_MAX = 2**32 - 1
_MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")
_BATCH_LIMIT = "a fraction in (0, 1] or a whole number of batches >= 1"


def _check_devices(devices: Any) -> None:
    """Lightning's ``devices``: ``auto``, a count >= 1, -1 (all), or a list of device indices."""
    allowed = "'auto', an integer >= 1, -1 (all devices), or a list of device indices like [0, 1]"
    if devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1)):
        return
    if isinstance(devices, str) and re.fullmatch(r"\d+(,\d+)*,?", devices.strip()):
        return  # Lightning's "0,1" / "1," form
    if OmegaConf.is_list(devices) or isinstance(devices, list):
        items = list(devices)
        if items and all(_is_int(i) and i >= 0 for i in items) and len(set(items)) == len(items):
            return
    raise ConfigError("trainer.devices", devices, allowed)


def check_trainer(t: DictConfig) -> None:
    """Every ``lightning.Trainer`` argument the config passes through, checked before the Trainer exists."""
    ok = _is_int(t.max_epochs) and (t.max_epochs >= 1 or t.max_epochs == -1)
    _require(ok, "trainer.max_epochs", t.max_epochs, "an integer >= 1 (or -1 for no limit)")
    _positive_int("trainer.min_epochs", t.min_epochs, 0)
    if t.max_epochs != -1:
        allowed = f"an integer in [0, {t.max_epochs}] (at most trainer.max_epochs={t.max_epochs})"
        _require(t.min_epochs <= t.max_epochs, "trainer.min_epochs", t.min_epochs, allowed)
    _one_of("trainer.precision", str(t.precision), PRECISIONS)
    _one_of("trainer.accelerator", str(t.accelerator), ACCELERATORS)
    _check_devices(t.devices)
    _positive_int("trainer.num_nodes", t.num_nodes)
    _positive_int("trainer.accumulate_grad_batches", t.accumulate_grad_batches)
    _positive_int("trainer.log_every_n_steps", t.log_every_n_steps)
    # early stopping, checkpoints, the per-epoch CSV row and every table read val/* each epoch
    _require(
        t.check_val_every_n_epoch == 1,
        "trainer.check_val_every_n_epoch",
        t.check_val_every_n_epoch,
        "1 (early stopping, checkpoints and the results tables need validation every epoch)",
    )
    for key in ("limit_train_batches", "limit_val_batches"):
        v = t[key]
        if v is not None:
            ok = _number(v) and (0 < v <= 1 or (v > 1 and float(v).is_integer()))
            _require(ok, f"trainer.{key}", v, _BATCH_LIMIT)
    ok = t.num_sanity_val_steps == -1 or (_is_int(t.num_sanity_val_steps) and t.num_sanity_val_steps >= 0)
    _require(ok, "trainer.num_sanity_val_steps", t.num_sanity_val_steps, "an integer >= 0, or -1 for every batch")
    if t.gradient_clip_val is not None:
        _in_range("trainer.gradient_clip_val", t.gradient_clip_val, 0.0, math.inf)
    if t.max_time is not None:
        ok = isinstance(t.max_time, str) and bool(_MAX_TIME.match(t.max_time))
        _require(ok, "trainer.max_time", t.max_time, "null or a duration 'DD:HH:MM:SS' like '00:12:00:00'")
    if t.profiler is not None:
        _one_of("trainer.profiler", t.profiler, PROFILERS)
    ok = t.deterministic in (True, False, "warn")
    _require(ok, "trainer.deterministic", t.deterministic, "true, false or 'warn'")
    fdr = t.fast_dev_run
    ok = isinstance(fdr, bool) or (_is_int(fdr) and fdr >= 0)
    _require(ok, "trainer.fast_dev_run", fdr, "true, false or a number of batches >= 0")
    for key in ("enable_model_summary", "detect_anomaly"):
        _require(isinstance(t[key], bool), f"trainer.{key}", t[key], "true or false")
    if t.benchmark is not None:
        _require(isinstance(t.benchmark, bool), "trainer.benchmark", t.benchmark, "null, true or false")
