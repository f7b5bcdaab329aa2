"""The command line before Hydra starts: compose as Hydra will, check everything, then let Hydra run.

Why before Hydra: Hydra creates the run directory (``.hydra/``, ``train.log``) before the task
function is called, and reports its own composition errors in several lines with exit status
1. :func:`check_command_line` composes the same config with Hydra's own loader, in the same
mode, and raises one :class:`~weightshare.errors.WeightshareError` for the first problem:

- single run: every Hydra error (unknown key, wrong type, unknown option, override grammar,
  a sweep without ``-m``), a list given to a config group (``model=[cnn,fcn]``), a sweep
  preset forced to ``hydra.mode=RUN``, then :func:`~weightshare.config.preflight.preflight`
  (ranges, geometry, device, memory, W&B credentials, files) on the job's config;
- multirun: the same Hydra checks for the base and for every value of every swept key
  (each value composed on its own, and range-checked where the error is about that key),
  W&B and device checks when no swept key changes them, and the sweeper's own check (its
  class's ``check_before_launch``: the Optuna sweeper's settings, expressions and storage).
  A range error that depends on a combination of swept values stays a failed job of the
  sweep, recorded in its ``results.json``.

``HYDRA_FULL_ERROR=1`` skips the translation of Hydra's own errors, so Hydra prints its full
message. :func:`normalize_argv` accepts ``-m`` anywhere (``python train.py data=x -m model=a,b``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from weightshare.config.hydra_errors import group_list_error, override_key, to_config_error
from weightshare.config.paths import CONF_DIR
from weightshare.errors import ConfigError, WeightshareError

__all__ = ["check_command_line", "normalize_argv", "sweep_values"]

MULTIRUN_FLAGS = ("-m", "--multirun")
#: Hydra flags after which the command line is not a run (help, printing the config, ...)
_NOT_A_RUN = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun")
#: config groups whose options only set their own node (``model`` sets ``model.*``)
NODE_GROUPS = ("data", "model", "optimizer", "scheduler", "aug", "eval", "callbacks", "trainer", "logger", "paths")


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``-m``/``--multirun`` moved to the front, wherever it was typed.

    Hydra's argparse takes the overrides as one positional list, so ``data=x -m model=a,b``
    ends the list at ``-m`` and rejects ``model=a,b`` as unrecognized. No override can be
    ``-m`` (an override has ``=`` or starts with ``~``), and no Hydra flag takes it as a value.
    """
    flags = [a for a in argv if a in MULTIRUN_FLAGS]
    rest = [a for a in argv if a not in MULTIRUN_FLAGS]
    return ["-m", *rest] if flags else rest


def _full_hydra_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _hydra(args: Any) -> Any:
    """A Hydra instance with the search path ``python train.py`` gets (conf/ or --config-path, plus --config-dir)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    primary = os.path.abspath(args.config_path) if getattr(args, "config_path", None) else str(CONF_DIR)
    search_path = create_config_search_path(f"file://{primary}")
    if args.config_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{os.path.abspath(args.config_dir)}",
            anchor=SearchPathQuery(provider="schema"),
        )
    return Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def _groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def _job_config(cfg: DictConfig) -> DictConfig:
    """The task's config (no ``hydra`` node), with ``${hydra:runtime.output_dir}`` resolvable."""
    from hydra.core.hydra_config import HydraConfig

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(job):
        del job["hydra"]
    job.paths.output_dir = cfg.hydra.runtime.output_dir
    return job


