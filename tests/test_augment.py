"""Tests of weightshare.augment against independent computations.

References used: torch.roll plus edge replication (integer shifts), bilinear weights worked
out by hand (sub-pixel shift of one bright pixel), torch.rot90 (quarter turns), Keras'
``apply_affine_transform`` re-implemented on scipy.ndimage (arbitrary angle and shift),
the published code's NHWC slicing re-enacted in numpy (faithful edge noise), per-pixel
Python loops (quadrant swap, crop) and sample statistics of the uniform/normal laws.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weightshare.augment import (
    EvalVariants,
    TrainAugmenter,
    affine_batch,
    crop_at,
    edge_noise,
    gaussian_noise,
    quadrant_swap,
    random_crop,
    random_hflip,
    rotate,
    sample_angles,
    sample_shifts,
    translate,
    validate_aug_levels,
)
from weightshare.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def aug_cfg(**kw) -> SimpleNamespace:
    base = dict(
        translate=0.0,
        rotate=0.0,
        noise=0.0,
        edge_noise=0.0,
        edge_width=5,
        faithful_edge_noise=False,
        crop_padding=0,
        hflip=False,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def eval_cfg(**kw) -> SimpleNamespace:
    base = dict(
        variants=["clean", "translate", "rotate", "noise", "edge_noise", "quadrant_swap"],
        translate=0.25,
        rotate_degrees=45.0,
        noise=0.15,
        edge_noise=0.15,
        edge_width=5,
        seed=12345,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def roll_edge(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Integer shift of (..., H, W) content by (dx right, dy down), |dx| < W, |dy| < H: roll,
    then overwrite the wrapped-around rows/columns with the nearest edge row/column."""
    H, W = img.shape[-2:]
    out = torch.roll(img, shifts=(dy, dx), dims=(-2, -1)).clone()
    if dy > 0:
        out[..., :dy, :] = out[..., dy : dy + 1, :]
    elif dy < 0:
        out[..., H + dy :, :] = out[..., H + dy - 1 : H + dy, :]
    if dx > 0:
        out[..., :, :dx] = out[..., :, dx : dx + 1]
    elif dx < 0:
        out[..., :, W + dx :] = out[..., :, W + dx - 1 : W + dx]
    return out


