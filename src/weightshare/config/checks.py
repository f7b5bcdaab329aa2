"""The primitives every range check is made of: one ConfigError wording per kind of value.

Shared by :mod:`weightshare.config.validate` and :mod:`weightshare.config.trainer_checks`, so
"an integer >= 1" or "a number in [0, 1)" reads the same wherever it is raised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from weightshare.errors import ConfigError

__all__ = ["_in_range", "_is_int", "_number", "_one_of", "_positive_int", "_require", "_subset"]


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(key: str, value: Any, lo: float, hi: float, *, hi_open: bool = True, lo_open: bool = False) -> None:
    ok = _number(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    _require(ok, key, value, f"a number in {left}{lo:g}, {hi:g}{right}")


def _positive_int(key: str, value: Any, minimum: int = 1) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, key, value, f"an integer >= {minimum}")


def _one_of(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    _require(value in allowed, key, value, f"one of {list(allowed)}")


def _subset(key: str, values: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for v in values:
        _require(v in allowed, key, v, f"names from {list(allowed)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
