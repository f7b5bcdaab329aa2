"""Fuzz the config layer: random override values give a valid config or the project's ConfigError."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightshare.config.compose import load_config
from weightshare.config.validate import LEVEL_KEYS
from weightshare.errors import ConfigError

KEYS = [
    *(f"aug.{k}" for k in LEVEL_KEYS),
    "optimizer.lr",
    "model.depth",
    "data.fold",
    "data.batch_size",
    "model.connectivity",
    "trainer.max_epochs",
    "seed",
    "data.name",
    "model",
    "data",
    "optimizer",
    "callbacks.filter_metrics.radii",
    "model.share_tile",
    "eval.rotate_degrees",
    "data.n_folds",
    "model.connectivity_mode",
    "trainer.precision",
    "data.split",
    "eval.variants",
    "logger.names",
]
VALUES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: "nan" if math.isnan(f) else repr(f)),
    st.sampled_from(
        [
            "cnn",
            "fcn",
            "mnist",
            "adam",
            "kfold",
            "true",
            "null",
            "[]",
            "[1,2]",
            "[0]",
            "''",
            "bf16-mixed",
            "input",
            "weight",
            "[clean]",
            "[csv,wandb]",
            "0.99",
            "1",
            "-0.0",
            "1e-3",
        ]
    ),
    st.text(alphabet="abcdefghij0123456789_.-", min_size=1, max_size=8),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3, unique_by=lambda kv: kv[0]))
def test_random_overrides_give_a_valid_config_or_a_config_error(pairs) -> None:
    overrides = [f"{k}={v}" for k, v in pairs] + ["paths.output_dir=/tmp/ws-fuzz"]
    try:
        cfg = load_config(overrides)
    except ConfigError as err:
        assert "\n" not in str(err) and err.key
        return
    # a config that passed is really in range
    for key in LEVEL_KEYS:
        assert 0.0 <= cfg.aug[key] < 1.0
    assert cfg.optimizer.lr > 0 and cfg.model.depth in (2, 3)
    assert 0 <= cfg.data.fold < cfg.data.n_folds and cfg.data.batch_size >= 1
    assert 0.0 <= cfg.model.connectivity < 1.0
