"""Compose the training config from Python (notebooks, tests, tools) with the CLI's semantics.

Hydra's own errors (an unknown key, a value of the wrong type, an unknown group option) are
turned into :class:`~weightshare.errors.ConfigError` naming the override, so programmatic
callers handle one error type for every kind of bad input.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from weightshare.config.paths import CONF_DIR, ROOT
from weightshare.config.schema import register_configs
from weightshare.config.validate import validate_config
from weightshare.errors import ConfigError

__all__ = ["CONF_DIR", "ROOT", "load_config"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


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
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as exc:
        # TypeError: Hydra itself fails on e.g. a list given as a group option (model=[1,2])
        cause = exc.__cause__ or exc
        bad = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") in str(exc) + str(cause)), None)
        key, _, value = (bad or "overrides").partition("=")
        raise ConfigError(key, value if bad else overrides, f"a valid override ({_first_line(cause)})") from None
    finally:
        GlobalHydra.instance().clear()
    if validate:
        validate_config(cfg)
    return cfg
