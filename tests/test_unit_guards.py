"""Fast unit tests of the three modules behind every reported number, without a Trainer.

``weightshare.module`` (losses, accuracies, best accuracy, optimiser and schedule),
``weightshare.data.datamodule`` (which rows each stage sees, and on what images) and
``weightshare.results`` (``results.json`` and ``metrics.csv``). Each expected value is
computed by hand here (plain tensor operations, literal numbers), never by the function
under test. Written against the survivors of a mutation run (docs/testing.md): they run in
seconds, so ``make mutation`` can afford them for every mutant, where a training run cannot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from weightshare.augment.keyed_rng import SampleKeys, train_key
from weightshare.builders import build_module, build_optimizer, build_scheduler
from weightshare.data import ArrayDataset, load_dataset
from weightshare.data.datamodule import EpochBatchSampler, TensorDataModule, mix_seed
from weightshare.data.dataset import DataInfo
from weightshare.module import DivergenceError, WeightShareModule
from weightshare.results import (
    EpochTable,
    atomic_write_json,
    atomic_write_text,
    aug_identity,
    read_json,
    read_metrics_csv,
    read_overrides,
    run_identity,
)

# ====================================================================== data module

#: mix_seed values of this version (the seeds of every published run's batches)
MIX_3_1_4 = 3050903897158318046
MIX_0_0_AND_0_1 = (53269941918253281, 53269941918253282)


def tiny_dataset(n: int = 23, n_train: int = 18) -> ArrayDataset:
    """Row ``i`` is an image filled with value ``i`` (so a batch shows which rows it holds)."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    labels = torch.arange(n, dtype=torch.int64) % 3
    return ArrayDataset("synthetic", images, labels, n_train, 3)


def make_dm(compose, tmp_path, overrides=(), n: int = 23, seed: int = 0) -> TensorDataModule:
    cfg = compose(["data=synthetic", *overrides], output_dir=tmp_path)
    return TensorDataModule(cfg.data, cfg.aug, cfg.eval, seed=seed, dataset=tiny_dataset(n))


def test_setup_holds_out_the_contiguous_fold(compose, tmp_path) -> None:
    # 23 rows, 5 folds: sizes 5, 5, 5, 4, 4 -> fold 1 is rows [5, 10)
    dm = make_dm(compose, tmp_path, ["data.fold=1"])
    dm.setup("fit")
    assert dm.val_idx.tolist() == [5, 6, 7, 8, 9]
    assert dm.train_idx.tolist() == [0, 1, 2, 3, 4, *range(10, 23)]
    dm = make_dm(compose, tmp_path, ["data.fold=4"])
    dm.setup("fit")
    assert dm.val_idx.tolist() == [19, 20, 21, 22]
    # 3 folds of 23 rows: sizes 8, 8, 7 -> fold 1 is rows [8, 16)
    dm = make_dm(compose, tmp_path, ["data.n_folds=3", "data.fold=1"])
    dm.setup("fit")
    assert dm.val_idx.tolist() == list(range(8, 16))
    dm = make_dm(compose, tmp_path, ["data.split=standard"])
    dm.setup("fit")
    assert dm.train_idx.tolist() == list(range(18)) and dm.val_idx.tolist() == list(range(18, 23))


def test_setup_limits_take_the_first_rows_and_run_once(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path, ["data.fold=1", "data.limit_train=7", "data.limit_val=3"])
    dm.setup("fit")
    assert dm.train_idx.tolist() == [0, 1, 2, 3, 4, 10, 11]
    assert dm.val_idx.tolist() == [5, 6, 7]
    dm.train_idx = torch.tensor([1, 2])
    dm.setup("test")  # a second stage does not redo the split
    assert dm.train_idx.tolist() == [1, 2] and dm.val_idx.tolist() == [5, 6, 7]


def test_info_describes_the_dataset(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path)
    assert dm.info == DataInfo(name="synthetic", in_channels=1, height=4, width=4, num_classes=3)


