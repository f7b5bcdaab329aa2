"""Everything a job checks before it writes or reads anything: the config, this machine, the files it names.

Why one function: a rejected config must leave no run directory, no ``results.json`` and no
folder under ``data.root``. :func:`preflight` is what the command line runs before Hydra
creates the run directory (:mod:`weightshare.config.cli`), and what every job runs again
before it opens its directory (a multirun job, a pack member, a notebook). It touches no
file and no network:

- the config's ranges and geometry (:func:`~weightshare.config.validate.validate_config`);
- the device: a GPU trainer without CUDA, float16 mixed precision on a CPU (Lightning
  would silently run bfloat16 there, and ``results.json`` would record what did not run);
- resources: the network's weights, gradients and optimiser state, and the padded batch,
  against the memory available (a lower bound: activations come on top);
- W&B: ``logger=wandb`` online without credentials (read from the environment and
  ``~/.netrc``, the places ``wandb login`` writes; no server is contacted);
- files: ``ckpt_path`` and ``model.init_from`` exist, ``paths.output_dir`` can be created, and
  with ``data.download=false`` the dataset's files are where ``data.root`` says.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from weightshare.config.validate import validate_config
from weightshare.errors import CheckpointError, ConfigError

__all__ = ["available_memory", "check_environment", "memory_estimate", "preflight"]

#: float16 mixed precision: CUDA only (Lightning runs bf16-mixed on a CPU instead)
FLOAT16_PRECISIONS = ("16-mixed", "16")
#: optimiser state tensors per parameter (Adam: two moments; SGD: the momentum buffer)
_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}


def _resolved_device(cfg: DictConfig) -> str:
    """``cuda``, ``mps`` or ``cpu``: where ``trainer.accelerator`` puts the run on this machine."""
    import torch

    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "mps":
        return "mps"
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
    return "cpu"


def check_device(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one, or a precision the device would replace."""
    import torch

    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            accelerator,
            "'cpu' or 'auto' (no CUDA device on this machine: trainer=gpu cannot run without CUDA)",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator", accelerator, "'cpu' or 'auto' (no MPS device on this machine)")
    device = _resolved_device(cfg)
    precision = str(cfg.trainer.precision)
    if device != "cuda" and precision in FLOAT16_PRECISIONS:
        raise ConfigError(
            "trainer.precision",
            precision,
            f"'bf16-mixed' or '32-true' on {device.upper()} (float16 mixed precision needs a CUDA device; "
            "Lightning would run bf16-mixed instead)",
        )
    devices = cfg.trainer.devices
    if device == "cuda" and isinstance(devices, int) and devices > torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError("trainer.devices", devices, f"an integer in [1, {count}] (CUDA devices on this machine)")


