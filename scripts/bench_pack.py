#!/usr/bin/env python
"""Member-images/s of a pack (K networks as one) against sequential single runs and the old engine.

For the paper's MNIST (batch 256) and CIFAR-10 (batch 128) networks, CNN and FCN, fp32 and
bf16 autocast, on the CPU and on CUDA when present, this times one training step of

* ``sequential``: one member exactly as a single run steps (``PaperNet`` + cross-entropy +
  backward + fused ``torch.optim.Adam``); K members run one after another have the same
  member-images/s, so one member is measured;
* ``pack``: K members as the pack trains them (:class:`weightshare.pack_module.PackModule`:
  the members' parameters stacked, one ``torch.func.vmap`` forward of the single network's
  code, one backward, one fused Adam step with a parameter group per member);
* ``old`` (with ``--old-src``): the stacked engine this replaced (``StackedPaperNet`` +
  ``StackedAdam`` of commit a216e8d), run from a git worktree of that commit in a child
  process, which answers timing requests so that its rounds interleave with the others;

for every K of ``--ks`` and every thread count of ``--threads``. It reports member-images/s
(K x batch / step time), the ratios to sequential and to the old engine, and the peak memory
of a step (CUDA: ``max_memory_allocated``; CPU: the bytes of parameters, gradients and Adam
state). All engines of one configuration are timed in interleaved rounds (``--rounds`` x
``--steps``), median step time; ``uptime`` is recorded before and after (the load average
says whether the machine was quiet). ``--jax`` adds the anchor: the free convolution of the
MNIST network's first layer, forward and backward, in JAX (``flax.linen.ConvLocal``) beside
``FreeConv2d``, if JAX imports. Prints a table and JSON (stdout or ``--json``).

    python scripts/bench_pack.py --device cpu --threads 1 2 --nets mnist --models cnn fcn \\
        --dtypes fp32 --ks 1 8 --old-src /work/wt/old/src --json bench_pack.json
    python scripts/bench_pack.py --device cuda --jax      # the GPU grid, K = 1..32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NETS = {"mnist": ((1, 28, 28, 10), 256), "cifar10": ((3, 32, 32, 10), 128)}
Step = Callable[[], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, dtype: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def _info(net: str) -> Any:
    from weightshare.data.dataset import DataInfo

    c, h, w, n = NETS[net][0]
    return DataInfo(net, c, h, w, n)


def _batch(net: str, k: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    (c, h, w, n), b = NETS[net]
    lead = (b,) if k is None else (k, b)
    return torch.rand(*lead, c, h, w, device=device), torch.randint(0, n, lead, device=device)


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, eps=1e-7, fused=True)


def _state_bytes(params: Any) -> int:
    return sum(p.numel() * p.element_size() for p in params) * 4  # param, grad, m, v


def sequential_step(net: str, kind: str, device: torch.device, dtype: str) -> tuple[Step, int]:
    from weightshare.models.paper_nets import PaperNet

    torch.manual_seed(0)
    model = PaperNet(_info(net), kind).to(device)
    opt = _adam(model.parameters())
    x, y = _batch(net, None, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    return step, _state_bytes(model.parameters())


def pack_step(net: str, kind: str, device: torch.device, dtype: str, k: int) -> tuple[Step, int]:
    from weightshare.models.paper_nets import PaperNet
    from weightshare.module import WeightShareModule
    from weightshare.pack_module import PackModule

    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = PaperNet(_info(net), kind)
        members.append(WeightShareModule(model, _adam, lambda o: None, num_classes=10, variants=[]))
    pack = PackModule(members).to(device).train()
    opt = pack.configure_optimizers()
    x, y = _batch(net, k, device)
    ids = list(range(k))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            logits = pack.forward_members(x, ids).float()
        sum(F.cross_entropy(logits[i], y[i]) for i in ids).backward()
        opt.step()

    return step, _state_bytes(pack.parameters())


def old_step(net: str, kind: str, device: torch.device, dtype: str, k: int) -> tuple[Step, int]:
    """The old stacked engine (imported from ``--old-src`` in the child process that runs this)."""
    from weightshare.packed.adam import StackedAdam  # type: ignore[import-not-found]
    from weightshare.packed.stacked_net import StackedPaperNet  # type: ignore[import-not-found]

    from weightshare.models.paper_nets import PaperNet

    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(PaperNet(_info(net), kind))
    stacked = StackedPaperNet(nets, device, torch.float32)
    opt = StackedAdam(stacked.parameters(), torch.full((k,), 1e-3, dtype=torch.float64), eps=1e-7)
    x, y = _batch(net, k, device)
    x, y = x.flatten(0, 1), y.flatten()
    b = NETS[net][1]

    def step() -> None:
        opt.zero_grad()
        with _autocast(device, dtype):
            ce = F.cross_entropy(stacked.forward(x).float().reshape(k * b, -1), y, reduction="none")
        ce.view(k, b).mean(1).sum().backward()
        opt.step()

    return step, _state_bytes(stacked.parameters())


def time_steps(step: Step, device: torch.device, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


class OldEngine:
    """The old engine in a child process (``--old-src`` first on its path); one request per call."""

    def __init__(self, src: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--old-worker"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.where = self.ask({"op": "where"})["file"]
        if not self.where.startswith(str(Path(src).resolve())):
            raise SystemExit(f"error: --old-src {src}: the child imported weightshare from {self.where}")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the old engine's process ended")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask({"op": "quit"})
        self.proc.wait(timeout=30)


def old_worker() -> None:
    """The child's loop: set up and time the old engine's step on request (JSON lines)."""
    import weightshare

    fns: dict[tuple, tuple[Step, int]] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            print(json.dumps({}), flush=True)
            return
        if req["op"] == "where":
            print(json.dumps({"file": str(Path(weightshare.__file__).resolve())}), flush=True)
            continue
        torch.set_num_threads(req["threads"])
        device = torch.device(req["device"])
        key = (req["net"], req["model"], req["device"], req["dtype"], req["k"])
        if key not in fns:
            fns[key] = old_step(req["net"], req["model"], device, req["dtype"], req["k"])
        step, state = fns[key]
        print(json.dumps({"times": time_steps(step, device, req["steps"]), "state_bytes": state}), flush=True)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _config(args: argparse.Namespace, old: OldEngine | None, dev: str, net: str, kind: str, dtype: str, threads: int):
    """Sequential, pack and old engine of one (net, model, dtype, threads), timed in interleaved rounds."""
    device = torch.device(dev)
    torch.set_num_threads(threads)
    base = {"device": dev, "threads": threads, "net": net, "model": kind, "dtype": dtype}
    engines: dict[tuple[str, int], Callable[[int], list[float]]] = {}
    mem: dict[tuple[str, int], float] = {}
    seq, mem[("seq", 1)] = sequential_step(net, kind, device, dtype)
    engines[("seq", 1)] = partial(time_steps, seq, device)
    rows = []
    for k in args.ks:
        held = 0  # the engines built before stay allocated: a pack's peak is counted above them
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            held = torch.cuda.memory_allocated()
        try:
            fn, state = pack_step(net, kind, device, dtype, k)
            time_steps(fn, device, args.warmup)
        except torch.OutOfMemoryError:
            rows.append({**base, "k": k, "error": "out of memory"})
            break
        engines[("pack", k)] = partial(time_steps, fn, device)
        mem[("pack", k)] = torch.cuda.max_memory_allocated() - held if device.type == "cuda" else state
        if old is not None:
            req = {**base, "device": dev, "k": k, "op": "time"}
            old.ask({**req, "steps": args.warmup})
            engines[("old", k)] = lambda n, req=req: old.ask({**req, "steps": n})["times"]
    times: dict[tuple[str, int], list[float]] = {e: [] for e in engines}
    for _ in range(args.rounds):
        for e, run in engines.items():
            times[e].extend(run(args.steps))
    b = NETS[net][1]
    seq_rate = b / statistics.median(times[("seq", 1)])
    for k in args.ks:
        if ("pack", k) not in times:
            continue
        rate = k * b / statistics.median(times[("pack", k)])
        row = {**base, "k": k, "batch": b, "sequential_member_img_s": seq_rate, "pack_member_img_s": rate,
               "pack_vs_sequential": rate / seq_rate, "peak_mem_mb": mem[("pack", k)] / 2**20,
               "peak_mem_kind": "max_memory_allocated (above)" if device.type == "cuda" else "state_bytes",
               "timed_steps": len(times[("pack", k)])}  # fmt: skip
        if ("old", k) in times:
            old_rate = k * b / statistics.median(times[("old", k)])
            row.update(old_member_img_s=old_rate, pack_vs_old=rate / old_rate)
        rows.append(row)
        print(_row(row), file=sys.stderr, flush=True)
    return rows


def jax_anchor(device: str, batch: int = 256, steps: int = 5) -> dict[str, Any] | None:
    """Forward + backward of the MNIST FCN's first layer in JAX (``flax.linen.ConvLocal``) and here."""
    try:
        import flax.linen as nn
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    try:
        return _jax_anchor(nn, jax, jnp, device, batch, steps)
    except Exception as exc:  # the anchor is a side measurement: its failure is recorded, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def _jax_anchor(nn: Any, jax: Any, jnp: Any, device: str, batch: int, steps: int) -> dict[str, Any]:
    from weightshare.layers import FreeConv2d

    x = jnp.ones((batch, 28, 28, 1))
    layer = nn.ConvLocal(features=32, kernel_size=(5, 5), padding="SAME")
    params = layer.init(jax.random.PRNGKey(0), x)
    grad = jax.jit(jax.grad(lambda p, x: layer.apply(p, x).sum()))
    grad(params, x)["params"]["kernel"].block_until_ready()
    t0 = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(grad(params, x))
    jax_s = (time.perf_counter() - t0) / steps
    dev = torch.device(device)
    ours = FreeConv2d(1, 32, 5, padding=2, input_size=(28, 28)).to(dev)
    xt = torch.rand(batch, 1, 28, 28, device=dev)

    def step() -> None:
        ours.zero_grad(set_to_none=True)
        ours(xt).sum().backward()

    time_steps(step, dev, 2)
    torch_s = statistics.median(time_steps(step, dev, steps))
    return {"layer": "mnist conv1 5x5 1->32 same", "batch": batch, "jax_backend": jax.default_backend(),
            "jax_fwd_bwd_s": jax_s, "torch_fwd_bwd_s": torch_s}  # fmt: skip


