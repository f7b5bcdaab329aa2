"""pack_key / unpackable_reason: which jobs of a sweep may share one pack."""

from __future__ import annotations

import pytest

from weightshare.packed import pack_key, unpackable_reason


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=fcn"],
        ["model=fcn", "model.connectivity=0.5", "model.connectivity_mode=input"],
        ["model=fcn", "model.share_tile=2"],
        ["model=fcn", "model.share_penalty=0.1"],
        ["model=fcn", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs"],
        ["model=fcn", "model.share_tile=2", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs"],
        ["model=fcn", "model.dynamic_sharing.every=10", "model.dynamic_sharing.radius=2"],
        ["model=lowrank"],
        ["model=lowrank", "model.combining=full", "model.rank=2"],
        ["model=lowrank", "model.combining=full", "model.dynamic_sharing.every=5"],
        ["trainer.precision=64-true"],
        ["trainer.precision=bf16-mixed", "scheduler=cosine"],
        ["aug.translate=0.3", "aug.noise=0.1"],
        ["model=resnet"],
        ["model=sharesnet"],
        ["model=fcn", "model.init_from=/x.ckpt"],
        ["optimizer=sgd"],
        ["optimizer=sgd_wrn", "model=resnet"],
    ],
)
def test_every_model_and_optimizer_packs(compose, overrides):
    assert unpackable_reason(compose(overrides)) is None


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["experiment=divergence"], "divergence"),
        (["model=fcn", "model.compile=true"], "model.compile"),
        (["trainer.precision=16-mixed"], "trainer.precision=16-mixed"),
        (["trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val=1.0"),
        (["trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches=2"),
        (["trainer.limit_train_batches=0.5"], "trainer.limit_train_batches"),
        (["trainer.check_val_every_n_epoch=2"], "check_val_every_n_epoch"),
        (["train=false"], "train=false"),
    ],
)
def test_unpackable_configs_name_the_reason(compose, overrides, fragment):
    reason = unpackable_reason(compose(overrides))
    assert reason is not None and fragment in reason
    assert "\n" not in reason


def test_members_may_differ_in_fold_seed_aug_masks_penalty_init_and_lr(compose):
    base = pack_key(compose(["model=fcn"]))
    for extra in (
        ["data.fold=3"],
        ["seed=7"],
        ["aug.translate=0.2"],
        ["aug.rotate=0.1", "aug.edge_noise=0.3"],
        ["model.connectivity=0.4"],
        ["model.connectivity_mode=input", "model.connectivity=0.2"],
        ["model.share_penalty=0.5"],
        ["model.fcn_init=keras"],
        ["optimizer.lr=0.01"],
        ["task_name=other", "logger=none"],
    ):
        assert pack_key(compose(["model=fcn", *extra])) == base, extra
    hash(base)


def test_members_must_share_data_architecture_schedule_and_eval(compose):
    base = pack_key(compose(["model=fcn"]))
    for extra in (
        ["data=cifar10"],
        ["data.split=standard"],
        ["model=cnn"],
        ["model.depth=2"],
        ["model.share_tile=2"],
        ["data.batch_size=128"],
        ["trainer.max_epochs=3"],
        ["callbacks.early_stopping.patience=3"],
        ["trainer.precision=64-true"],
        ["trainer.accelerator=cpu"],
        ["optimizer.eps=1e-8"],
        ["scheduler=cosine"],
        ["eval=clean"],
        ["eval.seed=1"],
        ["aug.edge_width=3"],
    ):
        assert pack_key(compose(["model=fcn", *extra])) != base, extra


def test_penalty_kind_is_shared_and_its_weight_is_not(compose):
    l1 = ["model=fcn", "model.share_penalty_kind=l1_all_pairs"]
    base = pack_key(compose([*l1, "model.share_penalty=0.1"]))
    assert pack_key(compose([*l1, "model.share_penalty=0.02"])) == base
    assert pack_key(compose(["model=fcn", "model.share_penalty=0.1"])) != base


def test_dynamic_sharing_schedule_and_groups_are_shared_and_strength_is_not(compose):
    dyn = ["model=fcn", "model.dynamic_sharing.every=10"]
    base = pack_key(compose(dyn))
    assert pack_key(compose([*dyn, "model.dynamic_sharing.strength=0.3"])) == base
    for extra in (["model.dynamic_sharing.every=5"], ["model.dynamic_sharing.radius=1"]):
        assert pack_key(compose(["model=fcn", "model.dynamic_sharing.every=10", *extra])) != base, extra
    assert pack_key(compose(["model=fcn"])) != base


def test_lowrank_rank_and_combining_are_shared(compose):
    base = pack_key(compose(["model=lowrank"]))
    assert pack_key(compose(["model=lowrank", "model.fcn_init=keras", "optimizer.lr=0.01"])) == base
    assert pack_key(compose(["model=lowrank", "model.basis_init=he_uniform"])) == base  # init only
    changes = ["model.rank=2", "model.combining=full", "model.filter_bias=false", "model.spatial_bias=false"]
    for extra in ([c] for c in changes):
        assert pack_key(compose(["model=lowrank", *extra])) != base, extra