def test_load_reads_the_configured_dataset(compose, tmp_path) -> None:
    cfg = compose(
        ["data=synthetic", "data.options.size=40", "data.options.image_size=12", "data.options.seed=3"],
        output_dir=tmp_path,
    )
    dm = TensorDataModule(cfg.data, cfg.aug, cfg.eval)
    ds = dm.load()
    ref = load_dataset("synthetic", None, size=40, image_size=12, seed=3)
    assert torch.equal(ds.images, ref.images) and torch.equal(ds.labels, ref.labels)
    assert dm.load() is ds  # read once
    x, y = dm.gather(torch.tensor([0, 39]))  # the module serves the images it read
    assert torch.equal(x, ref.images[[0, 39]].float() / 255) and torch.equal(y, ref.labels[[0, 39]])
    assert dm.info.height == 12 and dm.info.num_classes == 10
    dm.setup("fit")
    assert dm.val_idx.tolist() == list(range(8))  # 40 rows, fold 0 of 5


def test_load_passes_the_digits_image_size(compose, tmp_path) -> None:
    cfg = compose(["data=digits", "data.options.image_size=16"], output_dir=tmp_path)
    ds = TensorDataModule(cfg.data, cfg.aug, cfg.eval).load()
    assert tuple(ds.images.shape[1:]) == (1, 16, 16) and ds.name == "digits"


def _batches(loader) -> list[list[int]]:
    return [b.tolist() for b in loader]


def test_train_loader_is_a_seeded_per_epoch_shuffle_of_the_training_rows(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path, ["data.fold=1", "data.batch_size=4"])
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 5  # 18 rows in batches of 4
    epoch0 = _batches(loader)
    assert [len(b) for b in epoch0] == [4, 4, 4, 4, 2]
    flat = [i for b in epoch0 for i in b]
    assert sorted(flat) == dm.train_idx.tolist() and flat != dm.train_idx.tolist()
    assert _batches(dm.train_dataloader()) == epoch0  # same seed, fold, epoch: same order
    # the order is the permutation of torch.randperm seeded with mix_seed(mix_seed(seed, fold), epoch)
    for epoch in (0, 1):
        gen = torch.Generator().manual_seed(mix_seed(mix_seed(0, 1), epoch))
        expected = dm.train_idx[torch.randperm(18, generator=gen)].tolist()
        loader.sampler.set_epoch(epoch)  # what Lightning calls before each epoch
        assert [i for b in _batches(loader) for i in b] == expected
    other_seed = make_dm(compose, tmp_path, ["data.fold=1", "data.batch_size=4"], seed=1)
    other_seed.setup("fit")
    assert _batches(other_seed.train_dataloader()) != epoch0
    unshuffled = make_dm(compose, tmp_path, ["data.fold=1", "data.batch_size=4", "data.shuffle=false"])
    unshuffled.setup("fit")
    assert [i for b in _batches(unshuffled.train_dataloader()) for i in b] == unshuffled.train_idx.tolist()


def test_sampler_epochs_differ_and_length_rounds_up() -> None:
    s = EpochBatchSampler(torch.arange(10), 3, shuffle=True, seed=5)
    assert len(s) == 4 and s.epoch == 0
    first = [b.tolist() for b in s]
    s.set_epoch(1)
    assert s.epoch == 1
    assert [b.tolist() for b in s] != first
    s.set_epoch(0)
    assert [b.tolist() for b in s] == first
    assert [b.tolist() for b in EpochBatchSampler(torch.arange(5), 2, shuffle=False, seed=5)] == [[0, 1], [2, 3], [4]]
    exact = EpochBatchSampler(torch.arange(9), 3, shuffle=True, seed=5)
    assert len(exact) == 3 == len(list(exact))  # an exact multiple has no extra batch
    assert len(EpochBatchSampler(torch.arange(1), 4, shuffle=False, seed=0)) == 1


def test_eval_loaders_score_the_fold_in_order_with_the_eval_batch_size(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path, ["data.fold=0", "data.batch_size=4", "data.eval_batch_size=3"])
    dm.setup("fit")
    assert _batches(dm.val_dataloader()) == [[0, 1, 2], [3, 4]]
    assert _batches(dm.test_dataloader()) == [[0, 1, 2], [3, 4]]
    dm = make_dm(compose, tmp_path, ["data.fold=0", "data.batch_size=4"])
    dm.setup("fit")
    assert _batches(dm.val_dataloader()) == [[0, 1, 2, 3], [4]]  # eval_batch_size unset: batch_size


def test_gather_scales_to_unit_range(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path)
    x, y = dm.gather(torch.tensor([3, 0, 22]))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 4, 4)
    assert torch.equal(x[:, 0, 0, 0], torch.tensor([3 / 255, 0.0, 22 / 255]))
    assert y.tolist() == [0, 0, 1]


