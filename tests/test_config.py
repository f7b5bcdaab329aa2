"""Config layer: every group composes and instantiates; bad values fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from weightshare.builders import build_callbacks, build_loggers, build_model, build_trainer_kwargs
from weightshare.config import validate_config
from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError
from weightshare.loggers import make_run_name
from weightshare.models import count_parameters

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name not in ("hydra", "local", "hparams_search")
    for option in group.glob("*.yaml")
)
# options that need a companion choice to make sense
COMPANIONS = {
    ("model", "resnet"): ["data=cifar10"],
    ("model", "sharesnet"): ["data=cifar10"],
    ("experiment", "sharesnet_cifar10"): [],
}
MNIST_INFO = DataInfo("mnist", 1, 28, 28, 10)
CIFAR_INFO = DataInfo("cifar10", 3, 32, 32, 10)


def _of_type(callbacks: list, cls: type) -> list:
    return [cb for cb in callbacks if isinstance(cb, cls)]


def check_callbacks(cfg, callbacks: list, out: Path) -> None:
    """The callbacks the numbers depend on, by type and setting, as ``cfg.callbacks`` asks."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from weightshare.callbacks.epoch_csv import EpochCSVWriter
    from weightshare.callbacks.filter_metrics import FilterDistanceCallback

    c = cfg.callbacks
    (csv,) = _of_type(callbacks, EpochCSVWriter)
    assert csv.table.path == out / "metrics.csv"
    stopping = _of_type(callbacks, EarlyStopping)
    if c.early_stopping.enabled:
        (es,) = stopping
        assert (es.monitor, es.mode, es.patience) == (
            c.early_stopping.monitor,
            c.early_stopping.mode,
            c.early_stopping.patience,
        )
        assert abs(es.min_delta) == c.early_stopping.min_delta
        assert isinstance(es.patience, int) and es.patience >= 1
    else:
        assert stopping == []
    checkpoints = _of_type(callbacks, ModelCheckpoint)
    if c.checkpoint.enabled:
        ck, *last = checkpoints  # best.ckpt by the monitor; last.ckpt of every epoch (no monitor) with save_last
        assert Path(ck.dirpath) == out / "checkpoints" and ck.filename == "best"
        assert (ck.monitor, ck.mode, ck.save_last, ck.save_top_k) == (c.checkpoint.monitor, c.checkpoint.mode, None, 1)
        assert [(Path(k.dirpath), k.filename, k.monitor, k.save_top_k) for k in last] == (
            [(out / "checkpoints", "last", None, 1)] if c.checkpoint.save_last else []
        )
    else:
        assert checkpoints == []
    distances = _of_type(callbacks, FilterDistanceCallback)
    if cfg.model.name in ("fcn", "lowrank") and c.filter_metrics.enabled:  # the models with free layers
        (fd,) = distances
        assert list(fd.radii) == list(c.filter_metrics.radii)
        assert fd.every_n_epochs == c.filter_metrics.every_n_epochs
        # it logs in on_train_epoch_end: it must come before the CSV writer to land in the row
        assert callbacks.index(fd) < callbacks.index(csv)
    else:
        assert distances == []


def test_group_listing_is_not_empty() -> None:
    names = {g for g, _ in GROUPS}
    assert {"data", "model", "optimizer", "aug", "trainer", "logger", "callbacks", "experiment"} <= names


@pytest.mark.parametrize(("group", "option"), GROUPS, ids=[f"{g}={o}" for g, o in GROUPS])
def test_every_group_option_composes_validates_and_instantiates(compose, tmp_path, group, option) -> None:
    overrides = [f"{group}={option}", *COMPANIONS.get((group, option), [])]
    cfg = compose(overrides, output_dir=tmp_path)
    validate_config(cfg)
    info = CIFAR_INFO if cfg.data.name == "cifar10" else MNIST_INFO
    if cfg.model.name in ("resnet", "sharesnet"):
        # the ImageNet/164-layer networks are too big to build per option here: count a small one
        cfg.model.depth = 11 if cfg.model.arch == "cifar_preact" else 10
    model = build_model(cfg.model, info)
    assert count_parameters(model) > 0
    kwargs = build_trainer_kwargs(cfg, tmp_path)
    assert kwargs["default_root_dir"] == str(tmp_path)
    callbacks = build_callbacks(cfg, tmp_path)
    check_callbacks(cfg, callbacks, tmp_path)
    names = list(cfg.logger.names)
    if "wandb" in names:
        cfg.logger.wandb.offline = True
    loggers = build_loggers(cfg.logger, tmp_path, make_run_name(cfg), {"test": True})
    assert len(loggers) == len(names)
    from weightshare.loggers import finish_wandb

    finish_wandb()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("aug.translate=1.5", "aug.translate"),
        ("aug.rotate=-0.1", "aug.rotate"),
        ("aug.noise=1.0", "aug.noise"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-0.001", "optimizer.lr"),
        ("model.depth=4", "model.depth"),
        ("data.fold=5", "data.fold"),
        ("data.fold=-1", "data.fold"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.connectivity=1.0", "model.connectivity"),
        ("callbacks.filter_metrics.radii=[0]", "callbacks.filter_metrics.radii[0]"),
        ("data.split=random", "data.split"),
        ("data.name=imagenet", "data.name"),
        ("eval.variants=[clean,blur]", "eval.variants"),
        ("logger.names=[csv,mlflow]", "logger.names"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.precision=8-true", "trainer.precision"),
        ("model.share_tile=2", "model.share_tile"),  # only for model=fcn
    ],
)
def test_out_of_range_values_name_key_value_and_allowed(compose, tmp_path, override, key) -> None:
    cfg = compose([override], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.key == key
    msg = str(err.value)
    assert key in msg and "expected" in msg and "\n" not in msg
    assert str(override.split("=", 1)[1]).strip("[]").split(",")[-1] in msg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.bogus=1", "bogus"),
        ("model.depth=three", "three"),
        ("aug.translate=abc", "abc"),
        ("model=transformer", "transformer"),
    ],
)
def test_unknown_keys_types_and_options_are_errors(compose, tmp_path, override, fragment) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as err:
        compose([override], output_dir=tmp_path)
    text = str(err.value) + str(err.value.__cause__ or "")
    assert fragment in text


