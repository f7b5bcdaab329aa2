"""All-pairs L1 sharing regulariser (layers.share_penalty_l1) against a brute-force double loop."""

from __future__ import annotations

import pytest
import torch

from weightshare.config.compose import load_config
from weightshare.errors import ConfigError
from weightshare.layers.free_conv import FreeConv2d
from weightshare.layers.lowrank_conv import LowRankConv2d
from weightshare.layers.share_penalty import PENALTY_KINDS, model_share_penalty, neighbour_penalty
from weightshare.layers.share_penalty_l1 import all_pairs_l1
from weightshare.layers.tiled_conv import TiledConv2d

DT = torch.float64


def brute_force(kernel: torch.Tensor) -> float:
    """1/(P-1) * sum over position pairs p < q of sum_e |W_p[e] - W_q[e]|, by double loop."""
    flat = kernel.reshape(kernel.shape[0] * kernel.shape[1], -1)
    p = flat.shape[0]
    total = 0.0
    for i in range(p):
        for j in range(i + 1, p):
            total += float((flat[i] - flat[j]).abs().sum())
    return total / (p - 1)


def test_hand_made_value():
    # 3 positions (3x1 map), one entry: values 0, 1, 3 -> pairs 1 + 3 + 2 = 6, / (3 - 1) = 3
    line = torch.tensor([0.0, 3.0, 1.0], dtype=DT).reshape(3, 1, 1)
    assert all_pairs_l1(line).item() == pytest.approx(3.0)
    # sorted form: (2k - P + 1) = -2, 0, 2 -> -2*0 + 0*1 + 2*3 = 6
    assert all_pairs_l1(torch.zeros(1, 1, 4, dtype=DT)).item() == 0.0  # a single position
    assert all_pairs_l1(torch.ones(3, 4, 2, dtype=DT)).item() == 0.0  # shared


@pytest.mark.parametrize("shape", [(4, 5, 2, 1, 2, 2), (2, 3, 7), (6, 1, 3)])
def test_matches_the_brute_force_double_loop(shape):
    torch.manual_seed(0)
    k = torch.randn(*shape, dtype=DT)
    assert all_pairs_l1(k).item() == pytest.approx(brute_force(k), rel=1e-12)


def test_gradcheck_and_hand_gradient():
    torch.manual_seed(1)
    k = torch.randn(3, 4, 2, 3, dtype=DT, requires_grad=True)  # distinct values: differentiable
    assert torch.autograd.gradcheck(all_pairs_l1, (k,))
    # d/dx_p = (#positions below x_p - #above) / (P - 1) per entry
    line = torch.tensor([0.0, 3.0, 1.0], dtype=DT).reshape(3, 1, 1).requires_grad_(True)
    all_pairs_l1(line).backward()
    torch.testing.assert_close(line.grad.flatten(), torch.tensor([-2.0, 2.0, 0.0], dtype=DT) / 2)


def test_model_penalty_kinds_and_masks():
    torch.manual_seed(2)
    free = FreeConv2d(2, 3, 3, input_size=(6, 6), connectivity=0.5, mask_seed=1)
    tiled = TiledConv2d(3, 3, 3, input_size=4, tile=1)
    low = LowRankConv2d(3, 2, 1, input_size=2, rank=2)
    model = torch.nn.Sequential(free, tiled, low)
    got = model_share_penalty(model, kind="l1_all_pairs")
    expected = sum(brute_force(m.effective_kernel().detach()) for m in (free, tiled, low))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert torch.all(free.weight.grad[~free.mask] == 0)  # removed weights are not pulled
    l2 = model_share_penalty(model, kind="l2_neighbours")
    assert l2.item() == pytest.approx(sum(neighbour_penalty(m.effective_kernel()).item() for m in (free, tiled, low)))
    with pytest.raises(ConfigError, match=r"model\.share_penalty_kind"):
        model_share_penalty(model, kind="l1_neighbours")
    assert PENALTY_KINDS == ("l2_neighbours", "l1_all_pairs")


def test_training_step_uses_the_chosen_kind():
    from omegaconf import OmegaConf

    from weightshare.builders import build_module
    from weightshare.data.dataset import DataInfo

    cfg = load_config(
        ["data=synthetic", "model=fcn", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs"]
    )
    module = build_module(cfg, DataInfo("synthetic", 1, 28, 28, 10))
    expected = sum(all_pairs_l1(getattr(module.net, n).effective_kernel()) for n in module.net.conv_names)
    torch.testing.assert_close(module.share_penalty(), expected)
    assert OmegaConf.select(cfg, "model.share_penalty_kind") == "l1_all_pairs"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model=fcn", "model.share_penalty=0.1", "model.share_penalty_kind=l3"], "model.share_penalty_kind"),
        (["model=fcn", "model.share_penalty_kind=l1_all_pairs"], "model.share_penalty_kind"),
        (
            ["model=fcn", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs", "model.penalty_radius=2"],
            "model.penalty_radius",
        ),
        (["model=cnn", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs"], "model.share_penalty"),
    ],
)
def test_bad_penalty_config_is_a_one_line_error(overrides, key):
    with pytest.raises(ConfigError, match=key) as info:
        load_config(["data=synthetic", *overrides])
    assert "\n" not in str(info.value)
