"""The Optuna sweep checked as a whole before its first trial: settings, search space, storage.

Why: a study that starts and then fails (a storage URL that is not one, a host that does not
answer, a ``sqlite:///`` file in a folder that does not exist, ``interval(1e-1, 1e-5)``,
``range(2, 4, 0)``, ``tag(bogus, ...)``) otherwise ends in a traceback after the sweep
directory was made, or worse, runs every trial on a linear scale it was not asked for.
:func:`check_optuna_sweep` raises one :class:`~weightshare.errors.ConfigError` instead. The
command line calls it before Hydra starts (:mod:`weightshare.config.cli`, which also checks
each swept key and value against the training config); the sweeper calls it again before
opening the study, for sweeps started another way.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weightshare.errors import ConfigError

from ._search_space import SearchSpace, parse_search_space

__all__ = ["CONNECT_TIMEOUT_S", "check_optuna_sweep", "check_storage_url"]

#: how long a database host may take to accept a TCP connection before the sweep is refused
CONNECT_TIMEOUT_S = 3.0
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def check_storage_url(url: str | None, base_dir: Path | None = None) -> None:
    """A storage URL SQLAlchemy parses, whose SQLite folder exists or whose host accepts a connection.

    Only a TCP connection is opened (no login, no query), with :data:`CONNECT_TIMEOUT_S`.
    """
    if url is None:
        return
    key = "hydra.sweeper.storage"
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(str(url))
    except Exception:
        raise ConfigError(
            key, url, "a database URL like sqlite:///sweep.db or postgresql://host/db (or null: the sweep dir)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ConfigError(
                key, url, "a SQLite file (sqlite:///path/optuna.db): an in-memory study dies with the sweeper"
            )
        path = Path(database)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        if not path.parent.is_dir():
            raise ConfigError(key, url, f"a SQLite file in an existing folder ({path.parent} does not exist)")
        return
    _probe_host(key, parsed, backend)
    try:
        dialect = parsed.get_dialect()
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except Exception as exc:
        raise ConfigError(
            key, parsed.render_as_string(hide_password=True), f"a URL whose database driver is installed ({exc})"
        ) from None


def _probe_host(key: str, parsed: Any, backend: str) -> None:
    """A TCP connection to the database host, refused or timed out: one line, no hang."""
    host = parsed.host
    if not host:
        return  # a socket or driver-specific connection: nothing to probe without logging in
    port = parsed.port or _DEFAULT_PORTS.get(backend)
    if port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise ConfigError(
            key,
            shown,
            f"a reachable database ({host}:{port} did not accept a connection within "
            f"{CONNECT_TIMEOUT_S:g} s: {exc.strerror or exc})",
        ) from None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def check_optuna_sweep(sweeper: DictConfig, lines: Sequence[str]) -> SearchSpace:
    """Raise ConfigError for the first problem of the sweep ``hydra.sweeper`` describes; return its space.

    ``lines``: ``hydra.sweeper.params`` as ``key=expression`` followed by the command line's
    overrides (later lines win, as in the sweep).
    """
    from weightshare.trial_protocol import pruner_from_config

    from ._impl import OptunaSweeperImpl, _is_grid

    settings = {
        k: sweeper.get(k)
        for k in (
            "sampler", "pruner", "direction", "storage", "study_name", "load_if_exists", "n_trials", "n_jobs",
            "max_failure_rate", "params", "custom_search_space", "monitor", "trial_node",
            "heartbeat_interval", "grace_period",
        )
    }  # fmt: skip
    try:
        impl = OptunaSweeperImpl(**settings)  # checks n_trials, n_jobs, max_failure_rate, direction, ...
    except ConfigError:
        raise
    except Exception as exc:  # custom_search_space that does not import, a sampler that is no config
        raise ConfigError("hydra.sweeper", type(exc).__name__, f"valid sweeper settings ({exc})") from None
    space = parse_search_space(list(lines))
    if _is_grid(impl.sampler_cfg):
        space.grid()
    pruner_from_config(_plain(impl.pruner_cfg))
    check_storage_url(impl.storage_url)
    return space