def test_protocol_defaults_follow_the_dataset(compose, tmp_path) -> None:
    mnist = compose([], output_dir=tmp_path)
    cifar = compose(["data=cifar10"], output_dir=tmp_path)
    assert (mnist.optimizer.lr, mnist.data.batch_size, mnist.trainer.max_epochs) == (1e-3, 256, 250)
    assert mnist.callbacks.early_stopping.patience == 50
    assert (cifar.optimizer.lr, cifar.data.batch_size, cifar.trainer.max_epochs) == (1e-4, 128, 500)
    assert cifar.callbacks.early_stopping.patience == 100
    assert mnist.data.split == "kfold" and mnist.data.n_folds == 5


@pytest.mark.parametrize(
    ("overrides", "patience"),
    [([], 50), (["data=cifar10"], 100), (["data=digits", "model=fcn"], 10), (["data=synthetic"], 10)],
)
def test_early_stopping_and_checkpoint_are_wired_with_the_data_configs_patience(
    compose, tmp_path, overrides, patience
) -> None:
    """The protocol's patience (MNIST 50, CIFAR-10 100) reaches Lightning's EarlyStopping."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from weightshare.callbacks.filter_metrics import FilterDistanceCallback

    cfg = compose(overrides, output_dir=tmp_path)
    validate_config(cfg)
    assert cfg.data.patience == patience
    callbacks = build_callbacks(cfg, tmp_path)
    (es,) = _of_type(callbacks, EarlyStopping)
    assert (es.monitor, es.mode, es.patience, es.min_delta) == ("val/acc", "max", patience, 0.0)
    ck, last = _of_type(callbacks, ModelCheckpoint)
    assert (ck.monitor, ck.mode, ck.save_top_k, last.monitor, last.filename) == ("val/acc", "max", 1, None, "last")
    assert Path(ck.dirpath) == tmp_path / "checkpoints"
    fds = _of_type(callbacks, FilterDistanceCallback)
    assert len(fds) == (1 if cfg.model.name == "fcn" else 0)  # filter metrics for an FCN only
    if fds:
        assert list(fds[0].radii) == [1, 4] and fds[0].every_n_epochs == 1
    check_callbacks(cfg, callbacks, tmp_path)


def test_early_stopping_settings_and_switch_reach_the_callback(compose, tmp_path) -> None:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    cfg = compose(
        [
            "data=synthetic",
            "data.patience=3",
            "callbacks.early_stopping.min_delta=0.01",
            "callbacks.early_stopping.monitor=val/loss",
            "callbacks.early_stopping.mode=min",
        ],
        output_dir=tmp_path,
    )
    validate_config(cfg)
    (es,) = _of_type(build_callbacks(cfg, tmp_path), EarlyStopping)
    assert (es.monitor, es.mode, es.patience) == ("val/loss", "min", 3)
    assert es.min_delta == -0.01  # Lightning stores min_delta signed by the mode
    cfg = compose(["experiment=divergence"], output_dir=tmp_path)
    callbacks = build_callbacks(cfg, tmp_path)
    assert _of_type(callbacks, EarlyStopping) == []  # the divergence experiment runs its full length
    assert [c.filename for c in _of_type(callbacks, ModelCheckpoint)] == ["best", "last"]  # last: the unshared CNN
    cfg = compose(["callbacks.checkpoint.enabled=false"], output_dir=tmp_path)
    assert _of_type(build_callbacks(cfg, tmp_path), ModelCheckpoint) == []


def test_experiment_and_budget_compose(compose, tmp_path) -> None:
    cfg = compose(["experiment=paper_translate", "budget=small"], output_dir=tmp_path)
    assert cfg.task_name == "paper_translate"
    assert cfg.trainer.max_epochs == 10
    assert cfg.callbacks.early_stopping.patience == 5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["+aug.translat=0.1"], "aug.translat"),  # the append syntax must not smuggle in a typo
        (["+callbacks.early_stopping.pateince=3"], "callbacks.early_stopping.pateince"),
        (["data.split=standard", "data.fold=3"], "data.fold"),  # the fold would be ignored
        (["scheduler=multistep", "scheduler.warmup_epochs=2"], "scheduler.warmup_epochs"),
        (["callbacks.early_stopping.monitor=val/accuracy"], "callbacks.early_stopping.monitor"),
    ],
)
def test_silently_ignored_settings_are_errors(compose, tmp_path, overrides, key) -> None:
    cfg = compose(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.key == key


def test_gpu_trainer_without_cuda_is_a_clear_error(compose, tmp_path) -> None:
    import torch

    from weightshare.train import train

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cfg = compose(["trainer=gpu", "data=synthetic"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.accelerator='gpu'.*no CUDA device"):
        train(cfg)
    assert not (tmp_path / "results.json").exists()  # nothing started
