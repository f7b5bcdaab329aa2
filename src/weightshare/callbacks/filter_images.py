"""Lightning callback drawing one filter of each free layer across all output positions.

A free layer has its own kernel at every output position; tiling one filter's kernel over
the ``out_h x out_w`` grid shows how it varies over the image (a CNN would show the same
tile everywhere). Images are saved as PNG under ``<out_dir>/filters/`` as
``<layer>_f<filter>_epoch-<e>.png``, ``<e>`` in the one epoch numbering
(:func:`~weightshare.loggers.epoch_label`: ``init``, ``000``, ``001``, ...), and sent to the
TensorBoard and W&B loggers when present (W&B: at that ``epoch``, ``init`` as -1).

Tile content: for a layer with 3 input channels (CIFAR-10 layer 1) the tile is the RGB
kernel; otherwise it is the kernel of input channel 0, a real filter slice (the mean over
input channels of a deep layer's random kernel is near zero and shows little). Colours share
one scale over the whole image, symmetric about 0, so positions are comparable. The kernel is
the one the layer computes with (``filter_kernel``: connection masks applied).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger

from weightshare.callbacks.filter_metrics import network_of
from weightshare.errors import ConfigError
from weightshare.loggers import INIT_EPOCH, EpochWandbLogger, epoch_label
from weightshare.metrics.filter_distance import filter_kernel, free_layers

__all__ = ["FilterImageCallback", "filter_mosaic", "render_filter_image"]


def filter_mosaic(kernel: torch.Tensor, filter_index: int) -> np.ndarray:
    """Tile filter ``filter_index`` of a ``(oh, ow, out, in, kh, kw)`` kernel over positions.

    Returns ``(oh*(kh+1)-1, ow*(kw+1)-1)`` (one input channel) or the same with a trailing 3
    (RGB, for 3 input channels), scaled to [-1, 1] by the largest absolute weight; the
    1-pixel gutters between tiles are NaN so they render as background.
    """
    oh, ow, out_ch, in_ch, kh, kw = kernel.shape
    if not 0 <= filter_index < out_ch:
        raise ConfigError("callbacks.filter_images.filter_index", filter_index, f"0 <= index < {out_ch}")
    filt = kernel[:, :, filter_index].detach().to("cpu", torch.float64)  # (oh, ow, in, kh, kw)
    filt = filt if in_ch == 3 else filt[:, :, :1]
    scale = float(filt.abs().max())
    if scale > 0:
        filt = filt / scale
    channels = filt.shape[2]
    tiles = np.full((oh, ow, kh + 1, kw + 1, channels), np.nan)
    tiles[:, :, :kh, :kw] = filt.permute(0, 1, 3, 4, 2).numpy()  # (oh, ow, kh, kw, C) + NaN gutter
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(oh * (kh + 1), ow * (kw + 1), channels)[:-1, :-1]
    return mosaic[..., 0] if channels == 1 else mosaic


def render_filter_image(mosaic: np.ndarray, title: str, path: Path) -> np.ndarray:
    """Draw ``mosaic`` with a title (and a colour bar for one channel), save it as PNG.

    Uses the object-oriented matplotlib API (no pyplot), so no global figure state is touched
    and it works without a display. Returns the rendered RGB image ``(H, W, 3)`` uint8 for the
    loggers.
    """
    fig = Figure(figsize=(5.0, 4.4) if mosaic.ndim == 2 else (4.4, 4.4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if mosaic.ndim == 2:
        im = ax.imshow(mosaic, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight / max |weight|")
    else:
        rgb = np.where(np.isnan(mosaic), 1.0, 0.5 + 0.5 * mosaic)
        ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("output column")
    ax.set_ylabel("output row")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class FilterImageCallback(pl.Callback):
    """Save and log a grid image of one filter of every free layer at chosen epochs.

    Args:
        epochs: training epochs (counted from 0) after which to draw; ``-1``
            (:data:`~weightshare.loggers.INIT_EPOCH`) means the initial weights (drawn at fit
            start). Files are named ``<layer>_f<idx>_epoch-<e>.png`` with ``e`` =
            :func:`~weightshare.loggers.epoch_label` (``init``, ``000``, ``001``, ...).
        last: also draw the weights training ended with, under that epoch's number (once:
            nothing new when that epoch was drawn already), so the last image of a run that
            stopped early is named by the epoch it stopped after.
        filter_index: which output filter to draw.
        layers: module names to draw (``None``: every free layer), as in
            :func:`~weightshare.metrics.filter_distance.free_layers`.
        out_dir: the run directory; images go to ``out_dir/filters/``.

    Images are only drawn on global rank 0. A CNN has no free layers: nothing is drawn.
    """

    def __init__(
        self,
        epochs: Iterable[int] = (INIT_EPOCH, 0),
        last: bool = True,
        filter_index: int = 0,
        layers: Iterable[str] | None = None,
        out_dir: str | Path = ".",
    ) -> None:
        epochs = [int(e) for e in epochs]
        if any(e < INIT_EPOCH for e in epochs):
            raise ConfigError("callbacks.filter_images.epochs", epochs, "epochs >= 0, or -1 for the init")
        if filter_index < 0:
            raise ConfigError("callbacks.filter_images.filter_index", filter_index, "an integer >= 0")
        self.epochs = sorted(set(epochs))
        self.last = bool(last)
        self.filter_index = int(filter_index)
        self.layers = None if layers is None else list(layers)
        self.out_dir = Path(out_dir)
        self.saved: list[Path] = []
        self.drawn: set[int] = set()

    @property
    def image_dir(self) -> Path:
        return self.out_dir / "filters"

    def path_of(self, layer: str, epoch: int) -> Path:
        """The file the image of ``layer`` at ``epoch`` (``-1``: init) is written to."""
        return self.image_dir / f"{layer}_f{self.filter_index}_epoch-{epoch_label(epoch)}.png"

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> list[Path]:
        """Draw every selected free layer now, as the weights after ``epoch`` (``-1``: the init).

        An epoch already drawn by this callback is not drawn again (the end of training after a
        listed epoch); returns the paths written.
        """
        epoch = int(epoch)
        if not trainer.is_global_zero or epoch in self.drawn:
            return []
        self.drawn.add(epoch)
        paths: list[Path] = []
        step = trainer.global_step
        when = "at initialisation" if epoch == INIT_EPOCH else f"after epoch {epoch_label(epoch)}"
        for name, layer in free_layers(network_of(pl_module), self.layers):
            with torch.no_grad():
                # the kernel the layer computes with: removed (masked) weights draw as 0
                mosaic = filter_mosaic(filter_kernel(layer), self.filter_index)
            path = self.path_of(name, epoch)
            title = f"{name}: filter {self.filter_index} at every position, {when}"
            image = render_filter_image(mosaic, title, path)
            key = f"filters/{name}_f{self.filter_index}"
            self._log_image(trainer, key, image, step, epoch, caption=f"epoch {epoch_label(epoch)}")
            paths.append(path)
        self.saved.extend(paths)
        return paths

    @staticmethod
    def _log_image(trainer: pl.Trainer, key: str, image: np.ndarray, step: int, epoch: int, caption: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
            elif isinstance(logger, EpochWandbLogger):
                import wandb

                # at its epoch like every other value (log_image would leave the epoch out)
                logger.log_metrics({key: wandb.Image(image, caption=caption), "epoch": float(epoch)}, step=step)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if INIT_EPOCH in self.epochs and trainer.ckpt_path is None:
            self.draw(trainer, pl_module, INIT_EPOCH)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch in self.epochs:
            self.draw(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # current_epoch counts the finished epochs here: the last trained one is one less
        if self.last and trainer.current_epoch > 0:
            self.draw(trainer, pl_module, trainer.current_epoch - 1)
