#!/usr/bin/env python
"""Throughput of the paper's CNN and FCN networks, per FreeConv2d implementation.

For the paper's MNIST (batch 256) and CIFAR-10 (batch 128) networks (Table A.2: conv layers,
Flatten, Dense(1024), Dense(10), ReLU, valid padding) this measures, for the CNN and for the
FCN with every ``FreeConv2d`` implementation and for the low-rank locally connected network
(``LowRankConv2d``, ``--ranks``, default R = 1, 2, 4, 8), in fp32 and under bf16 autocast:

* training-step throughput (zero_grad + forward + cross-entropy + backward + Adam step), img/s;
* forward throughput (``torch.no_grad``), img/s;
* memory: the activations autograd saves for the backward (exact, via
  ``saved_tensors_hooks``), and the peak of one training step (CUDA: ``max_memory_allocated``
  above the memory held before the step; CPU: growth of the peak RSS (``VmHWM``, reset just
  before the step) over the RSS before it, during one full-batch step in a fresh subprocess
  whose parameters, gradients and Adam state already exist; allocator caching makes this
  one approximate);
* the machine's measured matmul GFLOP/s and the throughput ceiling it implies (training
  FLOPs per image / matmul rate).

The machine is noisy (shared host), so every configuration of one (net, dtype) is measured
in interleaved rounds and the median step time is reported; ratios are taken within one run.
Prints a table and JSON (stdout, or ``--json PATH``).

    python scripts/bench_layers.py --threads 2              # everything (several minutes)
    python scripts/bench_layers.py --nets mnist --dtypes fp32 --rounds 5 --no-memory   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weightshare.layers import FreeConv2d
from weightshare.layers.free_conv import DEFAULT_IMPL, IMPL_NAMES
from weightshare.layers.lowrank_conv import LowRankConv2d

FCN_IMPLS = [name for name in IMPL_NAMES if name != "auto"]


@dataclass(frozen=True)
class NetSpec:
    """One of the paper's networks: input shape, conv layers (kernel, filters, stride), batch."""

    name: str
    channels: int
    size: int
    layers: tuple[tuple[int, int, int], ...]
    batch: int


NETS = {
    "mnist": NetSpec("mnist", 1, 28, ((3, 32, 2), (3, 64, 2), (3, 128, 1)), 256),
    "cifar": NetSpec("cifar", 3, 32, ((5, 64, 2), (5, 128, 2), (3, 256, 1)), 128),
}


