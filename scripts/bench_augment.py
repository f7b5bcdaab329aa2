"""Throughput of the augmentations and of the training input path, against one FCN step.

Measures, at the paper's batch sizes (MNIST 1x28x28 at 256, CIFAR-10 3x32x32 at 128):
each augmentation alone, the evaluation variants of one validation batch, the full training
input path (gather a batch from a uint8 (N, C, H, W) tensor by an index batch, divide by
255, augment with translate, rotate, noise and edge noise all on) and, in the same run, one
training step (forward, cross-entropy, backward, Adam) of the paper's depth-3 FCN and CNN.
The target is an input path under 10% of an FCN step, so training is never input-bound.

Usage::

    python scripts/bench_augment.py [--repeats 100] [--threads 2] [--device cpu] > bench.json

The readable table goes to stderr, the JSON to stdout. Times are the best of ``--repeats``
calls (the median is reported beside it); percentages compare best times of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from weightshare.augment import (
    EvalVariants,
    TrainAugmenter,
    edge_noise,
    gaussian_noise,
    quadrant_swap,
    random_crop,
    random_hflip,
    rotate,
    translate,
)
from weightshare.augment.keyed_rng import SampleKeys, train_key
from weightshare.config.schema import AugConfig, EvalConfig

# Table A.2: (kernel, channels, stride) per layer, depth 3
GEOMETRY = {
    "mnist": ((3, 32, 2), (3, 64, 2), (3, 128, 1)),
    "cifar10": ((5, 64, 2), (5, 128, 2), (3, 256, 1)),
}
SETTINGS = {"mnist": (256, 1, 28), "cifar10": (128, 3, 32)}
LEVEL = 0.3


class UnfoldFreeConv2d(nn.Module):
    """Locally connected layer via unfold + einsum: the fallback when
    ``weightshare.layers.FreeConv2d`` is not importable (same arithmetic, one kernel per
    output position)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, size: int) -> None:
        super().__init__()
        self.k, self.stride = k, stride
        self.out = (size - k) // stride + 1
        L = self.out * self.out
        limit = (6.0 / (cin * k * k + cout * k * k)) ** 0.5
        self.weight = nn.Parameter(torch.empty(L, cout, cin * k * k).uniform_(-limit, limit))
        self.bias = nn.Parameter(torch.zeros(cout, self.out, self.out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.k, stride=self.stride)  # (B, cin*k*k, L)
        y = torch.einsum("bkl,lok->bol", cols, self.weight)
        return y.reshape(x.shape[0], -1, self.out, self.out) + self.bias


def free_layer_factory() -> tuple[str, Callable[[int, int, int, int, int], nn.Module]]:
    """``weightshare.layers.FreeConv2d`` when it exists, else :class:`UnfoldFreeConv2d`."""
    try:
        from weightshare.layers import FreeConv2d  # type: ignore[attr-defined]
    except ImportError:
        return "unfold+einsum fallback (weightshare.layers.FreeConv2d not importable)", UnfoldFreeConv2d

    def make(cin: int, cout: int, k: int, stride: int, size: int) -> nn.Module:
        return FreeConv2d(cin, cout, k, stride=stride, input_size=(size, size))

    return "weightshare.layers.FreeConv2d", make


def paper_net(data: str, channels: int, size: int, free: bool, make_free: Callable) -> nn.Module:
    """Depth-3 network of Table A.2 (valid padding, ReLU, Dense 1024, Dense 10)."""
    layers: list[nn.Module] = []
    cin, s = channels, size
    for k, cout, stride in GEOMETRY[data]:
        layers.append(make_free(cin, cout, k, stride, s) if free else nn.Conv2d(cin, cout, k, stride))
        layers.append(nn.ReLU())
        cin, s = cout, (s - k) // stride + 1
    layers += [nn.Flatten(), nn.Linear(cin * s * s, 1024), nn.ReLU(), nn.Linear(1024, 10)]
    return nn.Sequential(*layers)


def time_interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 2
) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per case, timing one call of every case per round.

    Round-robin, so that a burst of load from other processes hits every case alike
    instead of one case's whole sample. The best time estimates the cost on an idle
    machine (other processes only add time; on a shared 2-core machine a descheduled worker
    thread stalls a whole op); the median shows what the load of the moment added.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


