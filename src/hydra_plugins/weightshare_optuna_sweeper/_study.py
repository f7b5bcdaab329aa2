"""A study's identity: its name, the directory it lives in, and the command that resumes it.

Why a name derived from the command: rerunning the same search must find the same study
(the same storage and the same name) so that finished trials are never trained again, and a
different search must never be mixed into it. The name is ``<job>-<hash>`` of the search
space, the fixed overrides and the directions; ``hydra.sweeper.study_name`` replaces it (that
is how a user asks for a new study). Overrides that do not change what a trial computes
(:data:`NOT_IN_STUDY_NAME`: ``resume``, ``logger``, ``tags``) are left out, so adding them never
starts a second study.

Why a resolver: the study's directory (``hydra.sweep.dir`` of ``hparams_search=*``) must be
known when Hydra composes the config, before the sweeper exists: the callbacks (the sweep
lock, the end-of-sweep table) and every job read it. ``${optuna_study:...}`` computes the
study name there, with OmegaConf's cache on, so every job (whose ``hydra.overrides.task``
holds its own trial's values) sees the sweep's value, as ``${now:...}`` does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weightshare.errors import ConfigError

DIRECTIONS = ("minimize", "maximize")
#: override keys (and their sub-keys) that do not change what a trial computes: not part of
#: the study's name, so adding W&B or ``resume=true`` to a rerun resumes the same study
NOT_IN_STUDY_NAME = ("resume", "logger", "tags")
#: a study name is also a directory name
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def normalize_directions(direction: Any) -> list[str]:
    """``minimize``/``maximize`` or a list of them (several objectives) -> list of names."""
    many = isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction)
    items = list(direction) if many else [direction]
    names = [str(getattr(item, "name", item)).lower() for item in items]
    if not names or any(n not in DIRECTIONS for n in names):
        raise ConfigError("hydra.sweeper.direction", direction, "minimize, maximize or a list of them")
    return names


def _key(line: str) -> str:
    return line.partition("=")[0].lstrip("+~")


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in NOT_IN_STUDY_NAME)


def derived_study_name(job_name: str, space: Any, directions: Sequence[str]) -> str:
    """``<job>-<hash>``: the same command gives the same name, so a rerun resumes the study."""
    fixed = sorted(line for key, line in space.fixed.items() if not _ignored(key.lstrip("+~")))
    from optuna.distributions import distribution_to_json

    payload = json.dumps(
        {
            "space": {k: distribution_to_json(d) for k, d in sorted(space.distributions.items())},
            "fixed": fixed,
            "directions": list(directions),
        },
        sort_keys=True,
    )
    return f"{job_name}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


def search_lines(params: Mapping[str, Any] | None, task_overrides: Sequence[str]) -> list[str]:
    """The sweeper's params, then the command line's overrides (later lines win)."""
    return [f"{k}={v}" for k, v in (params or {}).items()] + [str(o) for o in task_overrides]


def study_name(
    job_name: str,
    name: str | None,
    direction: Any,
    params: Mapping[str, Any] | None,
    task_overrides: Sequence[str],
) -> str:
    """``name`` if given (checked to be usable as a directory name), else the derived one."""
    if name is not None:
        name = str(name)
        if not _SAFE_NAME.fullmatch(name):
            raise ConfigError(
                "hydra.sweeper.study_name", name, "letters, digits and . _ - (it names the study's directory)"
            )
        return name
    from ._search_space import parse_search_space

    space = parse_search_space(search_lines(params, task_overrides))
    return derived_study_name(str(job_name), space, normalize_directions(direction))


def resolve_study_name(job_name: Any, name: Any, direction: Any, params: Any, task_overrides: Any) -> str:
    """``${optuna_study:${hydra.job.name},${hydra.sweeper.study_name},${hydra.sweeper.direction},
    ${hydra.sweeper.params},${hydra.overrides.task}}``: the study name, for ``hydra.sweep.dir``.

    Registered (cached) by the package's ``__init__``.
    """

    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    return study_name(job_name, name, plain(direction), plain(params), plain(task_overrides) or [])


def absolute_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative ``sqlite:///file`` absolute, so jobs that change directory find it."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix) :]
    if not path or path.startswith("/") or path == ":memory:":
        return url
    return prefix + str((base_dir / path).resolve())


def sweep_dir_is_stable(config: DictConfig) -> bool:
    """True when ``hydra.sweep.dir`` comes out the same on a rerun (no ``${now:...}`` in it)."""
    node = config.hydra.sweep._get_node("dir")
    raw = str(node._value()) if node is not None else ""
    return "${now:" not in raw


def resume_command(config: DictConfig, sweep_dir: Path) -> str:
    """The exact command that resumes this sweep: this process's command line, plus
    ``hydra.sweep.dir`` when the directory would otherwise be a new (time-stamped) one."""
    argv = (["python"] if sys.argv[0].endswith(".py") else []) + list(sys.argv)
    hydra_overrides = [str(o) for o in config.hydra.overrides.hydra]
    if not sweep_dir_is_stable(config) and not any(_key(o) == "hydra.sweep.dir" for o in hydra_overrides):
        argv.append(f"hydra.sweep.dir={sweep_dir}")
    return shlex.join(argv)
