"""What ``val/acc`` is scored on: the clean images of the protocol's held-out fold.

A short real run trains with a strong augmentation (``aug.translate=0.3``) on the synthetic
data, whose label depends on which half of the image a shape sits in, so scoring on
augmented images, or on training rows, gives a different number. The final weights are then
reloaded from ``checkpoints/last.ckpt`` and the held-out images scored by a plain loop here
(dataset read directly, rows sliced by hand, no data module, no Lightning): the result must
equal ``results.json``'s final ``val/acc``. The same run records which rows each stage of the
trainer actually drew, and those must be the contiguous fold and its complement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightshare.builders import build_model
from weightshare.checkpoints import load_checkpoint, module_state
from weightshare.data import load_dataset
from weightshare.data.datamodule import TensorDataModule
from weightshare.data.dataset import DataInfo

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE, FOLD, EPOCHS = 1024, 2, 3
# 1024 rows in 5 contiguous folds (sklearn KFold, no shuffle): sizes 205, 205, 205, 205, 204,
# so fold 2 is rows [410, 615)
FOLD_START, FOLD_STOP = 410, 615


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    """One run (trained with translate 0.3, fold 2) and the index batches each stage drew."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from weightshare.config import register_configs
    from weightshare.train import train

    out = tmp_path_factory.mktemp("scored")
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "data=synthetic",
                f"data.options.size={SIZE}",
                f"data.fold={FOLD}",
                "aug.translate=0.3",
                "model=cnn",
                f"trainer.max_epochs={EPOCHS}",
                "callbacks=minimal",
                "eval.variants=[clean,translate]",
                "threads=1",
                f"paths.output_dir={out}",
            ],
        )
    GlobalHydra.instance().clear()
    seen: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": [], "sanity": []}
    modules: list[TensorDataModule] = []
    original = TensorDataModule.on_after_batch_transfer

    def spy(self, batch, dataloader_idx):
        trainer = self.trainer
        stage = (
            "sanity"
            if trainer.sanity_checking
            else "train"
            if trainer.training
            else "val"
            if trainer.validating
            else "test"
        )
        seen[stage].append(batch.detach().cpu().clone())
        if not modules or modules[-1] is not self:
            modules.append(self)
        return original(self, batch, dataloader_idx)

    mp = pytest.MonkeyPatch()
    mp.setattr(TensorDataModule, "on_after_batch_transfer", spy)
    try:
        train(cfg)
    finally:
        mp.undo()
    res = json.loads((out / "results.json").read_text())
    return out, cfg, res, seen, modules


def _independent_accuracy(cfg, res, ckpt) -> tuple[float, int]:
    """Accuracy of ``ckpt``'s network on rows [FOLD_START, FOLD_STOP) of a fresh read of the data."""
    ds = load_dataset("synthetic", None, size=SIZE, image_size=cfg.data.options.image_size, seed=cfg.data.options.seed)
    info = DataInfo(**res["data_info"])
    net = build_model(cfg.model, info)
    net.load_state_dict(module_state(load_checkpoint(ckpt), "net.", ckpt))
    net.eval()
    images = ds.images[FOLD_START:FOLD_STOP].float() / 255.0
    labels = ds.labels[FOLD_START:FOLD_STOP]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 37):  # batch size unrelated to the run's
            logits = net(images[start : start + 37])
            correct += int((logits.argmax(dim=1) == labels[start : start + 37]).sum())
    return correct / len(labels), correct


def test_final_val_acc_is_the_clean_held_out_accuracy_of_the_last_weights(augmented_run) -> None:
    out, cfg, res, _, _ = augmented_run
    assert res["status"] == "completed" and res["identity"]["aug_type"] == "translate"
    acc, correct = _independent_accuracy(cfg, res, out / "checkpoints" / "last.ckpt")
    assert 0.25 < acc < 0.9  # learned something (chance: 0.1), and not so well that every scoring agrees
    n = FOLD_STOP - FOLD_START
    assert res["final"]["val/acc"] == pytest.approx(correct / n, abs=1e-6)
    assert res["test"]["clean/acc"] == pytest.approx(correct / n, abs=1e-6)
    # the translated variant is a different number: the clean score is not the perturbed one
    assert abs(res["final"]["val/translate/acc"] - res["final"]["val/acc"]) > 1.5 / n


def test_the_check_above_would_see_augmented_scoring(augmented_run) -> None:
    """The premise of the test above: scoring the fold through the training augmentation differs."""
    from weightshare.augment import TrainAugmenter

    out, cfg, res, _, _ = augmented_run
    ds = load_dataset("synthetic", None, size=SIZE, image_size=cfg.data.options.image_size, seed=cfg.data.options.seed)
    net = build_model(cfg.model, DataInfo(**res["data_info"]))
    ckpt = out / "checkpoints" / "last.ckpt"
    net.load_state_dict(module_state(load_checkpoint(ckpt), "net.", ckpt))
    net.eval()
    x = ds.images[FOLD_START:FOLD_STOP].float() / 255.0
    y = ds.labels[FOLD_START:FOLD_STOP]
    with torch.no_grad():
        aug = TrainAugmenter(cfg.aug)(x, torch.Generator().manual_seed(0))
        augmented = float((net(aug).argmax(1) == y).float().mean())
    assert abs(augmented - res["final"]["val/acc"]) > 1.5 / len(y)


def test_validation_draws_exactly_the_held_out_fold_and_training_its_complement(augmented_run) -> None:
    _, _, res, seen, modules = augmented_run
    fold = torch.arange(FOLD_START, FOLD_STOP)
    complement = torch.cat([torch.arange(0, FOLD_START), torch.arange(FOLD_STOP, SIZE)])
    assert len(modules) == 1
    dm = modules[0]
    assert torch.equal(dm.val_idx, fold)
    assert torch.equal(torch.sort(dm.train_idx).values, complement)
    # what the stages actually drew: every validation epoch and the test pass score the whole
    # fold once, in order; the training epochs see every other row once and no fold row
    n_epochs = res["epochs_completed"]
    assert n_epochs == EPOCHS
    val = torch.cat(seen["val"])
    assert torch.equal(val, fold.repeat(n_epochs))
    assert torch.equal(torch.cat(seen["test"]), fold)
    train = torch.cat(seen["train"])
    assert len(train) == n_epochs * len(complement)
    assert torch.equal(torch.sort(train).values, complement.repeat_interleave(n_epochs))
    assert not torch.isin(train, fold).any()