def build_net(spec: NetSpec, kind: str, depth: int = 3, hidden: int = 1024, classes: int = 10) -> nn.Sequential:
    """The Table A.2 network; ``kind`` is ``cnn``, ``fcn:<impl>`` or ``lowrank:<R>[:<combining>]``."""
    layers: list[nn.Module] = []
    c, s = spec.channels, spec.size
    for k, filters, stride in spec.layers[:depth]:
        if kind == "cnn":
            layers.append(nn.Conv2d(c, filters, k, stride))
        elif kind.startswith("lowrank:"):
            _, rank, *combining = kind.split(":")
            layers.append(
                LowRankConv2d(
                    c, filters, k, stride, input_size=(s, s), rank=int(rank), combining=(combining or ["full"])[0]
                )
            )
        else:
            layers.append(FreeConv2d(c, filters, k, stride, input_size=(s, s), impl=kind.split(":", 1)[1]))
        layers.append(nn.ReLU())
        c, s = filters, (s - k) // stride + 1
    layers += [nn.Flatten(), nn.Linear(c * s * s, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


def train_flops_per_image(spec: NetSpec, depth: int = 3, hidden: int = 1024, classes: int = 10) -> float:
    """FLOPs of one training step per image: forward, weight grads, input grads (none for layer 1).

    Identical for the CNN and the FCN (an FCN layer does the conv's multiply-adds).
    """
    macs: list[float] = []
    c, s = spec.channels, spec.size
    for k, filters, stride in spec.layers[:depth]:
        s = (s - k) // stride + 1
        macs.append(s * s * filters * c * k * k)
        c = filters
    macs += [c * s * s * hidden, hidden * classes]
    return 2.0 * (2 * sum(macs) + sum(macs[1:]))


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 1024, reps: int = 30) -> float:
    """Median GFLOP/s of an n x n matmul (the ceiling a layer of big products could reach)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = []
    for _ in range(reps + 3):
        t = _now(device)
        a @ b
        times.append(_now(device) - t)
    return 2 * n**3 / statistics.median(times[3:]) / 1e9


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_optimizer(model: nn.Module, name: str) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {"lr": 1e-3}
    if name == "adam_fused":
        kwargs["fused"] = True
    elif name == "adam_foreach":
        kwargs["foreach"] = True
    return torch.optim.Adam(model.parameters(), **kwargs)


class Runner:
    """A model with its optimiser and a fixed batch; ``train_step`` / ``forward`` run one step."""

    def __init__(self, spec: NetSpec, kind: str, dtype: str, device: torch.device, opt: str, depth: int) -> None:
        torch.manual_seed(0)
        self.model = build_net(spec, kind, depth).to(device)
        self.opt = make_optimizer(self.model, opt)
        self.x = torch.rand(spec.batch, spec.channels, spec.size, spec.size, device=device)
        self.y = torch.randint(0, 10, (spec.batch,), device=device)
        self.device = device
        self.autocast = dtype == "bf16"

    def _loss(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return F.cross_entropy(self.model(self.x), self.y)

    def train_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._loss().backward()
        self.opt.step()

    def forward(self) -> None:
        with torch.no_grad():
            self._loss()


def time_interleaved(
    runners: dict[str, Runner], what: str, rounds: int, steps: int, warmup: int
) -> dict[str, list[float]]:
    """Per-step seconds of every runner, measured round-robin so noise hits all alike."""
    out: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        for _ in range(warmup):
            getattr(r, what)()
    for _ in range(rounds):
        for key, r in runners.items():
            fn: Callable[[], None] = getattr(r, what)
            for _ in range(steps):
                t = _now(r.device)
                fn()
                out[key].append(_now(r.device) - t)
    return out


def saved_activation_bytes(runner: Runner) -> int:
    """Bytes of the distinct tensors autograd keeps from the forward for the backward.

    Exact and allocator-independent (``saved_tensors_hooks`` see every saved tensor, custom
    Functions' included): the activation memory an implementation holds at the step's peak.
    Parameters (saved by matmuls for the input gradient) are not counted.
    """
    params = {p.untyped_storage().data_ptr() for p in runner.model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = runner._loss()
    del loss
    return sum(storages.values())


def memory_probe(net: str, kind: str, dtype: str, device: str, opt: str, depth: int) -> dict[str, Any]:
    """Peak memory of one training step (run in a fresh process on CPU, see module docstring)."""
    spec = NETS[net]
    dev = torch.device(device)
    runner = Runner(spec, kind, dtype, dev, opt, depth)
    small = Runner.__new__(Runner)
    small.__dict__.update(runner.__dict__)
    small.x, small.y = runner.x[:1], runner.y[:1]
    small.train_step()  # parameters, gradients and Adam state now exist
    saved = saved_activation_bytes(runner)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        runner.train_step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - before
        method = "cuda.max_memory_allocated above memory_allocated before the step"
    else:
        before = _rss_bytes("VmRSS")
        _reset_peak_rss()
        runner.train_step()
        peak = _rss_bytes("VmHWM") - before
        method = "VmHWM growth over VmRSS before the step (/proc/self/status, peak reset via clear_refs)"
    return {
        "step_peak_mib": peak / 2**20,
        "saved_activations_mib": saved / 2**20,
        "before_step_mib": before / 2**20,
        "method": method,
    }


def _rss_bytes(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``.

    ``ru_maxrss`` would do, but Linux keeps it across ``exec`` (a probe subprocess would start
    at the parent's peak), while ``VmHWM`` belongs to the new address space and can be reset.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def run_memory_probe_subprocess(net: str, kind: str, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--_probe",
        f"{net},{kind},{dtype}",
        "--device",
        args.device,
        "--optimizer",
        args.optimizer,
        "--threads",
        str(args.threads),
        "--depth",
        str(args.depth),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_layers.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "optimizer": args.optimizer,
        "depth": args.depth,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "default_impl": DEFAULT_IMPL,
        "statistic": "median over rounds*steps interleaved steps",
        "matmul_gflops": {},
        "nets": {},
    }
    for dtype in args.dtypes:
        tdt = torch.bfloat16 if dtype == "bf16" else torch.float32
        result["matmul_gflops"][dtype] = matmul_gflops(tdt, device)
    for net in args.nets:
        spec = NETS[net]
        flops = train_flops_per_image(spec, args.depth)
        net_res: dict[str, Any] = {"batch": spec.batch, "train_gflop_per_image": flops / 1e9}
        for dtype in args.dtypes:
            kinds = ["cnn"] + [f"fcn:{impl}" for impl in args.impls]
            kinds += [f"lowrank:{r}" for r in args.ranks] + [f"lowrank:{r}:factorized" for r in args.factorized_ranks]
            runners = {k: Runner(spec, k, dtype, device, args.optimizer, args.depth) for k in kinds}
            train = time_interleaved(runners, "train_step", args.rounds, args.steps, args.warmup)
            fwd = time_interleaved(runners, "forward", args.rounds, args.steps, args.warmup)
            del runners
            ceiling = result["matmul_gflops"][dtype] * 1e9 / flops
            rows: dict[str, Any] = {}
            cnn_step = statistics.median(train["cnn"])
            for k in kinds:
                step = statistics.median(train[k])
                f_step = statistics.median(fwd[k])
                rows[k] = {
                    "train_step_ms": step * 1e3,
                    "train_img_s": spec.batch / step,
                    "train_step_ms_min": min(train[k]) * 1e3,
                    "forward_img_s": spec.batch / f_step,
                    "step_vs_cnn": step / cnn_step,
                    "train_gflops": flops * spec.batch / step / 1e9,
                }
            base = rows.get("fcn:unfold")
            for k in kinds:
                if base is not None:
                    rows[k]["train_speedup_vs_unfold"] = rows[k]["train_img_s"] / base["train_img_s"]
                if args.memory:
                    rows[k]["memory"] = run_memory_probe_subprocess(net, k, dtype, args)
            net_res[dtype] = {"ceiling_img_s": ceiling, "rows": rows}
        result["nets"][net] = net_res
    return result


def print_table(result: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, plain text is the fallback
        Console = Table = None  # type: ignore[assignment,misc]
    header = [
        "net",
        "dtype",
        "model",
        "train img/s",
        "step ms",
        "x CNN",
        "x unfold",
        "fwd img/s",
        "peak MiB",
        "saved MiB",
    ]
    lines = []
    for net, nres in result["nets"].items():
        for dtype in [d for d in ("fp32", "bf16") if d in nres]:
            for k, row in nres[dtype]["rows"].items():
                mem = row.get("memory", {}).get("step_peak_mib")
                saved = row.get("memory", {}).get("saved_activations_mib")
                lines.append(
                    [
                        net,
                        dtype,
                        k,
                        f"{row['train_img_s']:.0f}",
                        f"{row['train_step_ms']:.1f}",
                        f"{row['step_vs_cnn']:.2f}",
                        f"{row.get('train_speedup_vs_unfold', float('nan')):.2f}",
                        f"{row['forward_img_s']:.0f}",
                        "-" if mem is None else f"{mem:.0f}",
                        "-" if saved is None else f"{saved:.1f}",
                    ]
                )
            lines.append([net, dtype, "ceiling", f"{nres[dtype]['ceiling_img_s']:.0f}", *[""] * 6])
    title = f"threads={result['threads']} optimizer={result['optimizer']} matmul GFLOP/s " + ", ".join(
        f"{k}={v:.0f}" for k, v in result["matmul_gflops"].items()
    )
    if Table is not None:
        table = Table(title=title)
        for h in header:
            table.add_column(h, no_wrap=True)
        for line in lines:
            table.add_row(*line)
        Console(stderr=True, width=max(120, Console(stderr=True).width)).print(table)
    else:
        print(title, file=sys.stderr)
        for line in [header, *lines]:
            print("  ".join(f"{c:>12}" for c in line), file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--impls", nargs="+", default=FCN_IMPLS, choices=FCN_IMPLS)
    p.add_argument("--ranks", nargs="*", type=int, default=[1, 2, 4, 8], help="low-rank layers (full combining)")
    p.add_argument("--factorized-ranks", nargs="*", type=int, default=[], help="low-rank, factorized combining")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--depth", type=int, default=3, choices=[2, 3])
    p.add_argument("--optimizer", default="adam", choices=["adam", "adam_fused", "adam_foreach"])
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=2, help="steps per configuration per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory probes")
    p.add_argument("--json", default=None, help="write the JSON here instead of stdout")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._probe:
        net, kind, dtype = args._probe.split(",")
        print(json.dumps(memory_probe(net, kind, dtype, args.device, args.optimizer, args.depth)))
        return
    result = bench(args)
    print_table(result)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