def available_memory(device: str) -> tuple[int, str] | None:
    """``(bytes, where)`` the run can still allocate on ``device``; None when unknown."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free), "free on the GPU"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    return None


def memory_estimate(cfg: DictConfig) -> dict[str, int]:
    """Bytes the run needs at least: ``network`` (weights, gradients, optimiser state) and ``batch``.

    ``batch`` is one training batch after ``aug.crop_padding`` (the crop pads the whole
    batch before cutting). Activations are not counted: the estimate is a lower bound.
    """
    from weightshare.config.geometry import data_shape, parameter_count

    shape = data_shape(cfg.data)
    params = parameter_count(cfg)
    states = _OPTIMIZER_STATES.get(str(cfg.optimizer.name), 2)
    if cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0:
        states = 0
    pad = 2 * int(cfg.aug.crop_padding)
    info = shape.info
    batch = int(cfg.data.batch_size) * info.in_channels * (info.height + pad) * (info.width + pad) * 4
    return {"params": params, "network": params * 4 * (2 + states), "batch": batch}


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_resources(cfg: DictConfig) -> None:
    """A network or a padded batch that cannot fit the memory available, before anything is allocated."""
    device = _resolved_device(cfg)
    available = available_memory(device)
    if available is None:
        return
    free, where = available
    try:
        need = memory_estimate(cfg)
    except (RuntimeError, NotImplementedError):  # a layer the meta device cannot build: the run will tell
        return
    if need["network"] > free:
        key = "model.hidden" if cfg.model.name in ("cnn", "fcn", "lowrank") else "model.depth"
        value = cfg.model.hidden if key == "model.hidden" else cfg.model.depth
        raise ConfigError(
            key,
            value,
            f"a network that fits in memory: {need['params']:,} parameters need about {_gib(need['network'])} "
            f"for weights, gradients and {cfg.optimizer.name} state; {_gib(free)} available ({where})",
        )
    if need["batch"] > free - need["network"]:
        key = "aug.crop_padding" if cfg.aug.crop_padding else "data.batch_size"
        value = cfg.aug.crop_padding if cfg.aug.crop_padding else cfg.data.batch_size
        raise ConfigError(
            key,
            value,
            f"a batch that fits in memory: one padded batch needs about {_gib(need['batch'])}, "
            f"{_gib(max(free - need['network'], 0))} left beside the network ({where})",
        )


def wandb_has_credentials() -> bool:
    """Whether a W&B login would find an API key: ``WANDB_API_KEY`` or the host's ``~/.netrc`` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb(cfg: DictConfig) -> None:
    """``logger=wandb`` online needs an API key; say how to run offline instead, before data loads."""
    if "wandb" not in list(cfg.logger.names) or cfg.logger.wandb.offline:
        return
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return
    if not wandb_has_credentials():
        raise ConfigError(
            "logger.wandb.offline",
            False,
            "true, or W&B credentials (no WANDB_API_KEY and no api.wandb.ai entry in ~/.netrc: run `wandb login`)",
        )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_files(cfg: DictConfig) -> None:
    """The files a job reads exist, and its output directory can be created (nothing is created here)."""
    want = cfg.ckpt_path
    if want is not None and want != "last" and not Path(str(want)).is_file():
        raise CheckpointError(f"ckpt_path={want!r}: no such file (use 'last' to resume this run directory)")
    init = cfg.model.init_from
    if init is not None and not Path(str(init)).is_file():
        raise CheckpointError(f"model.init_from={init!r}: no such file (the checkpoint of a CNN run to unshare)")
    out = Path(str(cfg.paths.output_dir))
    base = _nearest_existing(out.absolute())
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        reason = "not a directory" if not base.is_dir() else "not writable"
        raise ConfigError("paths.output_dir", str(out), f"a writable directory ({base} is {reason})")


def check_data_files(cfg: DictConfig) -> None:
    """With ``data.download=false`` the dataset's files must be there: the reader's own search, nothing written."""
    from weightshare.data import download as dl

    d = cfg.data
    if d.download or d.name not in ("mnist", "cifar10"):
        return
    root = Path(str(d.root)).expanduser()
    if d.name == "mnist":
        from weightshare.data import mnist as reader

        dirs, names, suffixes = reader.mnist_dirs(root), reader.MNIST_FILES, ("", ".gz")
    else:
        from weightshare.data import cifar10 as reader

        dirs, names, suffixes = reader.cifar10_dirs(root), reader.CIFAR10_FILES, ("",)
    dl.locate_or_download(
        d.name, dirs, names, suffixes=suffixes, download=False, fetch_all=lambda: None,
        download_dir=root, hint=reader._HINT,
    )  # fmt: skip


def check_environment(cfg: DictConfig) -> None:
    """The checks of this machine and its files (see the module docstring); the config must be valid."""
    check_device(cfg)
    check_wandb(cfg)
    check_files(cfg)
    check_data_files(cfg)
    check_resources(cfg)


def preflight(cfg: DictConfig) -> None:
    """Raise the first problem of ``cfg`` on this machine (a WeightshareError), touching nothing."""
    validate_config(cfg)
    check_environment(cfg)