def check_command_line(argv: Sequence[str]) -> None:
    """Raise the first problem of ``python train.py *argv`` as a WeightshareError; touches no file."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from weightshare.config.schema import register_configs

    register_configs()  # the schema conf/train.yaml names first in its defaults
    args = get_args_parser().parse_args(list(argv))
    if any(getattr(args, flag, None) for flag in _NOT_A_RUN):
        return
    config_name = args.config_name or "train"
    overrides = list(args.overrides)
    try:
        hydra = _hydra(args)
        mode = hydra.get_mode(config_name=config_name, overrides=overrides)
        multirun = bool(args.multirun) or mode == RunMode.MULTIRUN
        if not multirun:
            bad = group_list_error(overrides, _groups())
            if bad is not None:
                raise bad
        compose = _composer(hydra, config_name)
        try:
            cfg = compose(overrides, RunMode.MULTIRUN if multirun else RunMode.RUN)
        except WeightshareError:
            raise
        except Exception as exc:
            if _full_hydra_errors():
                return  # Hydra composes again and prints its own full message
            raise to_config_error(exc, overrides) from None
        if multirun:
            _check_multirun(cfg, overrides, compose)
        else:
            _check_single_run(cfg)
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def _composer(hydra: Any, config_name: str) -> Callable[[list[str], Any], DictConfig]:
    def compose(overrides: list[str], run_mode: Any) -> DictConfig:
        return hydra.compose_config(
            config_name=config_name, overrides=list(overrides), run_mode=run_mode, with_log_configuration=False
        )

    return compose


def _check_single_run(cfg: DictConfig) -> None:
    from weightshare.config.preflight import preflight

    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if params:
        raise ConfigError(
            "hydra.mode",
            "RUN",
            f"MULTIRUN: this config is a sweep (hydra.sweeper.params: {', '.join(params)}); "
            "drop hydra.mode=RUN, or add -m",
        )
    preflight(_job_config(cfg))


def sweep_values(lines: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    """``key -> (override prefix, [one override line per value])`` of every sweep in ``lines``.

    Choices and ranges list their values; an ``interval`` gives its two bounds (the values a
    sampler can reach first); later lines win, as in Hydra and the sweepers.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parser = OverridesParser.create()
    out: dict[str, tuple[str, list[str]]] = {}
    for override in parser.parse_overrides(list(lines)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            out.pop(key, None)
            continue
        value = override.value()
        if isinstance(value, IntervalSweep):
            bounds = [b for b in (value.start, value.end) if b is not None]
            texts = [str(int(b) if "int" in value.tags else b) for b in bounds]
        else:
            texts = list(override.sweep_string_iterator())  # each value as Hydra writes it
        out[key] = (key, [f"{key}={t}" for t in texts])
    return out


def _sweeper_check(sweeper: DictConfig, lines: list[str]) -> None:
    """The configured sweeper's own pre-launch check, if its class offers one.

    The protocol: a sweeper class may define ``check_before_launch(sweeper_config, lines)``
    (``lines``: its ``params`` as ``key=expression``, then the command line's overrides),
    raising :class:`~weightshare.errors.ConfigError`. Looked up on the class Hydra will
    instantiate, so the library imports no plugin (plugins build on ``weightshare``).
    """
    from hydra.utils import get_class

    target = str(sweeper.get("_target_", ""))
    try:
        cls = get_class(target)
    except Exception:
        return  # Hydra reports a sweeper that does not import
    check = getattr(cls, "check_before_launch", None)
    if callable(check):
        check(sweeper, list(lines))


def _touches(key: str, swept: Sequence[str]) -> bool:
    """Whether a ConfigError about ``key`` can come from one of the ``swept`` keys."""
    return any(key == s or key.startswith(f"{s}.") or key.startswith(f"{s}[") for s in swept)


def _check_multirun(cfg: DictConfig, overrides: list[str], compose: Callable[[list[str], Any], DictConfig]) -> None:
    from hydra.types import RunMode

    from weightshare.config.preflight import check_device, check_wandb
    from weightshare.config.validate import validate_config

    sweeper = OmegaConf.select(cfg, "hydra.sweeper")
    params = OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.get("params") else {}
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + overrides
    _sweeper_check(sweeper, lines)
    try:
        sweeps = sweep_values(lines)
    except Exception as exc:
        raise to_config_error(exc, lines) from None
    fixed = [line for line in overrides if override_key(line) not in sweeps]
    base = [f"{k}={v}" for k, v in (params or {}).items() if k not in sweeps] + fixed
    swept = list(sweeps)
    # swept keys that only change their own node (model=..., optimizer.lr=...): an error
    # elsewhere cannot come from them; a preset group (experiment, spectrum) changes anything
    groups = _groups()
    local = all(s in NODE_GROUPS or s not in groups for s in swept)
    for key, (_, value_lines) in sweeps.items():
        for line in value_lines:
            try:
                job = compose([*base, line], RunMode.RUN)
            except WeightshareError:
                raise
            except Exception as exc:
                if _full_hydra_errors():
                    return
                raise to_config_error(exc, [line, *base]) from None
            try:
                validate_config(_job_config(job))
            except ConfigError as err:
                # about this key, or about a key no swept value changes: every job would fail
                if _touches(err.key, [key]) or (local and not _touches(err.key, swept)):
                    raise
    job = _job_config(cfg)
    if not any(s.startswith("logger") for s in swept):
        check_wandb(job)
    if not any(s.startswith("trainer") for s in swept):
        check_device(job)
