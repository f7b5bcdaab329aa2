"""Counter-based draws: a pure function of (key, sample index, stream), whatever the batching."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from weightshare.augment import EvalVariants, TrainAugmenter
from weightshare.augment.keyed import keyed_train_augment
from weightshare.augment.keyed_rng import SampleKeys, mix64, mix64_int, train_key


def aug_cfg(**kw):
    base = dict(
        translate=0.0, rotate=0.0, noise=0.0, edge_noise=0.0, edge_width=5,
        faithful_edge_noise=False, crop_padding=0, hflip=False,
    )  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def eval_cfg(**kw):
    base = dict(
        variants=["clean", "translate", "rotate", "noise", "edge_noise", "quadrant_swap"],
        translate=0.25, rotate_degrees=45.0, noise=0.15, edge_noise=0.15, edge_width=5, seed=12345,
    )  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_tensor_hash_equals_python_reference():
    vals = [0, 1, 2, 12345, 2**40 + 7, 2**63 - 1, -1, -(2**63), -987654321]
    t = mix64(torch.tensor(vals, dtype=torch.int64))
    for v, h in zip(vals, t.tolist()):
        assert h & (2**64 - 1) == mix64_int(v & (2**64 - 1))
    assert mix64_int(0) == 0  # SplitMix64's finaliser fixes 0 (the keys below never are 0)
    assert mix64_int(1) == 0x5692161D100B05E5  # published value of the finaliser at 1


def test_draws_do_not_depend_on_batching():
    idx = torch.arange(100, 164)
    k = train_key(3, 1, 7)
    whole = SampleKeys(k, idx).uniform(5, 11)
    parts = torch.cat([SampleKeys(k, idx[i : i + 10]).uniform(5, 11) for i in range(0, 64, 10)])
    assert torch.equal(whole, parts)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(SampleKeys(k, idx[perm]).normal(2, 7), SampleKeys(k, idx).normal(2, 7)[perm])
    # per-sample keys (a pack) give each sample its own member's numbers
    k2 = train_key(4, 1, 7)
    mixed = SampleKeys(torch.tensor([k] * 64 + [k2] * 64), torch.cat([idx, idx])).uniform(5, 11)
    assert torch.equal(mixed[:64], whole) and torch.equal(mixed[64:], SampleKeys(k2, idx).uniform(5, 11))
    assert not torch.equal(mixed[:64], mixed[64:])


def test_keys_differ_by_seed_fold_epoch_and_stream():
    keys = {train_key(s, f, e) for s in range(3) for f in range(3) for e in range(3)}
    assert len(keys) == 27
    sk = SampleKeys(train_key(0, 0, 0), torch.arange(8))
    assert not torch.equal(sk.uniform(1, 4), sk.uniform(2, 4))


def test_uniform_and_normal_statistics():
    sk = SampleKeys(train_key(0, 0, 0), torch.arange(2000))
    u = sk.uniform(1, 100)
    assert u.min() >= 0 and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.003)
    assert u.var().item() == pytest.approx(1 / 12, rel=0.01)
    u64 = sk.uniform(1, 10, torch.float64)
    assert u64.dtype == torch.float64 and u64.max() < 1
    # the float32 uniform is the float64 one truncated to 24 bits
    # the documented bits of one hash: float64 value j = top 53 bits of hash j; float32 values j and
    # j + ceil(n/2) = bits 40-63 and 8-31 of hash j
    h = sk.bits(1, 10)[0, 3].item() & (2**64 - 1)
    assert u64[0, 3].item() == (h >> 11) * 2.0**-53
    u32 = sk.uniform(1, 20)
    assert u32[0, 3].item() == (h >> 40) * 2.0**-24 and u32[0, 13].item() == ((h >> 8) & 0xFFFFFF) * 2.0**-24
    z = sk.normal(3, 101)
    assert z.shape == (2000, 101) and torch.isfinite(z).all()
    assert z.mean().item() == pytest.approx(0.0, abs=0.005)
    assert z.std().item() == pytest.approx(1.0, abs=0.005)
    # tails of a normal: P(|z| > 3) = 0.0027
    assert (z.abs() > 3).float().mean().item() == pytest.approx(0.0027, rel=0.15)
    assert math.isclose(float((z > 0).float().mean()), 0.5, abs_tol=0.003)


def test_train_augment_per_sample_levels_equal_separate_calls():
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(12)
    ka, kb = train_key(0, 0, 1), train_key(5, 2, 1)
    a = TrainAugmenter(aug_cfg(translate=0.2, noise=0.1))(x[:6], SampleKeys(ka, idx[:6]))
    b = TrainAugmenter(aug_cfg(rotate=0.1, edge_noise=0.3))(x[6:], SampleKeys(kb, idx[6:]))
    keys = torch.tensor([ka] * 6 + [kb] * 6)
    lv = lambda v1, v2: torch.tensor([v1] * 6 + [v2] * 6, dtype=torch.float64)  # noqa: E731
    packed = keyed_train_augment(
        x, SampleKeys(keys, idx), translate=lv(0.2, 0), rotate=lv(0, 0.1), noise=lv(0.1, 0), edge_noise=lv(0, 0.3)
    )
    assert torch.equal(packed[:6], a) and torch.equal(packed[6:], b)
    # a sample with every level 0 is returned bit-identical
    still = keyed_train_augment(x, SampleKeys(keys, idx), translate=lv(0.2, 0.0))
    assert torch.equal(still[6:], x[6:]) and not torch.equal(still[:6], x[:6])


def test_keyed_translate_is_an_edge_filled_shift_within_range():
    x = torch.zeros(256, 1, 40, 40)
    x[:, 0, 20, 20] = 1.0
    out = TrainAugmenter(aug_cfg(translate=0.2))(x, SampleKeys(train_key(0, 0, 0), torch.arange(256)))
    w = out[:, 0].sum((1, 2))
    torch.testing.assert_close(w, torch.ones(256), atol=1e-5, rtol=0)
    rows = torch.arange(40.0).view(1, 40, 1)
    cy = (out[:, 0] * rows).sum((1, 2))
    assert (cy - 20).abs().max() <= 8 + 1e-4 and (cy - 20).abs().max() > 7.0


def test_eval_variants_do_not_depend_on_eval_batch_size():
    ev = EvalVariants(eval_cfg())
    x = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    idx = torch.arange(500, 530)
    whole = ev(x, idx)
    parts = [ev(x[i : i + 7], idx[i : i + 7]) for i in range(0, 30, 7)]
    for name in whole:
        torch.testing.assert_close(whole[name], torch.cat([p[name] for p in parts]), atol=1e-6, rtol=0)
    assert not torch.equal(ev(x, idx + 1)["noise"], whole["noise"])
