#!/usr/bin/env python
"""Member-images/s of packed training (K members as one stacked network) against sequential runs.

For the paper's MNIST (batch 256) and CIFAR-10 (batch 128) networks, CNN and FCN, fp32 and
bf16 autocast, on the CPU and on CUDA when present, this times the training step of

* ``sequential``: one member, exactly as a single run steps (``PaperNet`` + cross-entropy +
  backward + fused ``torch.optim.Adam``); K members trained one after another have the same
  member-images/s, so one member is measured;
* ``pack K``: K members as :class:`~weightshare.packed.stacked_net.StackedPaperNet` with
  :class:`~weightshare.packed.adam.StackedAdam` (one forward, one backward, one optimizer step
  for all), for every K of ``--ks``;

and reports member-images/s (K x batch / step time), the ratio to sequential, and the peak
memory of a step (CUDA: ``max_memory_allocated``; CPU: the bytes of parameters, gradients
and Adam state, which is what grows with K, since the CPU allocator has no per-step peak).
On CUDA it also measures the bf16 matmul rate (TFLOP/s of a 8192^2 product), beside which
the pack's throughput is read. The data pipeline (gather, augmentation) is not timed: it is
per sample and the same in both.

Sequential and every K are timed in interleaved rounds (``--rounds`` x ``--steps``), median step
time (the machine may be shared); ratios come from one run. ``--budget-s`` caps the rounds of
a configuration. Prints a table and JSON (stdout or ``--json``).

    python scripts/bench_pack.py --threads 2 --nets mnist --models cnn fcn --dtypes fp32 --ks 1 2 4 8
    python scripts/bench_pack.py --device cuda                  # the whole grid on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from weightshare.packed.adam import StackedAdam
from weightshare.packed.stacked_net import StackedPaperNet

from weightshare.data.dataset import DataInfo
from weightshare.models.paper_nets import PaperNet

NETS = {"mnist": (DataInfo("mnist", 1, 28, 28, 10), 256), "cifar10": (DataInfo("cifar10", 3, 32, 32, 10), 128)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, dtype: str) -> Any:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def single_step_fn(info: DataInfo, kind: str, batch: int, device: torch.device, dtype: str) -> Callable[[], None]:
    torch.manual_seed(0)
    net = PaperNet(info, kind).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=True)
    x = torch.rand(batch, info.in_channels, info.height, info.width, device=device)
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()

    return step


def pack_step_fn(
    info: DataInfo, kind: str, batch: int, device: torch.device, dtype: str, k: int
) -> tuple[Callable[[], None], int]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(PaperNet(info, kind))
    stacked = StackedPaperNet(nets, device, torch.float32)
    opt = StackedAdam(stacked.parameters(), torch.full((k,), 1e-3, dtype=torch.float64), eps=1e-7)
    x = torch.rand(k * batch, info.in_channels, info.height, info.width, device=device)
    y = torch.randint(0, info.num_classes, (k * batch,), device=device)

    def step() -> None:
        opt.zero_grad()
        with _autocast(device, dtype):
            logits = stacked.forward(x)
            ce = F.cross_entropy(logits.float().reshape(k * batch, -1), y, reduction="none")
        ce.view(k, batch).mean(1).sum().backward()
        opt.step()

    state_bytes = sum(p.numel() * p.element_size() for p in stacked.parameters()) * 4  # param, grad, m, v
    return step, state_bytes


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int, budget_s: float) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < steps and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def matmul_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 10
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - t0) / 1e12


def _bench_config(
    args: argparse.Namespace, device: torch.device, dev_name: str, net_name: str, kind: str, dtype: str
) -> list[dict[str, Any]]:
    """Sequential and every pack size of one (net, model, dtype), timed in interleaved rounds."""
    info, batch = NETS[net_name]
    fns: dict[int, Callable[[], None]] = {0: single_step_fn(info, kind, batch, device, dtype)}
    mem: dict[int, float] = {}
    out: list[dict[str, Any]] = []
    base = {"device": dev_name, "net": net_name, "model": kind, "dtype": dtype}
    for k in args.ks:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            fns[k], state_bytes = pack_step_fn(info, kind, batch, device, dtype, k)
            time_steps(fns[k], device, args.warmup, 1, args.budget_s)
        except torch.OutOfMemoryError:
            fns.pop(k, None)
            out.append({**base, "k": k, "error": "out of memory"})
            break
        mem[k] = torch.cuda.max_memory_allocated() if device.type == "cuda" else state_bytes
    times: dict[int, list[float]] = {k: [] for k in fns}
    t_end = time.perf_counter() + args.budget_s
    for _ in range(args.rounds):
        for k, fn in fns.items():
            times[k].extend(time_steps(fn, device, 0, args.steps, args.budget_s))
        if time.perf_counter() > t_end:
            break
    seq = statistics.median(times.pop(0))
    for k, ts in times.items():
        t = statistics.median(ts)
        rate, seq_rate = k * batch / t, batch / seq
        row = {
            **base,
            "k": k,
            "batch": batch,
            "sequential_step_s": seq,
            "sequential_member_img_s": seq_rate,
            "pack_step_s": t,
            "pack_member_img_s": rate,
            "ratio": rate / seq_rate,
            "peak_mem_mb": mem[k] / 2**20,
            "peak_mem_kind": "max_memory_allocated" if device.type == "cuda" else "state_bytes",
            "timed_steps": len(ts),
        }
        out.append(row)
        print(_row(row), file=sys.stderr, flush=True)
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    results: list[dict[str, Any]] = []
    rates: dict[str, float | None] = {}
    for dev_name in devices:
        device = torch.device(dev_name)
        rates[dev_name] = matmul_tflops(device)
        for net_name in args.nets:
            for kind in args.models:
                for dtype in args.dtypes:
                    results.extend(_bench_config(args, device, dev_name, net_name, kind, dtype))
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": args.threads,
        "bf16_matmul_tflops": rates,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "results": results,
    }


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['device']:5s} {r['net']:8s} {r['model']:4s} {r['dtype']:5s} K={r['k']:<3d} {r['error']}"
    return (
        f"{r['device']:5s} {r['net']:8s} {r['model']:4s} {r['dtype']:5s} K={r['k']:<3d} "
        f"seq {r['sequential_member_img_s']:9.0f}  pack {r['pack_member_img_s']:9.0f} member-img/s  "
        f"x{r['ratio']:5.2f}  mem {r['peak_mem_mb']:8.1f} MB"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--models", nargs="+", default=["cnn", "fcn"], choices=["cnn", "fcn"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps per configuration per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (sequential, then every K)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=60.0, help="stop the rounds of a configuration after this long")
    p.add_argument("--json", default=None, help="write the JSON here instead of stdout")
    args = p.parse_args(argv)
    if any(k < 1 for k in args.ks):
        p.error("--ks: every K must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = bench(args)
    print("\n".join(_row(r) for r in out["results"]))
    text = json.dumps(out, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
