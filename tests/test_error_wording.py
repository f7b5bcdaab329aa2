"""One wording per range check: every [0, 1) check says "a number in [0, 1)", wherever it runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from weightshare.augment.validate import validate_aug_levels, validate_eval_config
from weightshare.config.schema import AugConfig, EvalConfig
from weightshare.errors import ConfigError
from weightshare.layers.free_conv import FreeConv2d


@pytest.mark.parametrize(
    "raise_it",
    [
        lambda: validate_aug_levels(OmegaConf.structured(AugConfig(translate=1.5))),
        lambda: validate_eval_config(OmegaConf.structured(EvalConfig(translate=1.0))),
        lambda: FreeConv2d(1, 2, 3, input_size=8, connectivity=1.0),
    ],
)
def test_unit_interval_checks_share_one_wording(raise_it) -> None:
    with pytest.raises(ConfigError) as err:
        raise_it()
    assert str(err.value).endswith("expected a number in [0, 1)")
