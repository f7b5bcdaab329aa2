"""Geometry of a free (locally connected) convolution: sizes, padding, output positions.

Kept apart from the layer so the functional form, the implementations and the layer all
resolve ``padding='same'`` and the output size the same way ``nn.Conv2d`` does.

Bad arguments are misuse of a Python API, not a config value: a ``TypeError`` for a wrong
type and a ``ValueError`` for a wrong value, each one line naming the argument and what is
allowed (``ConfigError`` is kept for config keys such as ``model.impl``).
"""

from __future__ import annotations

from dataclasses import dataclass

IntPair = int | tuple[int, int]
Padding = str | int | tuple[int, int]


def bad_argument(name: str, value: object, allowed: str, *, wrong_type: bool = False) -> ValueError | TypeError:
    """The one-line error of a bad argument: ``TypeError`` if its type is wrong, else ``ValueError``."""
    cls = TypeError if wrong_type else ValueError
    return cls(f"{name}={value!r} is not allowed; expected {allowed}")


def pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; a 2-sequence of ints stays; a TypeError or ValueError otherwise."""
    allowed = f"an int >= {minimum} or a pair of them"
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value, value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise bad_argument(name, value, allowed, wrong_type=True)
    if min(out) < minimum:
        raise bad_argument(name, value, allowed)
    return out


@dataclass(frozen=True)
class FreeConvGeometry:
    """Every size a free convolution needs, resolved once.

    ``pad`` is ``(top, bottom, left, right)``: ``'same'`` may pad one more on the bottom/right
    when the total is odd, exactly like ``F.conv2d(padding='same')``.
    """

    in_channels: int
    out_channels: int
    in_h: int
    in_w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad: tuple[int, int, int, int]
    out_h: int
    out_w: int

    @property
    def positions(self) -> int:
        """Number of output positions (each has its own kernel)."""
        return self.out_h * self.out_w

    @property
    def fan(self) -> int:
        """Inputs of one output unit: ``kh * kw * in_channels``."""
        return self.kh * self.kw * self.in_channels

    @property
    def has_padding(self) -> bool:
        return any(self.pad)


def resolve_padding(
    padding: Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Turn ``'valid' | 'same' | int | (ph, pw)`` into ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise bad_argument("padding", padding, "'same' only with stride 1 (as nn.Conv2d); use an int")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise bad_argument("padding", padding, "'valid', 'same', an int >= 0 or a pair of them")
    ph, pw = pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def make_geometry(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    stride: IntPair,
    padding: Padding,
    dilation: IntPair,
    input_size: IntPair,
) -> FreeConvGeometry:
    """Validate the conv-style arguments and compute the output positions."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_argument(
                name, value, "an int >= 1", wrong_type=isinstance(value, bool) or not isinstance(value, int)
            )
    kernel = pair(kernel_size, "kernel_size", 1)
    stride_ = pair(stride, "stride", 1)
    dil = pair(dilation, "dilation", 1)
    in_h, in_w = pair(input_size, "input_size", 1)
    pad = resolve_padding(padding, kernel, stride_, dil)
    out_h = (in_h + pad[0] + pad[1] - dil[0] * (kernel[0] - 1) - 1) // stride_[0] + 1
    out_w = (in_w + pad[2] + pad[3] - dil[1] * (kernel[1] - 1) - 1) // stride_[1] + 1
    if out_h < 1 or out_w < 1:
        raise bad_argument(
            "input_size",
            (in_h, in_w),
            f"at least the dilated kernel {dil[0] * (kernel[0] - 1) + 1}x{dil[1] * (kernel[1] - 1) + 1}"
            f" after padding {pad}",
        )
    return FreeConvGeometry(
        in_channels=in_channels,
        out_channels=out_channels,
        in_h=in_h,
        in_w=in_w,
        kh=kernel[0],
        kw=kernel[1],
        sh=stride_[0],
        sw=stride_[1],
        dh=dil[0],
        dw=dil[1],
        pad=pad,
        out_h=out_h,
        out_w=out_w,
    )
