"""Hydra override grammar <-> Optuna distributions, and back to override strings.

``hydra.sweeper.params`` and the command line use Hydra's sweep grammar; each sweep becomes
one Optuna distribution:

- ``choice(a, b)`` / ``a,b``          -> ``CategoricalDistribution`` (grid: its values)
- ``range(start, stop[, step])``       -> ``IntDistribution``/``FloatDistribution`` with step
  (``stop`` excluded, as in Hydra; grid: its values); ``shuffle(range(...))`` -> categorical
- ``interval(lo, hi)``                 -> ``FloatDistribution``; ``tag(log, interval(...))``
  log-uniform; the extra tag ``int`` gives an ``IntDistribution``
- anything else (``key=value``, ``+key=value``, ``~key``) is a fixed override passed to every job.

Written here rather than reusing the published plugin because that one builds Optuna 2
distribution classes (``LogUniformDistribution``, ...) removed in Optuna 3, and its range
conversion includes ``stop``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from weightshare.errors import ConfigError

_PRIMITIVES = (str, int, float, bool)


@dataclass
class SearchSpace:
    """What the sweeper samples (``distributions``) and what it passes unchanged (``fixed``).

    ``fixed`` maps the override key (with any ``+``/``++``/``~`` prefix) to the override
    line, in the order given; ``grid_values`` holds the explicit values of the discrete sweeps.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    grid_values: dict[str, list[Any]] = field(default_factory=dict)
    sweep_kinds: dict[str, str] = field(default_factory=dict)

    def grid(self) -> dict[str, list[Any]]:
        """The search space of ``GridSampler``: every swept key must be a choice or a range."""
        bad = {k: kind for k, kind in self.sweep_kinds.items() if k not in self.grid_values}
        if bad:
            key, kind = next(iter(bad.items()))
            raise ConfigError(f"hydra.sweeper.params.{key}", kind, "choice(...) or range(...) with GridSampler")
        if not self.grid_values:
            raise ConfigError("hydra.sweeper.params", "{}", "at least one choice(...) param for GridSampler")
        return {k: list(v) for k, v in self.grid_values.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())


def parse_search_space(lines: Sequence[str]) -> SearchSpace:
    """Parse override lines (sweeper params first, then the command line: later lines win)."""
    parser = OverridesParser.create()
    space = SearchSpace()
    for override in parser.parse_overrides(list(lines)):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        space.grid_values.pop(key, None)
        space.sweep_kinds.pop(key, None)
        if not override.is_sweep_override():
            space.fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            continue
        dist, values, kind = _distribution(key, override)
        space.distributions[key] = dist
        space.sweep_kinds[key] = kind
        if values is not None:
            space.grid_values[key] = values
    return space


#: tags the sweeper reads on ``interval``: ``log`` (log-uniform) and ``int`` (integers)
INTERVAL_TAGS = ("log", "int")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _distribution(key: str, override: Override) -> tuple[BaseDistribution, list[Any] | None, str]:
    """One sweep -> (distribution, explicit values for a grid or None, the sweep's text).

    Every expression is checked before any trial runs: bounds in order and finite, a log
    scale only above 0, a step that is not 0, tags only where the sweeper reads them.
    """
    value = override.value()
    text = (override.input_line or "").split("=", 1)[-1]
    where = f"hydra.sweeper.params.{key}"
    tags = set(getattr(value, "tags", None) or ())
    if isinstance(value, (ChoiceSweep, RangeSweep)) and tags:
        raise ConfigError(
            where, text, f"tags ({', '.join(INTERVAL_TAGS)}) only on interval(...); choices are sampled as listed"
        )
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        if isinstance(value, RangeSweep):
            _check_range(where, text, value)
        values = list(override.sweep_iterator())
        for v in values:
            if not isinstance(v, _PRIMITIVES):
                raise ConfigError(where, v, "choice values that are str, int, float or bool")
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(where, text, "finite choice values (no nan or inf)")
        if not values:
            raise ConfigError(where, text, "a non-empty choice")
        return CategoricalDistribution(values), values, text
    if isinstance(value, RangeSweep):
        _check_range(where, text, value)
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(where, text, "a range with at least one value (range(start, stop[, step]) excludes stop)")
        low, high = min(values), max(values)
        step = abs(value.step)
        if all(isinstance(v, int) for v in values) and isinstance(value.step, int):
            return IntDistribution(int(low), int(high), step=int(step)), values, text
        return FloatDistribution(float(low), float(high), step=float(step)), values, text
    if isinstance(value, IntervalSweep):
        unknown = sorted(tags - set(INTERVAL_TAGS))
        if unknown:
            raise ConfigError(where, text, f"tags from {list(INTERVAL_TAGS)}; unknown tag {unknown[0]!r}")
        log = "log" in tags
        start, end = value.start, value.end
        if not (_finite(start) and _finite(end)):
            raise ConfigError(where, text, "interval(low, high) with finite numbers (no nan or inf)")
        if not start < end:
            raise ConfigError(where, text, "interval(low, high) with low < high")
        if log and start <= 0:
            raise ConfigError(where, text, "tag(log, interval(low, high)) with 0 < low")
        if "int" in tags:
            if int(start) != start or int(end) != end:
                raise ConfigError(where, text, "tag(int, interval(low, high)) with whole-number bounds")
            return IntDistribution(int(start), int(end), log=log), None, text
        return FloatDistribution(float(start), float(end), log=log), None, text
    raise ConfigError(where, text, "choice(...), range(...), interval(...) or tag(log, interval(...))")


def _check_range(where: str, text: str, value: RangeSweep) -> None:
    """``range(start, stop, step)``: finite numbers and a step that is not 0 (Hydra raises a bare ValueError)."""
    for bound in (value.start, value.stop, value.step):
        if bound is not None and not _finite(bound):
            raise ConfigError(where, text, "range(start, stop[, step]) with finite numbers (no nan or inf)")
    if value.step == 0:
        raise ConfigError(where, text, "range(start, stop, step) with a step that is not 0")


def format_value(value: Any) -> str:
    """A Python value as text that Hydra's override grammar parses back to the same value.

    Strings are left bare when they parse back unchanged (``model=cnn``: group overrides
    need the bare name), else single-quoted; ``${`` is escaped so OmegaConf does not resolve it.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if "${" not in value and _parses_to(value, value):
            return value
        escaped = value.replace("${", "\\${")
        quoted = _quote(escaped)
        if not _parses_to(quoted, escaped):
            raise ValueError(f"cannot write {value!r} as a Hydra override value")
        return quoted
    raise TypeError(f"cannot write a {type(value).__name__} as a Hydra override value: {value!r}")


def _quote(text: str) -> str:
    """Single-quote ``text``: backslashes before a quote or at the end are doubled (Hydra 1.3)."""
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f"'{body}'"


def _parses_to(text: str, expected: str) -> bool:
    try:
        parsed = OverridesParser.create().parse_override(f"k={text}")
    except Exception:
        return False
    if parsed.is_sweep_override():
        return False
    value = parsed.value()
    return isinstance(value, str) and value == expected


def format_override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def trial_override_lines(params: Mapping[str, Any], fixed: Mapping[str, str]) -> list[str]:
    """The job's overrides: the fixed ones, then the sampled parameters."""
    return [*fixed.values(), *(format_override(k, v) for k, v in params.items())]
