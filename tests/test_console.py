"""What a run prints (weightshare.console): bars on a terminal, epoch lines elsewhere, no Lightning noise."""

from __future__ import annotations

import io
import logging
import os
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightshare.console import _DROP_TIP, EpochLines, RichBar, TqdmBar, build_progress_bar, quiet_lightning
from weightshare.errors import ConfigError


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_live_bars_on_a_terminal_epoch_lines_elsewhere():
    tty, pipe = Stream(True), Stream(False)
    assert type(build_progress_bar("rich", stdout=tty, stderr=pipe)) is RichBar
    assert type(build_progress_bar("rich", stdout=pipe, stderr=tty)) is EpochLines  # rich draws on stdout
    assert type(build_progress_bar("tqdm", stdout=pipe, stderr=tty)) is TqdmBar
    assert type(build_progress_bar("tqdm", stdout=tty, stderr=pipe)) is EpochLines  # tqdm draws on stderr
    assert type(build_progress_bar("lines", stdout=tty, stderr=tty)) is EpochLines
    assert build_progress_bar("none", stdout=tty, stderr=tty) is None
    with pytest.raises(ConfigError, match=r"callbacks\.progress_bar='bar'.*'lines'"):
        build_progress_bar("bar")


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.fc(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.fc(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.arange(16) % 2), batch_size=8)


def test_bars_leave_out_v_num(tmp_path):
    trainer = pl.Trainer(logger=CSVLogger(str(tmp_path)), enable_progress_bar=False, accelerator="cpu")
    module = Tiny()
    module.trainer = trainer
    for ours, lightnings in [(RichBar(), RichProgressBar()), (TqdmBar(), TQDMProgressBar())]:
        assert "v_num" in lightnings.get_metrics(trainer, module)  # what Lightning's bar shows
        assert "v_num" not in ours.get_metrics(trainer, module)


def test_epoch_lines_log_one_line_per_epoch(tmp_path, caplog):
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[EpochLines()],
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
    )
    with caplog.at_level(logging.INFO, logger="weightshare"):
        trainer.fit(Tiny(), _loader(), _loader())
    lines = [r.getMessage() for r in caplog.records if r.name == "weightshare"]
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 0/2", "epoch 1/2", "epoch 2/2"]  # metrics.csv's numbering
    assert all("train/loss " in ln and "val/acc " in ln and ln.endswith(" s") for ln in lines)
    assert not any("\r" in ln or "v_num" in ln for ln in lines)


def _srun_on_path(tmp_path, monkeypatch) -> None:
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)


def test_quiet_lightning_drops_the_tip_and_the_srun_warning_of_one_process(tmp_path, monkeypatch, caplog):
    """Lightning warns about ``srun`` whenever one is on PATH; irrelevant to a one-device job."""
    _srun_on_path(tmp_path, monkeypatch)
    tip_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    tip_logger.removeFilter(_DROP_TIP)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        pl.Trainer(accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path)))
    assert any("`srun` command is available" in str(w.message) for w in seen)  # what a user saw
    assert any("Tip" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        quiet_lightning(devices=1, num_nodes=1)
        pl.Trainer(accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path)))
    assert not any("srun" in str(w.message) for w in seen)
    assert not any("Tip" in r.getMessage() for r in caplog.records)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning(devices=2, num_nodes=1)  # several processes: the warning is Lightning's to give
        warnings.warn("The `srun` command is available on your system but is not used.", stacklevel=1)
    assert len(seen) == 1