def bench_dataset(data: str, repeats: int, device: torch.device, make_free: Callable) -> list[dict]:
    B, C, S = SETTINGS[data]
    N = 8192
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (N, C, S, S), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 10, (N,), device=device, generator=g)
    x = images[:B].float().div_(255)
    idx = torch.randperm(N, device=device, generator=g)[:B]

    # the config schema's nodes, with every augmentation on (the protocol's eval defaults)
    aug_all = TrainAugmenter(AugConfig(translate=LEVEL, rotate=LEVEL, noise=LEVEL, edge_noise=LEVEL))
    evals = EvalVariants(EvalConfig(seed=1))

    keys = SampleKeys(train_key(0, 0, 0), idx)  # what the data module passes (per-sample keyed draws)

    def input_path() -> torch.Tensor:
        return aug_all(images.index_select(0, idx).float().div_(255), keys)

    cases: dict[str, Callable[[], object]] = {
        f"translate {LEVEL}": lambda: translate(x, LEVEL, g),
        f"rotate {LEVEL}": lambda: rotate(x, LEVEL, g),
        f"noise {LEVEL}": lambda: gaussian_noise(x, LEVEL, g),
        f"edge_noise {LEVEL}": lambda: edge_noise(x, LEVEL, 5, g),
        f"edge_noise {LEVEL} faithful": lambda: edge_noise(x, LEVEL, 5, g, faithful=True),
        "quadrant_swap": lambda: quadrant_swap(x),
        "random_crop 4": lambda: random_crop(x, 4, g),
        "random_hflip": lambda: random_hflip(x, g),
        "train augment (4 on)": lambda: aug_all(x, keys),
        "train augment (4 on), torch.Generator draws": lambda: aug_all(x, g),
        "eval variants (6)": lambda: evals(x, idx),
        "gather + /255": lambda: images.index_select(0, idx).float().div_(255),
        "input path (gather, /255, 4 augs)": input_path,
    }
    timed = time_interleaved(cases, repeats)

    # the input path against the training steps, interleaved in the same rounds
    xb, yb = input_path(), labels[idx]
    steps: dict[str, Callable[[], object]] = {"input path (same rounds as steps)": input_path}
    for kind in ("fcn", "cnn"):
        torch.manual_seed(0)
        net = paper_net(data, C, S, kind == "fcn", make_free).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

        def step(net: nn.Module = net, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()

        steps[f"{kind.upper()} train step"] = step
    timed.update(time_interleaved(steps, max(5, repeats // 10)))
    rows = [
        {"data": data, "batch": B, "what": name, "ms": best * 1e3, "median_ms": med * 1e3, "images_per_s": B / best}
        for name, (best, med) in timed.items()
    ]
    by = {r["what"]: r["ms"] for r in rows}
    fcn, cnn = by["FCN train step"], by["CNN train step"]
    for r in rows:
        r["pct_of_fcn_step"] = 100.0 * r["ms"] / fcn
        r["pct_of_cnn_step"] = 100.0 * r["ms"] / cnn
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100, help="rounds (steps: repeats/10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", nargs="+", default=["mnist", "cifar10"], choices=sorted(SETTINGS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    free_impl, make_free = free_layer_factory()
    rows = []
    for data in args.data:
        rows += bench_dataset(data, args.repeats, device, make_free)

    head = ("data", "batch", "what", "best ms", "median ms", "images/s", "% FCN step", "% CNN step")
    print("{:8} {:>5}  {:36} {:>9} {:>9} {:>10} {:>10} {:>10}".format(*head), file=sys.stderr)
    for r in rows:
        print(
            f"{r['data']:8} {r['batch']:5d}  {r['what']:36} {r['ms']:9.3f} {r['median_ms']:9.3f} "
            f"{r['images_per_s']:10.0f} {r['pct_of_fcn_step']:10.2f} {r['pct_of_cnn_step']:10.2f}",
            file=sys.stderr,
        )
    print(f"FCN layer: {free_impl}", file=sys.stderr)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "fcn_layer": free_impl,
        "repeats": args.repeats,
        "level": LEVEL,
    }
    json.dump({"meta": meta, "rows": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
