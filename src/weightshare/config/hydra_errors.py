"""Hydra's and OmegaConf's composition errors as one :class:`~weightshare.errors.ConfigError` line.

Why: Hydra reports an unknown key, a wrong type, an unknown group option or an override it
cannot parse in five to ten lines (config search path, "To append to your config use +...")
and exit status 1; a misspelled ``trainer.max_epoch`` even advises ``+trainer.max_epoch``.
The project promises one line naming the key, what is allowed, and, for a near miss, the
key or option that was probably meant. :func:`to_config_error` is the one translation, used
by the command line (:mod:`weightshare.config.cli`) and by :func:`~weightshare.config.compose.load_config`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from typing import Any

from weightshare.errors import ConfigError, did_you_mean

__all__ = ["group_list_error", "override_key", "to_config_error"]

_TYPE_WORDS = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "String": "a string",
}


def override_key(line: str) -> str:
    """The key of an override line: ``+model.depth=3`` -> ``model.depth``, ``~x`` -> ``x``."""
    return line.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def _value_of(overrides: Sequence[str], key: str) -> Any:
    for line in overrides:
        if override_key(line) == key:
            return line.split("=", 1)[1] if "=" in line else line
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def _fields(object_type: Any) -> list[str]:
    """The keys a structured node accepts (a dataclass of the schema, Hydra's or a plugin's)."""
    if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
        try:
            return sorted(typing.get_type_hints(object_type))
        except Exception:  # a forward reference that does not resolve: the plain field names
            return sorted(f.name for f in dataclasses.fields(object_type))
    return []


def _unknown_key(cause: Any, overrides: Sequence[str]) -> ConfigError:
    full_key = str(getattr(cause, "full_key", "") or "")
    parent, _, leaf = full_key.rpartition(".")
    keys = _fields(getattr(cause, "object_type", None))
    value = _value_of(overrides, full_key)
    where = parent or "the config"
    if keys:
        near = did_you_mean(leaf, keys, prefix=f"{parent}." if parent else "")
        return ConfigError(full_key, value, f"a key of {where}{near} (its keys: {', '.join(keys)})")
    # a free-form node (data.options): only the keys its config sets can be overridden
    return ConfigError(
        full_key,
        value,
        f"a key that {where} already has; a new key of a free-form node is added with +{full_key}=...",
    )


def _wrong_type(cause: Any, overrides: Sequence[str]) -> ConfigError:
    full_key = str(getattr(cause, "full_key", "") or "")
    msg = _first_line(cause)
    match = re.search(r"could not be converted to (\w+)", msg)
    if match:
        allowed = _TYPE_WORDS.get(match.group(1), match.group(1))
    else:
        match = re.search(r"Invalid value '.*?', expected one of \[(.*)\]", msg)
        allowed = f"one of [{match.group(1)}]" if match else msg
    return ConfigError(full_key, _value_of(overrides, full_key), allowed)


def _missing_option(exc: Any, overrides: Sequence[str]) -> ConfigError:
    missing = str(getattr(exc, "missing_cfg_file", "") or "")
    group, _, option = missing.rpartition("/")
    options = list(getattr(exc, "options", None) or [])
    if not group:  # the primary config itself (``--config-name``)
        return ConfigError("--config-name", missing, f"a config of the config directory ({_first_line(exc)})")
    near = did_you_mean(option, options)
    return ConfigError(group, option, f"one of {options}{near}")


def to_config_error(exc: BaseException, overrides: Sequence[str]) -> ConfigError:
    """One ConfigError line for an exception Hydra or OmegaConf raised while composing ``overrides``."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        ConfigTypeError,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(exc, ConfigError):
        return exc
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = str(exc)
    if isinstance(exc, MissingConfigException) and getattr(exc, "missing_cfg_file", None):
        return _missing_option(exc, overrides)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        return _unknown_key(cause, overrides)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return _wrong_type(cause, overrides)
    if isinstance(cause, ConfigTypeError) and "deletion" in str(cause):
        key = str(getattr(cause, "full_key", "") or "")
        return ConfigError(
            f"~{key}", None, "a key that can be deleted (keys of the schema cannot; set a value instead)"
        )
    if isinstance(exc, OverrideParseException):
        bad = _unparsable(overrides)
        return ConfigError(
            override_key(bad) if bad else "overrides",
            bad,
            f"key=value in Hydra's override grammar ({_first_line(exc)}; quote values with special characters)",
        )
    match = re.search(r"Ambiguous value for argument '(.*?)'", text) or re.search(
        r"Sweep parameters '(.*?)' requires --multirun", text
    )
    if match:
        line = match.group(1)
        return ConfigError(
            override_key(line),
            line.split("=", 1)[-1],
            "one value in a single run (to sweep over the values add -m; for a list write key=[a,b]; "
            "for a string containing commas quote it)",
        )
    match = re.search(r"An item is already at '(.*?)'", text)
    if match:
        key = match.group(1)
        return ConfigError(f"+{key}", _value_of(overrides, key), f"{key}=<value> without '+' (the key exists)")
    match = re.search(r"Could not (?:override|delete) '(.*?)'", text)
    if match:  # the key does not exist, without an OmegaConf cause that names its node
        key = match.group(1)
        return ConfigError(key, _value_of(overrides, key), f"an existing key ({_first_line(cause)})")
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and full_key:
        return ConfigError(str(full_key), _value_of(overrides, str(full_key)), f"a valid value ({_first_line(cause)})")
    bad = next((o for o in overrides if override_key(o) and override_key(o) in text + str(cause)), None)
    key, _, value = (bad or "overrides").partition("=")
    return ConfigError(key.lstrip("+~"), value if bad else list(overrides), f"a valid override ({_first_line(cause)})")


def _unparsable(overrides: Sequence[str]) -> str | None:
    """The first override line Hydra's grammar rejects."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for line in overrides:
        try:
            parser.parse_override(line)
        except Exception:
            return line
    return None


def group_list_error(overrides: Sequence[str], groups: Sequence[str]) -> ConfigError | None:
    """``model=[cnn,fcn]`` in a single run: Hydra merges both options and the last one wins silently.

    A config group of this project takes one option per run, so a list there is an error
    that says how to sweep instead (``-m model=cnn,fcn``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except Exception:
            continue  # reported by the composition itself
        key = override.get_key_element().lstrip("+~")
        if key in groups and isinstance(override.value(), list):
            value = line.split("=", 1)[1]
            items = ",".join(str(v) for v in override.value())
            return ConfigError(key, value, f"one option of the {key} group per run (to run each: -m {key}={items})")
    return None
