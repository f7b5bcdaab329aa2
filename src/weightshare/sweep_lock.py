"""One sweep per directory, and output directories checked before anything starts: a Hydra callback.

Why: two multiruns started into one ``hydra.sweep.dir`` both ran every job, each overwriting
the other's ``results.json``, ``metrics.csv`` and checkpoints, with no warning; and a
read-only run or sweep directory ended in a Hydra ``OSError`` traceback after the sweep was
composed. :class:`OutputDirGuard` runs before the sweeper and the launcher exist, so it works
the same for every launcher (basic, joblib, submitit local/SLURM, packed) and sweeper
(basic, Optuna):

- ``on_run_start`` (a single run): ``hydra.run.dir`` must be creatable and writable;
- ``on_multirun_start``: ``hydra.sweep.dir`` must be creatable and writable, and is then
  locked: :data:`LOCK_NAME` holds the holder's host, pid, the pid's start time and the
  sweep's start time. A lock held by a live process is a one-line error naming the holder,
  exit status 2. A lock whose holder is dead on this host (a SIGKILLed sweep) is taken over,
  with a log line;
- ``on_multirun_end`` (and, as a fallback, process exit) releases the lock.

Shared filesystems: a lock written by another host cannot be checked (its pid means nothing
here), so it is always treated as live: the second sweep stops with the holder's host, pid
and start time, and the message says to delete the lock file once that sweep is known to be
gone. Creating the lock uses ``O_CREAT | O_EXCL``, atomic on local filesystems and on NFSv3+;
on a filesystem without atomic exclusive create two sweeps starting in the same instant could
both take it. The lock guards only the sweeping process: the jobs a SLURM sweep submitted
keep running if that process dies, and a second sweep started then (after taking over the
stale lock on the same host) would run beside them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from weightshare.results import DISK_FULL_ERRNOS

log = logging.getLogger("weightshare")

#: the lock file in the sweep directory (hidden: the report and the sweep table skip it)
LOCK_NAME = ".sweep.lock"
#: exit status of a sweep or run that cannot start (the same as a config error)
_USER_ERROR_EXIT = 2


class SweepDirError(Exception):
    """The run or sweep directory cannot be used (read-only, or locked by a live sweep)."""


def _pid_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host is the one that wrote the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    now = _pid_start(pid)
    return start is None or now is None or now == start


def check_writable_dir(path: Path, key: str) -> None:
    """Create ``path`` (as Hydra would) and write a probe into it; :class:`SweepDirError` naming ``key`` if not."""
    probe = path / f".write_test.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise SweepDirError(
                f"{key}={path} is on a full disk (ENOSPC: {exc.strerror}); free some space or choose another {key}"
            ) from None
        raise SweepDirError(
            f"{key}={path} is not a writable directory ({exc.strerror or exc}); "
            f"choose another {key}, or make it writable"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)  # also when the write failed (a full disk leaves an empty file)


def _describe(holder: dict[str, Any]) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started_at', '?')}"


class SweepLock:
    """The lock file of one sweep directory (see the module docstring)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = Path(sweep_dir) / LOCK_NAME
        self.held = False
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _pid_start(os.getpid()),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self.record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _holder(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return obj if isinstance(obj, dict) else {}

    def acquire(self) -> None:
        """Take the lock, take over a stale one, or raise :class:`SweepDirError` naming the live holder."""
        for _ in range(3):  # a holder may release (or another taker win) between our steps
            if self._create():
                self.held = True
                atexit.register(self.release)
                return
            holder = self._holder()
            if not holder and not self.path.exists():
                continue  # released in the meantime
            if not holder:
                # unreadable: a lock being written this instant, or a torn one; judged by its age
                if time.time() - self.path.stat().st_mtime < 5:
                    time.sleep(0.2)
                    continue
            elif holder.get("host") != socket.gethostname():
                raise SweepDirError(
                    f"hydra.sweep.dir={self.path.parent} is locked by a sweep on another host "
                    f"({_describe(holder)}), which cannot be checked from here; use another "
                    f"hydra.sweep.dir, or delete {self.path} once that sweep is gone"
                )
            elif _alive(int(holder.get("pid", -1)), holder.get("pid_start")):
                raise SweepDirError(
                    f"hydra.sweep.dir={self.path.parent} is in use by a running sweep ({_describe(holder)}); "
                    "wait for it to end, or use another hydra.sweep.dir"
                )
            log.warning("taking over the stale sweep lock %s (%s is no longer running)", self.path, _describe(holder))
            stale = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
            try:
                os.replace(self.path, stale)  # only one taker moves it; the others find it gone
                stale.unlink()
            except FileNotFoundError:
                pass
        raise SweepDirError(f"hydra.sweep.dir={self.path.parent}: could not take the lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock if this process holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        if self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


def _stop(exc: SweepDirError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(_USER_ERROR_EXIT)


class OutputDirGuard(Callback):
    """Hydra callback: writable output directories, and one sweep per sweep directory."""

    def __init__(self) -> None:
        self.lock: SweepLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable_dir(Path(str(config.hydra.run.dir)), "hydra.run.dir")
        except SweepDirError as exc:
            _stop(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            check_writable_dir(sweep_dir, "hydra.sweep.dir")
            self.lock = SweepLock(sweep_dir)
            self.lock.acquire()
        except SweepDirError as exc:
            _stop(exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
