"""StackedAdam: per-member Adam equals torch.optim.Adam (fused and for-each) member by member."""

from __future__ import annotations

import pytest
import torch

from weightshare.packed.adam import StackedAdam


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_stacked_adam_matches_torch_adam_in_float64(fused, weight_decay):
    gen = torch.Generator().manual_seed(0)
    K, shapes = 3, [(4, 5), (7,)]
    lrs = [1e-3, 3e-2, 1e-4]
    init = [torch.randn(K, *s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(K, *s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(6)]
    stacked = [p.clone().requires_grad_(True) for p in init]
    lr = torch.tensor(lrs, dtype=torch.float64)
    opt = StackedAdam(stacked, lr, betas=(0.9, 0.999), eps=1e-7, weight_decay=weight_decay)
    refs = []
    for k in range(K):
        params = [torch.nn.Parameter(p[k].clone()) for p in init]
        refs.append((params, torch.optim.Adam(params, lr=lrs[k], eps=1e-7, weight_decay=weight_decay, fused=fused)))
    for step, g in enumerate(grads):
        factor = 0.5 if step >= 3 else 1.0  # a scheduler halving the rate
        for p, gp in zip(stacked, g):
            p.grad = gp.clone()
        opt.step(factor)
        for k, (params, ref) in enumerate(refs):
            for group in ref.param_groups:
                group["lr"] = lrs[k] * factor
            for p, gp in zip(params, g):
                p.grad = gp[k].clone()
            ref.step()
    for k, (params, ref) in enumerate(refs):
        for p, s in zip(params, stacked):
            torch.testing.assert_close(s[k].detach(), p.detach(), atol=1e-14, rtol=0)
        state = opt.member_state(k)
        for i, p in enumerate(params):
            torch.testing.assert_close(state["state"][i]["exp_avg"], ref.state[p]["exp_avg"], atol=1e-14, rtol=0)
            assert float(state["state"][i]["step"]) == float(ref.state[p]["step"]) == 6


def test_masked_weights_never_move_and_dropping_keeps_the_others():
    p = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)
    opt = StackedAdam([p], torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64))
    for _ in range(3):
        p.grad = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3, dtype=torch.float64)
        opt.step()
    assert torch.equal(p[:, 1], torch.ones(3, dtype=torch.float64))  # zero gradient: Adam does not move it
    before = p.detach().clone()
    q = p.detach()[[0, 2]].clone().requires_grad_(True)
    opt.select([q], [0, 2])
    q.grad = torch.ones_like(q)
    opt.step()
    assert opt.step_count.tolist() == [4.0, 4.0]
    assert not torch.equal(q.detach(), before[[0, 2]])
    with pytest.raises(ValueError, match=r"lr must have shape \(2,\)"):
        StackedAdam([q], torch.tensor([0.1], dtype=torch.float64))
