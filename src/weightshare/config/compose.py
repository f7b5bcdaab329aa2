"""Compose the training config from Python (notebooks, tests, tools) with the CLI's semantics.

Hydra's own errors (an unknown key, a value of the wrong type, an unknown group option, a
list given to a config group) are turned into :class:`~weightshare.errors.ConfigError` by
:func:`~weightshare.config.hydra_errors.to_config_error`, the translation the command line
uses, so programmatic callers handle one error type for every kind of bad input.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from weightshare.config.hydra_errors import group_list_error, to_config_error
from weightshare.config.paths import CONF_DIR, ROOT
from weightshare.config.schema import register_configs
from weightshare.config.validate import validate_config

__all__ = ["CONF_DIR", "ROOT", "load_config"]


def load_config(
    overrides: list[str] | None = None,
    *,
    config_dir: str | Path | None = None,
    config_name: str = "train",
    validate: bool = True,
) -> DictConfig:
    """The composed (and range-checked) config for ``overrides``, or a ConfigError."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    overrides = list(overrides or [])
    conf = Path(config_dir or CONF_DIR)
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra")
    listed = group_list_error(overrides, groups)
    if listed is not None:
        raise listed
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as exc:
        # TypeError: Hydra itself fails on e.g. a list given as a group option (model=[1,2])
        raise to_config_error(exc, overrides) from None
    finally:
        GlobalHydra.instance().clear()
    if validate:
        validate_config(cfg)
    return cfg
