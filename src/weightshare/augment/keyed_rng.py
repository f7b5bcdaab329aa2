"""Counter-based random numbers: every draw a pure function of (key, sample index, stream, counter).

Why not ``torch.Generator``: a generator's draws depend on how many numbers were drawn
before, i.e. on how samples are batched. A packed sweep trains K members in one batch of
K x B samples, and each member must see exactly the augmentation its single run would
(the packed trainer's exactness guarantee), without a Python loop over members. With a
counter-based generator the draws of sample ``i`` of member ``k`` in epoch ``e`` depend only
on ``(seed_k, fold_k, e, i, stream)``, however the samples are batched, packed, or spread
over devices. The evaluation perturbations use the same scheme keyed by the sample index,
so they no longer depend on the evaluation batch size.

The hash is SplitMix64's finaliser (Steele, Lea & Flood 2014; the seeding function of
``java.util.SplittableRandom`` and xoshiro), computed with torch int64 tensor ops (which
wrap on overflow like unsigned arithmetic modulo 2**64; logical right shifts are emulated
with a mask), so it runs batched on any device. Python's :func:`mix64_int` is the same
function on ints, used for per-member keys and as the tests' reference. Uniforms take the
top 24 (float32) or 53 (float64) bits; normals use the Box-Muller transform.
"""

from __future__ import annotations

import hashlib
import math

import torch

__all__ = ["SampleKeys", "eval_key", "mix64", "mix64_int", "train_key"]

_M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
#: stream numbers of the training draws (one per kind of draw, so enabling one augmentation
#: never changes another's numbers)
STREAMS = {"shift": 1, "angle": 2, "crop": 3, "flip": 4, "noise": 5, "edge_noise": 6}


def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v >= 1 << 63 else v


def mix64_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (mod 2**64); returns an unsigned 64-bit int."""
    z &= _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64_(z: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` in place on a tensor the caller owns (one scratch tensor, no other allocation)."""
    t = torch.empty_like(z)
    for shift, mult in ((30, _C1), (27, _C2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=t)
        t &= (1 << (64 - shift)) - 1  # logical shift: clear the sign-extended bits
        z ^= t
        if mult is not None:
            z *= _signed(mult)
    return z


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on an int64 tensor (bit pattern of the unsigned result)."""
    return _mix64_(z.clone())


def train_key(seed: int, fold: int, epoch: int) -> int:
    """The key of one member's training draws in one epoch: a pure function of (seed, fold, epoch)."""
    z = mix64_int(int(seed) * _GOLDEN + 0x5EED)
    z = mix64_int(z ^ (int(fold) * _GOLDEN + 0xF01D))
    return _signed(mix64_int(z ^ (int(epoch) * _GOLDEN + 0xE90C)))


def eval_key(seed: int, variant: str) -> int:
    """The key of one evaluation variant's perturbations (``eval.seed``, variant name)."""
    digest = hashlib.sha256(f"{seed}/{variant}".encode()).digest()
    return _signed(int.from_bytes(digest[:8], "little"))


class SampleKeys:
    """Per-sample keys of a batch; draws per sample are independent of the batch around it.

    ``key``: an int (one key for the batch) or an int64 tensor (N,) (one per sample, e.g. the
    members of a pack); ``index``: int64 (N,) dataset indices of the samples.
    """

    def __init__(self, key: int | torch.Tensor, index: torch.Tensor) -> None:
        index = index.to(torch.int64)
        if isinstance(key, torch.Tensor):
            key = key.to(device=index.device, dtype=torch.int64)
            if key.shape != index.shape:
                raise ValueError(f"per-sample keys {tuple(key.shape)} must match the index {tuple(index.shape)}")
        self.keys = mix64(mix64(index * _signed(_GOLDEN) + 0x1D) ^ key)
        self.device = index.device

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def bits(self, stream: int, n: int) -> torch.Tensor:
        """(N, n) int64 hashes of counters ``0..n-1`` of ``stream`` for every sample."""
        s = _signed(mix64_int(int(stream) * _GOLDEN + 0x57))
        ctr = torch.arange(n, device=self.device, dtype=torch.int64) * _signed(_GOLDEN)
        return _mix64_((self.keys.unsqueeze(1) ^ s) + ctr.unsqueeze(0))

    def uniform(self, stream: int, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, n) uniforms in [0, 1).

        float64: the top 53 bits of hash ``j`` give value ``j``. Otherwise (float32) each hash
        gives two values of 24 bits, bits 40-63 for value ``j`` and bits 8-31 for value
        ``j + ceil(n/2)``: half the hashing, which dominates the cost.
        """
        if dtype == torch.float64:
            return _srl(self.bits(stream, n), 11).to(torch.float64) * (2.0**-53)
        m = (n + 1) // 2
        b = self.bits(stream, m)
        hi = _srl(b, 40)
        lo = _srl(b, 8).bitwise_and_(0xFFFFFF)
        u = torch.cat((hi, lo), dim=1)[:, :n].to(torch.float32).mul_(2.0**-24)
        return u.to(dtype)

    def normal(self, stream: int, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, n) standard normals (Box-Muller on pairs of uniforms of ``stream``)."""
        cdt = torch.float64 if dtype == torch.float64 else torch.float32
        m = (n + 1) // 2
        u = self.uniform(stream, 2 * m, cdt)
        r = torch.sqrt(-2.0 * torch.log1p(-u[:, :m]))  # 1 - u in (0, 1]: log is finite
        theta = (2.0 * math.pi) * u[:, m:]
        z = torch.cat((r * torch.cos(theta), r * torch.sin(theta)), dim=1)
        return z[:, :n].to(dtype)