def centroids(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (x, y) of each (B, 1, H, W) image."""
    H, W = y.shape[-2:]
    m = y[:, 0].double()
    mass = m.sum(dim=(1, 2))
    cx = (m.sum(dim=1) * torch.arange(W, dtype=torch.float64)).sum(dim=1) / mass
    cy = (m.sum(dim=2) * torch.arange(H, dtype=torch.float64)).sum(dim=1) / mass
    return cx, cy


# ---------------------------------------------------------------- translation / rotation


def test_integer_shifts_equal_roll_with_edge_fill():
    x = torch.rand(7, 2, 9, 11, generator=gen(1))
    shifts = [(3, -2), (-4, 5), (0, 0), (10, -8), (-1, 1), (2, 0), (0, -3)]
    out = affine_batch(x, None, torch.tensor(shifts, dtype=torch.float32))
    for b, (dx, dy) in enumerate(shifts):
        assert torch.equal(out[b], roll_edge(x[b], dx, dy)), (dx, dy)


def test_subpixel_shift_spreads_single_pixel_bilinearly():
    x = torch.zeros(2, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = affine_batch(x, None, torch.tensor([[0.25, 0.6], [-0.3, 0.0]]))
    expected0 = torch.zeros(9, 9)
    # content moves right by 0.25 and down by 0.6: mass (1-a)(1-b), a(1-b), (1-a)b, ab
    expected0[4, 4], expected0[4, 5] = 0.75 * 0.4, 0.25 * 0.4
    expected0[5, 4], expected0[5, 5] = 0.75 * 0.6, 0.25 * 0.6
    expected1 = torch.zeros(9, 9)
    expected1[4, 4], expected1[4, 3] = 0.7, 0.3
    torch.testing.assert_close(out[0, 0], expected0, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 0], expected1, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-6, rtol=0)


def test_translate_shifts_are_uniform_per_image_and_axis():
    n, H, W, f = 2000, 32, 40, 0.2
    x = torch.zeros(n, 1, H, W)
    x[:, 0, 16, 20] = 1.0
    out = translate(x, f, gen(7))
    cx, cy = centroids(out)
    # bilinear preserves the mass and moves the centroid of an interior pixel by the shift
    for d, a in ((cx - 20, f * W), (cy - 16, f * H)):
        assert d.abs().max() <= a + 1e-4
        assert d.max() > 0.98 * a and d.min() < -0.98 * a
        assert abs(d.mean()) < 4 * a / math.sqrt(3 * n)
        assert d.var().item() == pytest.approx((2 * a) ** 2 / 12, rel=0.07)
        # Kolmogorov-Smirnov distance to U(-a, a), 1% critical value 1.63/sqrt(n)
        u = torch.sort((d + a) / (2 * a)).values
        ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
        assert (ecdf - u).abs().max() < 1.63 / math.sqrt(n)
    # shifts are independent per image and between the axes
    assert abs(np.corrcoef(cx.numpy(), cy.numpy())[0, 1]) < 0.1


def test_rotate_angles_are_uniform_in_range():
    n, f = 2000, 0.1  # +-36 degrees
    x = torch.zeros(n, 1, 33, 33)
    x[:, 0, 16, 26] = 1.0  # 10 px right of the centre (16, 16)
    cx, cy = centroids(rotate(x, f, gen(3)))
    ang = torch.rad2deg(torch.atan2(-(cy - 16), cx - 16))  # counter-clockwise as displayed
    a = f * 360
    assert ang.abs().max() < a + 1.0  # centroid of a bilinearly rotated point: ~0.5 degree error
    assert ang.max() > a - 2 and ang.min() < -a + 2
    assert abs(ang.mean()) < 4 * a / math.sqrt(3 * n)
    assert ang.std().item() == pytest.approx(2 * a / math.sqrt(12), rel=0.06)


@pytest.mark.parametrize("size", [8, 7, 28])
def test_quarter_turns_equal_rot90_exactly(size):
    x = torch.rand(4, 2, size, size, generator=gen(size))
    out = affine_batch(x, torch.tensor([90.0, -90.0, 180.0, 270.0]), None)
    for b, k in enumerate([1, -1, 2, 3]):
        assert torch.equal(out[b], torch.rot90(x[b], k, dims=(-2, -1))), k


def test_half_turn_on_non_square_image():
    x = torch.rand(1, 1, 6, 9, generator=gen(2))
    out = affine_batch(x, torch.tensor([180.0]), None)
    assert torch.equal(out[0], torch.rot90(x[0], 2, dims=(-2, -1)))


def test_rotation_then_shift_is_one_resampling():
    x = torch.rand(2, 1, 10, 10, generator=gen(4))
    out = affine_batch(x, torch.tensor([90.0, -90.0]), torch.tensor([[2.0, -3.0], [-1.0, 4.0]]))
    assert torch.equal(out[0], roll_edge(torch.rot90(x[0], 1, dims=(-2, -1)), 2, -3))
    assert torch.equal(out[1], roll_edge(torch.rot90(x[1], -1, dims=(-2, -1)), -1, 4))


def keras_apply_affine(img: np.ndarray, theta_deg: float, tx: float, ty: float) -> np.ndarray:
    """Keras 2 ``apply_affine_transform`` (rotation then shift, fill_mode='nearest', order=1)
    for one (H, W) channel, re-implemented from its source on scipy.ndimage."""
    ndimage = pytest.importorskip("scipy.ndimage")
    theta = np.deg2rad(theta_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    m = rot @ shift
    h, w = img.shape
    o_x, o_y = float(h) / 2 + 0.5 - 1, float(w) / 2 + 0.5 - 1  # transform_matrix_offset_center
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    m = offset @ m @ reset
    return ndimage.affine_transform(img, m[:2, :2], m[:2, 2], order=1, mode="nearest", cval=0.0)


def test_matches_keras_apply_affine_transform():
    x = torch.rand(3, 2, 12, 15, generator=gen(5), dtype=torch.float64)
    angles = [33.7, -151.2, 0.0]
    shifts = [(2.3, -1.7), (-0.4, 3.9), (-5.5, 0.25)]
    out = affine_batch(x, torch.tensor(angles), torch.tensor(shifts))
    for b, (a, (dx, dy)) in enumerate(zip(angles, shifts)):
        for c in range(2):
            # same image under Keras' convention: input = M @ output, so theta -> -a, shift -> -s
            ref = keras_apply_affine(x[b, c].numpy(), -a, -dy, -dx)
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=2e-5)


# ---------------------------------------------------------------- noise


def test_gaussian_noise_std_and_not_clipped():
    x = torch.full((256, 1, 28, 28), 0.5)
    out = gaussian_noise(x, 0.3, gen(11))
    d = out - 0.5
    assert d.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(d.mean().item()) < 0.003
    assert out.min() < 0 and out.max() > 1  # not clipped
    assert gaussian_noise(x, 0.0, gen(0)) is x


def test_edge_noise_changes_frame_only():
    x = torch.rand(8, 3, 28, 28, generator=gen(12))
    out = edge_noise(x, 0.15, 5, gen(13))
    assert torch.equal(out[..., 5:23, 5:23], x[..., 5:23, 5:23])
    frame = torch.ones(28, 28, dtype=torch.bool)
    frame[5:23, 5:23] = False
    changed = out != x
    assert changed[..., frame].all()
    assert (out - x)[..., frame].std().item() == pytest.approx(0.15, rel=0.03)


def test_faithful_edge_noise_reproduces_nhwc_slicing_bug():
    B, H, W, C, w = 16, 28, 28, 2, 5
    # the published code, re-enacted: a mask of an NHWC batch sliced as if it were HWC
    mask = np.zeros((B, H, W, C), dtype=bool)
    mask[:w] = True
    mask[-w:] = True
    mask[:, :w] = True
    mask[:, -w:] = True
    expected_changed = torch.from_numpy(mask.transpose(0, 3, 1, 2).copy())
    x = torch.rand(B, C, H, W, generator=gen(14))
    out = edge_noise(x, 0.2, w, gen(15), faithful=True)
    assert torch.equal(out != x, expected_changed)
    # sanity of the pattern itself: whole images 0-4 and 11-15, rows only for 5-10
    assert expected_changed[:5].all() and expected_changed[11:].all()
    assert not expected_changed[5:11, :, 5:23, :].any() and expected_changed[5:11, :, :5].all()


# ---------------------------------------------------------------- quadrant swap


def test_quadrant_swap_hand_made_4x4():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0, 1, 8, 9], [4, 5, 12, 13], [2, 3, 10, 11], [6, 7, 14, 15]]).float()
    out = quadrant_swap(x)
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(quadrant_swap(out), x)


@pytest.mark.parametrize("size,half", [(28, 14), (32, 16)])
def test_quadrant_swap_pixelwise_and_involution(size, half):
    x = torch.rand(2, 3, size, size, generator=gen(size))
    out = quadrant_swap(x)
    ref = torch.empty_like(x)
    for i in range(size):
        for j in range(size):
            if i < half and j >= half:
                si, sj = i + half, j - half  # top-right <- bottom-left
            elif i >= half and j < half:
                si, sj = i - half, j + half  # bottom-left <- top-right
            else:
                si, sj = i, j
            ref[..., i, j] = x[..., si, sj]
    assert torch.equal(out, ref)
    assert torch.equal(quadrant_swap(out), x)
    assert out.data_ptr() != x.data_ptr()


# ---------------------------------------------------------------- crop and flip


def test_random_crop_equals_crop_of_zero_padded_image():
    x = torch.rand(6, 3, 8, 8, generator=gen(20))
    p = 3
    out = random_crop(x, p, gen(21))
    offsets = torch.randint(0, 2 * p + 1, (6, 2), generator=gen(21))  # the documented draw
    assert len({tuple(o) for o in offsets.tolist()}) > 1
    for b in range(6):
        ox, oy = offsets[b].tolist()
        ref = F.pad(x[b], (p, p, p, p))[:, oy : oy + 8, ox : ox + 8]
        assert torch.equal(out[b], ref)
    assert torch.equal(crop_at(x, p, torch.full((6, 2), p)), x)
    assert random_crop(x, 0, gen(0)) is x


def test_random_hflip_flips_about_half_the_images():
    x = torch.rand(1000, 1, 5, 6, generator=gen(22))
    out = random_hflip(x, gen(23))
    flipped = (out == x.flip(-1)).flatten(1).all(dim=1)
    kept = (out == x).flatten(1).all(dim=1)
    assert (flipped ^ kept).all()
    assert torch.equal(flipped, torch.rand(1000, generator=gen(23)) < 0.5)
    assert 0.45 < flipped.float().mean().item() < 0.55


# ---------------------------------------------------------------- dtypes


RANDOM_FNS = {
    "translate": lambda x, g: translate(x, 0.3, g),
    "rotate": lambda x, g: rotate(x, 0.2, g),
    "noise": lambda x, g: gaussian_noise(x, 0.15, g),
    "edge_noise": lambda x, g: edge_noise(x, 0.15, 5, g),
    "faithful_edge_noise": lambda x, g: edge_noise(x, 0.15, 5, g, faithful=True),
    "quadrant_swap": lambda x, g: quadrant_swap(x),
    "crop": lambda x, g: random_crop(x, 4, g),
    "hflip": lambda x, g: random_hflip(x, g),
    "train_all": lambda x, g: TrainAugmenter(aug_cfg(translate=0.2, rotate=0.1, noise=0.1, edge_noise=0.1))(x, g),
}


@pytest.mark.parametrize("name", sorted(RANDOM_FNS))
def test_float32_and_bf16_agree(name):
    fn = RANDOM_FNS[name]
    x16 = torch.rand(12, 3, 28, 28, generator=gen(30)).to(torch.bfloat16)
    x32 = x16.float()
    y32 = fn(x32, gen(31))
    y16 = fn(x16, gen(31))
    assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
    assert y16.shape == x16.shape
    assert (y32 - x32).abs().max() > 0.01  # it did something
    torch.testing.assert_close(y16.float(), y32, atol=2e-2, rtol=0)


def test_integer_shift_exact_in_bf16():
    x = torch.rand(2, 1, 9, 9, generator=gen(32)).to(torch.bfloat16)
    out = affine_batch(x, None, torch.tensor([[2.0, -1.0], [-3.0, 3.0]]))
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[0], roll_edge(x[0], 2, -1)) and torch.equal(out[1], roll_edge(x[1], -3, 3))


# ---------------------------------------------------------------- TrainAugmenter


def test_train_augmenter_inactive_is_identity_without_copy():
    aug = TrainAugmenter(aug_cfg())
    x = torch.rand(4, 1, 28, 28)
    assert not aug.active
    assert aug(x, gen(0)) is x
    assert TrainAugmenter(aug_cfg(hflip=True)).active


def test_train_augmenter_combines_translate_and_rotate_in_one_resampling():
    x = torch.rand(16, 1, 28, 28, generator=gen(40))
    out = TrainAugmenter(aug_cfg(translate=0.1, rotate=0.2))(x, gen(41))
    g = gen(41)  # documented draws: shifts (B, 2), then angles (B,)
    shifts = sample_shifts(16, 28, 28, 0.1, g, "cpu")
    angles = sample_angles(16, 0.2 * 360, g, "cpu")
    assert torch.equal(out, affine_batch(x, angles, shifts))
    assert shifts.abs().max() <= 2.8 and angles.abs().max() <= 72
    two_pass = affine_batch(affine_batch(x, angles, None), None, shifts)
    assert not torch.allclose(out, two_pass)  # a second resampling would blur more


def test_train_augmenter_is_reproducible_and_noise_comes_last():
    cfg = aug_cfg(translate=0.2, noise=0.1, edge_noise=0.3)
    x = torch.rand(8, 1, 28, 28, generator=gen(42))
    aug = TrainAugmenter(cfg)
    a, b = aug(x, gen(43)), aug(x, gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, gen(44)))
    g = gen(43)
    ref = translate(x, 0.2, g)
    ref = gaussian_noise(ref, 0.1, g)
    ref = edge_noise(ref, 0.3, 5, g)
    assert torch.equal(a, ref)


# ---------------------------------------------------------------- EvalVariants


def test_eval_variants_keys_and_determinism():
    ev = EvalVariants(eval_cfg())
    x = torch.rand(32, 1, 28, 28, generator=gen(50))
    v1, v2 = ev(x, 3), ev(x, 3)
    assert list(v1) == ["clean", "translate", "rotate", "noise", "edge_noise", "quadrant_swap"]
    assert v1["clean"] is x
    for k in v1:
        assert torch.equal(v1[k], v2[k])
    other = ev(x, 4)
    for k in ("translate", "rotate", "noise", "edge_noise"):
        assert not torch.equal(v1[k], other[k])
    # hand-made expected: top-right and bottom-left 14x14 quadrants exchanged, the rest kept
    swapped = x.clone()
    swapped[..., :14, 14:] = x[..., 14:, :14]
    swapped[..., 14:, :14] = x[..., :14, 14:]
    assert torch.equal(v1["quadrant_swap"], swapped)
    assert not torch.equal(v1["quadrant_swap"], x)
    # a variant's images do not depend on which other variants are enabled
    only = EvalVariants(eval_cfg(variants=["translate"]))(x, 3)
    assert list(only) == ["clean", "translate"]
    assert torch.equal(only["translate"], v1["translate"])


def test_eval_variants_levels():
    ev = EvalVariants(eval_cfg())
    x = torch.zeros(512, 1, 40, 40)
    x[:, 0, 20, 20] = 1.0
    v = ev(x, 0)
    cx, cy = centroids(v["translate"])
    d = torch.cat([cx - 20, cy - 20])
    assert d.abs().max() <= 10 + 1e-4 and d.abs().max() > 9.5  # 25% of 40 px
    xr = torch.zeros(512, 1, 41, 41)
    xr[:, 0, 20, 32] = 1.0  # 12 px right of the centre (20, 20)
    cx, cy = centroids(ev(xr, 0)["rotate"])
    ang = torch.rad2deg(torch.atan2(-(cy - 20), cx - 20))
    assert ang.abs().max() < 46 and ang.abs().max() > 43
    flat = torch.full((64, 1, 28, 28), 0.5)
    vn = ev(flat, 1)
    assert (vn["noise"] - 0.5).std().item() == pytest.approx(0.15, rel=0.02)
    assert torch.equal(vn["edge_noise"][..., 5:23, 5:23], flat[..., 5:23, 5:23])


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "key,value",
    [
        ("translate", 1.0),
        ("rotate", -0.1),
        ("noise", float("nan")),
        ("edge_noise", 1.5),
        ("translate", "0.1"),
        ("edge_width", 0),
        ("crop_padding", -1),
        ("hflip", "yes"),
    ],
)
def test_bad_aug_levels_raise_config_error(key, value):
    cfg = aug_cfg(**{key: value})
    with pytest.raises(ConfigError) as err:
        validate_aug_levels(cfg)
    assert err.value.key == f"aug.{key}"
    assert f"aug.{key}=" in str(err.value)
    with pytest.raises(ConfigError):
        TrainAugmenter(cfg)


def test_level_099_is_allowed_and_edge_width_checked_against_image():
    validate_aug_levels(aug_cfg(translate=0.99, rotate=0.99, noise=0.99, edge_noise=0.99))
    with pytest.raises(ConfigError, match=r"aug\.edge_width=14"):
        validate_aug_levels(aug_cfg(edge_width=14), image_size=(28, 28))
    aug = TrainAugmenter(aug_cfg(edge_noise=0.1, edge_width=14))
    with pytest.raises(ConfigError, match=r"aug\.edge_width"):
        aug(torch.rand(2, 1, 28, 28), gen(0))


def test_unknown_eval_variant_names_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        EvalVariants(eval_cfg(variants=["clean", "blur"]))
    msg = str(err.value)
    assert "eval.variants" in msg and "'blur'" in msg and "quadrant_swap" in msg
    with pytest.raises(ConfigError, match=r"eval\.translate"):
        EvalVariants(eval_cfg(translate=1.2))