def _stage(training: bool, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(training=training, current_epoch=epoch, sanity_checking=False)


def test_training_batches_are_augmented_and_evaluation_batches_are_clean(compose, tmp_path) -> None:
    from weightshare.augment import TrainAugmenter

    cfg = compose(["data=synthetic", "aug.noise=0.5", "eval.variants=[clean,noise]"], output_dir=tmp_path)
    dm = TensorDataModule(cfg.data, cfg.aug, cfg.eval, seed=2, dataset=tiny_dataset())
    dm.setup("fit")
    index = torch.tensor([5, 6, 7])
    clean, labels = dm.gather(index)
    dm.trainer = _stage(training=True, epoch=3)
    x, y = dm.on_after_batch_transfer(index, 0)
    # each sample's draws are keyed by (seed, fold, epoch) and its dataset index
    keys = SampleKeys(train_key(2, 0, 3), index)
    expected = TrainAugmenter(cfg.aug)(clean.clone(), keys)
    assert torch.equal(x, expected) and not torch.equal(x, clean)
    other_epoch = TrainAugmenter(cfg.aug)(clean.clone(), SampleKeys(train_key(2, 0, 4), index))
    assert not torch.equal(x, other_epoch)
    assert torch.equal(y, labels)
    dm.trainer = _stage(training=False)
    batch = dm.on_after_batch_transfer(index, 0)
    assert list(batch["x"]) == ["clean", "noise"]
    assert torch.equal(batch["x"]["clean"], clean)  # the clean score is on the images themselves
    assert not torch.equal(batch["x"]["noise"], clean)
    assert torch.equal(batch["y"], labels)
    # the perturbed variants are keyed by each sample's dataset index: every model, epoch and
    # eval batch size scores the same perturbed image of a sample, and other samples differ
    from weightshare.augment import EvalVariants

    assert torch.equal(batch["x"]["noise"], EvalVariants(cfg.eval)(clean, index)["noise"])
    single = dm.on_after_batch_transfer(torch.tensor([9]), 0)
    assert torch.equal(single["x"]["noise"], EvalVariants(cfg.eval)(dm.gather(torch.tensor([9]))[0], 9)["noise"])
    shifted = dm.on_after_batch_transfer(torch.tensor([6, 7, 8]), 0)
    assert torch.equal(shifted["x"]["noise"][:2], batch["x"]["noise"][1:])  # same samples, same draws
    assert not torch.equal(shifted["x"]["noise"][2], batch["x"]["noise"][0])
    # without augmentation a training batch is the gathered images
    plain = make_dm(compose, tmp_path)
    plain.setup("fit")
    plain.trainer = _stage(training=True)
    x, _ = plain.on_after_batch_transfer(index, 0)
    assert torch.equal(x, clean)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_are_gathered_and_augmented_on_the_index_device(compose, tmp_path) -> None:
    cfg = compose(["data=synthetic", "aug.noise=0.5"], output_dir=tmp_path)
    dm = TensorDataModule(cfg.data, cfg.aug, cfg.eval, seed=2, dataset=tiny_dataset())
    dm.setup("fit")
    index = torch.tensor([5, 6, 7], device="cuda")
    x, y = dm.gather(index)
    assert x.device.type == y.device.type == "cuda"
    assert torch.equal(x.cpu()[:, 0, 0, 0], torch.tensor([5, 6, 7]) / 255.0)
    dm.trainer = _stage(training=True, epoch=1)
    xa, _ = dm.on_after_batch_transfer(index, 0)
    assert xa.device.type == "cuda" and dm.train_generator(index.device, 1).device.type == "cuda"
    assert dm.gather(torch.tensor([5]))[0].device.type == "cpu"  # follows the index back


def test_train_keys_are_a_function_of_seed_fold_epoch_and_index(compose, tmp_path) -> None:
    dm = make_dm(compose, tmp_path, ["data.fold=2"], seed=4)
    index = torch.tensor([3, 1, 2])
    keys = dm.train_keys(index, 0)
    assert torch.equal(keys.keys, SampleKeys(train_key(4, 2, 0), index).keys)
    assert torch.equal(dm.train_keys(index, 0).keys, keys.keys)  # the same epoch again: the same draws
    assert not torch.equal(dm.train_keys(index, 1).keys, keys.keys)  # another epoch: other draws
    # a sample's key does not depend on the batch around it
    assert torch.equal(dm.train_keys(torch.tensor([2]), 0).keys, keys.keys[2:])
    other_fold = make_dm(compose, tmp_path, ["data.fold=1"], seed=4)
    assert not torch.equal(other_fold.train_keys(index, 0).keys, keys.keys)


def test_mix_seed_values_are_pinned() -> None:
    """The published seeds: changing the mixing changes the batches (and numbers) of every run."""
    assert mix_seed(3, 1, 4) == MIX_3_1_4
    assert (mix_seed(0, 0), mix_seed(0, 1)) == MIX_0_0_AND_0_1
    assert mix_seed(3, 1, 4) != mix_seed(4, 1, 3)
    assert 0 <= mix_seed(2**62, 2**62) < 2**63


# ===================================================================== the module


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def make_module(compose, tmp_path, overrides=(), variants=("translate",), **kw) -> tuple[WeightShareModule, list]:
    cfg = compose(["data=synthetic", *overrides], output_dir=tmp_path)
    torch.manual_seed(0)
    cfg.eval.variants = list(variants)
    for key, value in kw.items():  # module options that come from the config
        OmegaConf.update(cfg, {"nan_guard": "callbacks.nan_guard"}[key], value)
    module = build_module(cfg, DataInfo("synthetic", 1, 2, 2, 3), net=Tiny())
    logged: list = []
    module.log = lambda name, value, **k: logged.append((name, value, k))  # type: ignore[method-assign]
    return module, logged


def batch(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_module_scores_clean_first_and_counts_parameters(compose, tmp_path) -> None:
    module, _ = make_module(compose, tmp_path, variants=("translate", "clean", "noise"))
    assert module.variants == ["clean", "translate", "noise"]
    assert sorted(module.eval_acc) == ["clean", "noise", "translate"] and sorted(module.eval_loss) == sorted(
        module.eval_acc
    )
    assert module.param_count == 4 * 3 + 3
    assert module.penalty_weight == 0.0 and module.nan_guard is True
    assert module.scheduler_factory.keywords["max_epochs"] == 20


def test_module_builds_the_configured_network(compose, tmp_path) -> None:
    cfg = compose(["model=cnn"], output_dir=tmp_path)
    module = build_module(cfg, DataInfo("mnist", 1, 28, 28, 10))
    assert module.param_count == 2_201_098  # the paper's MNIST CNN (Table A.1)
    assert module.scheduler_factory.keywords["max_epochs"] == cfg.trainer.max_epochs
    penalty = module.share_penalty()  # a CNN has no free positions: a zero scalar
    assert penalty.shape == () and float(penalty) == 0.0
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(module(x), module.net(x))


def test_share_penalty_uses_the_configured_radius(compose, tmp_path) -> None:
    from weightshare.layers import FreeConv2d
    from weightshare.layers.share_penalty import model_share_penalty

    cfg = compose(["model=fcn", "model.share_penalty=0.1", "model.penalty_radius=2"], output_dir=tmp_path)
    torch.manual_seed(0)
    net = nn.Sequential(FreeConv2d(1, 2, 3, input_size=(8, 8)), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    module = build_module(cfg, DataInfo("synthetic", 1, 8, 8, 3), net=net)
    with torch.no_grad():
        at2, at1 = float(model_share_penalty(net, radius=2)), float(model_share_penalty(net, radius=1))
        assert at2 != pytest.approx(at1, rel=1e-3)
        assert float(module.share_penalty()) == pytest.approx(at2, rel=1e-6)


def test_training_step_loss_and_epoch_metrics(compose, tmp_path) -> None:
    module, logged = make_module(compose, tmp_path)
    (x1, y1), (x2, y2) = batch(1, 5), batch(2, 3)
    loss1 = module.training_step((x1, y1), 0)
    with torch.no_grad():
        ce1, ce2 = F.cross_entropy(module.net(x1), y1), F.cross_entropy(module.net(x2), y2)
        right = int((module.net(x1).argmax(1) == y1).sum() + (module.net(x2).argmax(1) == y2).sum())
    assert float(loss1) == pytest.approx(float(ce1), rel=1e-6)
    module.training_step((x2, y2), 1)
    # epoch values: the loss weighted by batch size, the accuracy over all 8 images
    assert float(module.train_loss.compute()) == pytest.approx((5 * float(ce1) + 3 * float(ce2)) / 8, rel=1e-6)
    assert float(module.train_acc.compute()) == pytest.approx(right / 8)
    names = [n for n, _, _ in logged]
    assert names == ["train/loss", "train/acc"] * 2  # no share penalty column without a penalty
    for _, _value, k in logged:
        assert k["on_step"] is False and k["on_epoch"] is True
    assert logged[0][1] is module.train_loss and logged[1][1] is module.train_acc


def test_share_penalty_is_added_with_its_weight(compose, tmp_path, monkeypatch) -> None:
    module, logged = make_module(compose, tmp_path, ["model=fcn", "model.share_penalty=0.5"])
    monkeypatch.setattr(module, "share_penalty", lambda: torch.tensor(2.0))
    x, y = batch(3, 4)
    with torch.no_grad():
        ce = float(F.cross_entropy(module.net(x), y))
    assert float(module.training_step((x, y), 0)) == pytest.approx(ce + 0.5 * 2.0, rel=1e-6)
    ((value, k),) = [(v, k) for n, v, k in logged if n == "train/share_penalty"]
    assert float(value) == 2.0 and k["on_step"] is False and k["on_epoch"] is True  # one value per epoch
    assert float(module.train_loss.compute()) == pytest.approx(ce, rel=1e-6)  # train/loss is the CE alone


def test_non_finite_loss_raises_divergence_naming_epoch_and_step(compose, tmp_path) -> None:
    module, _ = make_module(compose, tmp_path)
    x, y = batch(4, 4)
    x[0, 0, 0, 0] = math.inf
    with torch.no_grad():
        module.net.fc.weight.fill_(1.0)
    with pytest.raises(DivergenceError, match=r"loss=nan at epoch 0, step 0") as err:
        module.training_step((x, y), 0)
    assert (err.value.epoch, err.value.step) == (0, 0) and math.isnan(err.value.value)
    assert isinstance(err.value, FloatingPointError)
    unguarded, _ = make_module(compose, tmp_path, nan_guard=False)
    with torch.no_grad():
        unguarded.net.fc.weight.fill_(1.0)
    assert math.isnan(float(unguarded.training_step((x, y), 0)))


def test_divergence_error_fields() -> None:
    err = DivergenceError(3, 41, float("inf"))
    assert (err.epoch, err.step, err.value) == (3, 41, float("inf"))
    assert str(err) == "training diverged: loss=inf at epoch 3, step 41"


def test_evaluation_scores_every_variant_and_val_acc_is_clean(compose, tmp_path) -> None:
    module, logged = make_module(compose, tmp_path)
    (xa, y), (xb, _) = batch(5, 6), batch(6, 6)
    (xc, yc) = batch(8, 2)  # a short last batch: epoch values are per image, not per batch
    module.validation_step({"x": {"clean": xc, "translate": xc}, "y": yc}, 0)
    with torch.no_grad():
        loss_c = float(F.cross_entropy(module.net(xc), yc))
        right_c = int((module.net(xc).argmax(1) == yc).sum())
    assert float(module.eval_loss["clean"].compute()) == pytest.approx(loss_c, rel=1e-6)
    module.eval_loss["clean"].reset()
    module.eval_acc["clean"].reset()
    module.eval_loss["translate"].reset()
    module.eval_acc["translate"].reset()
    module.validation_step({"x": {"clean": xc, "translate": xc}, "y": yc}, 0)
    module.validation_step({"x": {"clean": xa, "translate": xb}, "y": y}, 1)
    with torch.no_grad():
        acc_a = float((module.net(xa).argmax(1) == y).float().mean())
        acc_b = float((module.net(xb).argmax(1) == y).float().mean())
        loss_a = float(F.cross_entropy(module.net(xa), y))
        loss_b = float(F.cross_entropy(module.net(xb), y))
    assert acc_a != acc_b  # the two inputs are scored apart
    assert float(module.eval_acc["clean"].compute()) == pytest.approx((6 * acc_a + right_c) / 8)
    assert float(module.eval_acc["translate"].compute()) == pytest.approx((6 * acc_b + right_c) / 8)
    assert float(module.eval_loss["clean"].compute()) == pytest.approx((6 * loss_a + 2 * loss_c) / 8, rel=1e-6)
    assert float(module.eval_loss["translate"].compute()) == pytest.approx((6 * loss_b + 2 * loss_c) / 8, rel=1e-6)
    assert loss_a != pytest.approx(loss_c, rel=1e-3)  # so a per-batch mean would differ
    by_name = {n: (v, k) for n, v, k in logged}
    assert set(by_name) == {
        "val/clean/acc",
        "val/clean/loss",
        "val/translate/acc",
        "val/translate/loss",
        "val/acc",
        "val/loss",
    }
    assert by_name["val/acc"][0] is module.eval_acc["clean"] and by_name["val/loss"][0] is module.eval_loss["clean"]
    assert by_name["val/translate/acc"][0] is module.eval_acc["translate"]
    assert by_name["val/translate/loss"][0] is module.eval_loss["translate"]
    assert by_name["val/clean/acc"][0] is module.eval_acc["clean"]
    for _, k in by_name.values():
        assert k["on_step"] is False and k["on_epoch"] is True
    logged.clear()
    module.test_step({"x": {"clean": xa}, "y": y}, 0)
    assert [n for n, _, _ in logged] == ["test/clean/acc", "test/clean/loss", "test/acc", "test/loss"]


def test_best_validation_accuracy_is_the_maximum_over_epochs(compose, tmp_path) -> None:
    module, logged = make_module(compose, tmp_path)
    module._trainer = SimpleNamespace(sanity_checking=False, current_epoch=0)
    x, _ = batch(7, 12)
    y = torch.tensor([0] * 2 + [1] * 6 + [2] * 4)
    # three "epochs": zero weights and a bias that predicts class 0, then 1, then 2, so the
    # accuracies are the class shares 2/12, 6/12, 4/12 (the best is not the last epoch)
    accs, bests = [], []
    for cls in (0, 1, 2):
        with torch.no_grad():
            module.net.fc.weight.zero_()
            module.net.fc.bias.copy_(F.one_hot(torch.tensor(cls), 3).float())
            accs.append(float((module.net(x).argmax(1) == y).float().mean()))
        module.eval_acc["clean"].reset()  # Lightning resets epoch metrics between epochs
        module.validation_step({"x": {"clean": x, "translate": x}, "y": y}, 0)
        logged.clear()
        module.on_validation_epoch_end()
        (value,) = [v for n, v, _ in logged if n == "val/acc_best"]
        bests.append(float(value))
    assert accs == pytest.approx([2 / 12, 6 / 12, 4 / 12])
    assert bests == pytest.approx([2 / 12, 6 / 12, 6 / 12])
    module._trainer = SimpleNamespace(sanity_checking=True, current_epoch=0)
    logged.clear()
    module.on_validation_epoch_end()
    assert logged == []  # sanity validation neither logs nor counts
    assert float(module.val_acc_best.compute()) == pytest.approx(max(accs))


def test_train_start_resets_the_best_only_on_a_fresh_run(compose, tmp_path) -> None:
    module, _ = make_module(compose, tmp_path)
    module.val_acc_best(torch.tensor(0.7))
    module._trainer = SimpleNamespace(current_epoch=4, sanity_checking=False)
    module.on_train_start()
    assert float(module.val_acc_best.compute()) == pytest.approx(0.7)  # resumed: kept
    module._trainer = SimpleNamespace(current_epoch=0, sanity_checking=False)
    module.on_train_start()
    module.val_acc_best(torch.tensor(0.2))
    assert float(module.val_acc_best.compute()) == pytest.approx(0.2)  # fresh: the sanity pass is forgotten
    assert "val_acc_best.max_value" in module.state_dict()  # persistent: resumed runs keep it


def test_configure_optimizers_without_and_with_a_schedule(compose, tmp_path) -> None:
    module, _ = make_module(compose, tmp_path)
    module.net.fc.bias.requires_grad_(False)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    (group,) = opt.param_groups
    assert len(group["params"]) == 1 and group["params"][0] is module.net.fc.weight  # frozen ones left out
    module, _ = make_module(compose, tmp_path, ["scheduler=cosine", "trainer.max_epochs=7"])
    out = module.configure_optimizers()
    assert isinstance(out["optimizer"], torch.optim.Adam)
    assert out["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(out["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.LambdaLR)
    # the schedule spans the run's trainer.max_epochs (7): from 1 down to 0
    factor = out["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert factor(0) == pytest.approx(1.0) and factor(7) == pytest.approx(0.0, abs=1e-12)


def _opt_cfg(**kw):
    base = {
        "name": "adam",
        "lr": 0.01,
        "betas": [0.8, 0.9],
        "eps": 1e-5,
        "weight_decay": 0.1,
        "fused": None,
        "momentum": 0.5,
        "nesterov": True,
    }
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_adam_family(name, cls) -> None:
    params = [nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(params, _opt_cfg(name=name))
    assert type(opt) is cls
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"], g["fused"]) == (0.01, (0.8, 0.9), 1e-5, 0.1, True)
    assert build_optimizer(params, _opt_cfg(name=name, fused=False)).param_groups[0]["fused"] in (False, None)
    assert build_optimizer(params, _opt_cfg(name=name, fused=True)).param_groups[0]["fused"] is True


def test_build_optimizer_sgd() -> None:
    opt = build_optimizer([nn.Parameter(torch.zeros(2))], _opt_cfg(name="sgd"))
    assert type(opt) is torch.optim.SGD
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"]) == (0.01, 0.5, True, 0.1)


def test_build_scheduler_variants() -> None:
    def fresh():
        return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)

    assert build_scheduler(fresh(), OmegaConf.create({"name": "none"}), 10) is None
    opt = fresh()
    sched = build_scheduler(opt, OmegaConf.create({"name": "multistep", "milestones": [2, 4], "gamma": 0.5}), 10)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    # cosine with 2 warm-up epochs over 10: (e+1)/2 for e < 2, then 0.5 (1 + cos(pi (e-2)/8))
    factor = build_scheduler(fresh(), OmegaConf.create({"name": "cosine", "warmup_epochs": 2}), 10).lr_lambdas[0]
    assert [factor(e) for e in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-12)
    assert factor(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # no warm-up: cosine from 1 down to 0 at max_epochs
    factor = build_scheduler(fresh(), OmegaConf.create({"name": "cosine", "warmup_epochs": 0}), 4).lr_lambdas[0]
    assert [factor(e) for e in range(5)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0.0]
    )
    # max_epochs not above the warm-up: the decay still has one epoch to run over
    for max_epochs in (2, 3):
        factor = build_scheduler(fresh(), OmegaConf.create({"name": "cosine", "warmup_epochs": 3}), max_epochs)
        factor = factor.lr_lambdas[0]
        assert factor(2) == pytest.approx(1.0) and factor(3) == pytest.approx(1.0)
        assert factor(4) == pytest.approx(0.0, abs=1e-12)


# ==================================================================== results files


def test_atomic_write_text_creates_replaces_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "deep" / "dir" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_atomic_write_text_failure_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch) -> None:
    import weightshare.results as results

    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    temporaries: list[Path] = []

    def boom(src, dst):
        temporaries.append(Path(src))
        assert Path(src).read_text() == "new"  # written and flushed before the rename
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    # the temporary sits beside the target (a rename is atomic only within one file system),
    # hidden and marked as a temporary, so a report scanning the directory skips it
    (tmp,) = temporaries
    assert tmp.parent == target.parent
    assert tmp.name.startswith(".f.txt.") and tmp.name.endswith(".tmp")


def test_atomic_write_json_makes_non_finite_values_null(tmp_path) -> None:
    path = tmp_path / "r.json"
    obj = {
        "z": 1,
        "a": math.nan,
        "b": [math.inf, -math.inf, 1.5, (2, 3)],
        "c": {"t": torch.tensor(0.25), 4: torch.tensor(float("nan"))},
        "d": "x",
        "e": None,
        "f": 7,
    }
    atomic_write_json(path, obj)
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "z": 1,
        "a": None,
        "b": [None, None, 1.5, [2, 3]],
        "c": {"t": 0.25, "4": None},
        "d": "x",
        "e": None,
        "f": 7,
    }
    assert list(json.loads(text)) == ["z", "a", "b", "c", "d", "e", "f"]  # key order kept
    assert text.startswith('{\n  "z": 1,\n  "a"')  # indented for people reading results.json


def test_read_json_and_read_overrides_tolerate_bad_files(tmp_path) -> None:
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "half.json").write_text('{"status": "comp')
    assert read_json(tmp_path / "half.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(tmp_path / "list.json") is None
    (tmp_path / "ok.json").write_text('{"status": "completed"}')
    assert read_json(tmp_path / "ok.json") == {"status": "completed"}
    assert read_overrides(tmp_path) is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model=fcn\n- data.fold=2\n- seed=3\n")
    assert read_overrides(tmp_path) == ["model=fcn", "data.fold=2", "seed=3"]
    (tmp_path / ".hydra" / "overrides.yaml").write_text("model: fcn\n")
    assert read_overrides(tmp_path) is None
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    assert read_overrides(tmp_path) is None


def test_aug_identity() -> None:
    none = {"translate": 0.0, "rotate": 0.0, "noise": 0.0, "edge_noise": 0.0}
    assert aug_identity(none) == ("none", 0.0)
    assert aug_identity({**none, "rotate": 0.2}) == ("rotate", 0.2)
    assert aug_identity({**none, "edge_noise": 0.1}) == ("edge_noise", 0.1)
    assert aug_identity({**none, "translate": 0.1, "noise": 0.3}) == ("mixed", None)


def test_run_identity_names_what_a_sweep_groups_by(compose, tmp_path) -> None:
    cfg = compose(
        [
            "model=fcn",
            "data=digits",
            "data.fold=3",
            "aug.translate=0.2",
            "model.depth=2",
            "model.connectivity=0.5",
            "optimizer.lr=0.002",
            "seed=7",
        ],
        output_dir=tmp_path,
    )
    ident = run_identity(cfg)
    assert ident == {
        "data": "digits",
        "model": "fcn",
        "depth": 2,
        "arch": "paper",
        "split": "kfold",
        "fold": 3,
        "aug_type": "translate",
        "aug_level": 0.2,
        "aug": {"translate": 0.2, "rotate": 0.0, "noise": 0.0, "edge_noise": 0.0},
        "connectivity": 0.5,
        "share_tile": None,
        "share_penalty": 0.0,
        "lr": 0.002,
        "optimizer": "adam",
        "seed": 7,
        "init_from": None,
    }
    assert run_identity(compose(["experiment=divergence"], output_dir=tmp_path))["init_from"] == "cnn_stage"
    one = compose(["experiment=divergence", "divergence.cnn_epochs=1"], output_dir=tmp_path)
    assert run_identity(one)["init_from"] == "cnn_stage"
    cfg = compose(["model=fcn", "model.init_from=/x/last.ckpt"], output_dir=tmp_path)
    assert run_identity(cfg)["init_from"] == "/x/last.ckpt"


def test_epoch_table_rows_columns_resume_and_round_trip(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    fresh = EpochTable(tmp_path / "fresh.csv")
    assert fresh.rows == [] and fresh.columns() == ["epoch", "step"]
    fresh.append({"epoch": 0, "step": 1})  # usable without load()
    assert (tmp_path / "fresh.csv").read_text() == "epoch,step\n0,1\n"
    table = EpochTable(path)
    assert table.load() == [] and table.path == path
    table.append({"epoch": 0, "step": 5, "val/acc": 0.5, "a": 1.0})
    table.append({"epoch": 1, "step": 10, "val/acc": 0.1 + 0.2, "z": None})
    table.append({"epoch": 1, "step": 10, "val/acc": 0.75})  # the same epoch again replaces it
    assert path.read_text().splitlines() == ["epoch,step,a,val/acc", "0,5,1.0,0.5", "1,10,,0.75"]
    table.append({"epoch": 2, "step": 15, "val/acc": 0.1 + 0.2})
    assert path.read_text().splitlines()[-1] == "2,15,,0.30000000000000004"  # repr: no digits lost
    rows = read_metrics_csv(path)
    assert rows == [
        {"epoch": 0, "step": 5, "a": 1.0, "val/acc": 0.5},
        {"epoch": 1, "step": 10, "val/acc": 0.75},
        {"epoch": 2, "step": 15, "val/acc": 0.1 + 0.2},
    ]
    assert all(type(r["epoch"]) is int and type(r["step"]) is int for r in rows)
    again = EpochTable(path)
    assert again.load() == rows
    again.truncate(1)  # a run resumed at epoch 1 drops epochs 1 and later
    assert read_metrics_csv(path) == rows[:1]
    assert again.columns() == ["epoch", "step", "a", "val/acc"]


def test_read_metrics_csv_edge_cases(tmp_path) -> None:
    assert read_metrics_csv(tmp_path / "absent.csv") == []
    path = tmp_path / "m.csv"
    path.write_text("epoch,step,val/acc,lr\n0,3.0,0.5,\n,,0.9,0.1\n1,6,,0.001\n")
    assert read_metrics_csv(path) == [{"epoch": 0, "step": 3, "val/acc": 0.5}, {"epoch": 1, "step": 6, "lr": 0.001}]
    assert read_metrics_csv(Path(str(path))) == read_metrics_csv(str(path))