def _row(r: dict[str, Any]) -> str:
    head = f"{r['device']:4s} t={r['threads']} {r['net']:7s} {r['model']:3s} {r['dtype']:4s} K={r['k']:<3d}"
    if "error" in r:
        return f"{head} {r['error']}"
    old = f"old {r['old_member_img_s']:8.0f} (pack x{r['pack_vs_old']:4.2f})" if "old_member_img_s" in r else ""
    return (f"{head} seq {r['sequential_member_img_s']:8.0f}  pack {r['pack_member_img_s']:8.0f} "
            f"(x{r['pack_vs_sequential']:4.2f})  {old}  mem {r['peak_mem_mb']:7.1f} MB")  # fmt: skip


def bench(args: argparse.Namespace) -> dict[str, Any]:
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    before = _uptime()
    old = OldEngine(args.old_src) if args.old_src else None
    rows: list[dict[str, Any]] = []
    try:
        for dev in devices:
            for threads in args.threads:
                for net in args.nets:
                    for kind in args.models:
                        for dtype in args.dtypes:
                            rows.extend(_config(args, old, dev, net, kind, dtype, threads))
    finally:
        if old is not None:
            old.close()
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "uptime_before": before,
        "uptime_after": _uptime(),
        "old_src": args.old_src,
        "jax_anchor": jax_anchor(devices[-1]) if args.jax else None,
        "results": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--models", nargs="+", default=["cnn", "fcn"], choices=["cnn", "fcn"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--steps", type=int, default=2, help="timed steps per engine per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (every engine, every K)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--old-src", default=None, help="src/ of a worktree of the old engine (commit a216e8d)")
    p.add_argument("--jax", action="store_true", help="also time flax.linen.ConvLocal (if JAX imports)")
    p.add_argument("--json", default=None, help="write the JSON here instead of stdout")
    p.add_argument("--old-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if any(k < 1 for k in args.ks) or any(t < 1 for t in args.threads):
        p.error("--ks and --threads: every value must be >= 1")
    if args.old_src and not (Path(args.old_src) / "weightshare" / "packed" / "stacked_net.py").is_file():
        p.error(f"--old-src {args.old_src}: no weightshare/packed/stacked_net.py there (a worktree of a216e8d's src)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.old_worker:
        old_worker()
        return
    out = bench(args)
    print(f"uptime before: {out['uptime_before']}\nuptime after:  {out['uptime_after']}")
    print("\n".join(_row(r) for r in out["results"]))
    if out["jax_anchor"]:
        print(json.dumps(out["jax_anchor"]))
    text = json.dumps(out, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
