"""The model registry is the one list of model names: validation and the builder read it."""

from __future__ import annotations

import pytest

from weightshare.builders import build_model
from weightshare.config import validate_config
from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError
from weightshare.models import MODEL_NAMES, MODELS, count_parameters
from weightshare.models.registry import is_free_model, names_of

MNIST = DataInfo("mnist", 1, 28, 28, 10)
CIFAR = DataInfo("cifar10", 3, 32, 32, 10)
# parameter counts of the registered models at their config defaults (hand counts of the
# paper nets are in test_paper_nets.py; ResNet-11 keeps this fast)
EXPECTED = {("cnn", "mnist"): 2_201_098, ("fcn", "mnist"): 4_010_058}


def test_registry_lists_every_model_config_and_families_partition_it() -> None:
    from weightshare.config.compose import CONF_DIR

    configs = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    assert configs == sorted(MODEL_NAMES)
    assert sorted(names_of("paper") + names_of("resnet")) == sorted(MODEL_NAMES)
    assert [n for n in MODEL_NAMES if is_free_model(n)] == ["fcn"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_model_validates_and_builds(compose, tmp_path, name: str) -> None:
    extra = ["model.depth=11", "data=cifar10"] if MODELS[name].family == "resnet" else ["data=mnist"]
    cfg = compose([f"model={name}", *extra], output_dir=tmp_path)
    validate_config(cfg)
    data = CIFAR if MODELS[name].family == "resnet" else MNIST
    net = build_model(cfg.model, data)
    n = count_parameters(net)
    if (name, data.name) in EXPECTED:
        assert n == EXPECTED[(name, data.name)]
    assert n > 0


def test_unknown_model_name_is_one_line_error(compose, tmp_path) -> None:
    cfg = compose(["model.name=mlp"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model\.name='mlp'.*one of \['cnn', 'fcn', 'resnet', 'sharesnet'\]"):
        validate_config(cfg)


def test_every_listed_optimizer_and_scheduler_builds(compose, tmp_path) -> None:
    import torch

    from weightshare.builders import build_optimizer, build_scheduler
    from weightshare.config.schema import OPTIMIZERS, SCHEDULERS

    params = [torch.nn.Parameter(torch.zeros(3))]
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    assert set(kinds) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        cfg = compose([f"optimizer.name={name}", "scheduler=cosine", "scheduler.warmup_epochs=1"], output_dir=tmp_path)
        opt = build_optimizer(params, cfg.optimizer)
        assert type(opt) is kinds[name]
    for name in SCHEDULERS:
        cfg = compose([f"scheduler.name={name}"], output_dir=tmp_path)
        sched = build_scheduler(opt, cfg.scheduler, max_epochs=10)
        assert (sched is None) == (name == "none")
    cfg.optimizer.name = "lamb"
    with pytest.raises(ConfigError, match=r"optimizer\.name='lamb'"):
        build_optimizer(params, cfg.optimizer)
