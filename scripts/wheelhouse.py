"""Download a wheel of every dependency of the project except torch, for a node without internet.

    python scripts/wheelhouse.py WHEELHOUSE [--python-version 311] [--platform manylinux_2_28_x86_64 ...]
    (or: make wheelhouse PYTHON_VERSION=311 PLATFORM="manylinux_2_28_x86_64 manylinux2014_x86_64")

A platform tag matches only wheels built for it (and, for ``manylinux2014``, the older
``manylinux2010``/``manylinux1``): give every tag the node's glibc accepts that the
packages use, e.g. ``manylinux_2_28_x86_64 manylinux2014_x86_64`` for a glibc >= 2.28 node.

then, on the offline node, over the torch it already has (README, "SLURM", compute nodes without internet):

    python -m pip install --no-index --find-links WHEELHOUSE "weightshare[wandb,dev]"

Why not ``pip download -r``: pytorch-lightning and torchmetrics depend on torch, so pip
would fetch torch and its CUDA libraries (gigabytes) that the node has already, built for
its own CUDA. Instead pip resolves the whole set for the target Python and platform
without installing anything (``pip install --dry-run --report``), and every resolved
package except torch and what only torch needs (``nvidia-*``, ``triton``) is downloaded
without dependencies. The project's own wheel is built into the same folder.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: what the offline node has already, with torch (and must not be replaced by another build)
EXCLUDE = re.compile(r"^(torch|triton|nvidia-.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(report: dict) -> tuple[list[str], list[str]]:
    """``(wheels, sdists)``: ``name==version`` of every package in a ``pip --report`` but torch and torch-only ones.

    ``sdists``: those published without a wheel (``antlr4-python3-runtime``, which
    hydra-core pins): they are built into wheels here.
    """
    wheels, sdists = [], []
    for item in report.get("install", []):
        meta = item["metadata"]
        name = canonical(meta["name"])
        if name == "weightshare" or EXCLUDE.match(name):
            continue
        url = str((item.get("download_info") or {}).get("url", ""))
        (wheels if url.endswith(".whl") or not url else sdists).append(f"{name}=={meta['version']}")
    return sorted(wheels), sorted(sdists)


def _target(args: argparse.Namespace) -> list[str]:
    out = ["--only-binary=:all:"]
    if args.python_version:
        out += ["--python-version", args.python_version]
    for tag in args.platform:
        out += ["--platform", tag]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheelhouse", type=Path)
    parser.add_argument("--python-version", default="", help="the node's Python, e.g. 311 (default: this one)")
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        help="a platform tag the node accepts (repeat: manylinux_2_28_x86_64 manylinux2014_x86_64)",
    )
    parser.add_argument("--extras", default="wandb,dev", help="extras to include (comma-separated; '' for none)")
    args = parser.parse_args(argv)
    house = args.wheelhouse.resolve()
    house.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--quiet", "-w", str(house), str(REPO)], check=True)
    (wheel,) = sorted(house.glob("weightshare-*.whl"))[-1:]
    spec = f"{wheel}[{args.extras}]" if args.extras else str(wheel)
    with tempfile.TemporaryDirectory() as tmp:
        # resolved for this interpreter: pip cannot resolve for another platform when a
        # package has no wheel; the versions are the same when this Python is the node's
        report_path = Path(tmp) / "report.json"
        subprocess.run(
            [*pip, "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report_path), spec],
            check=True,
        )
        wheels, sdists = wanted(json.loads(report_path.read_text()))
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "-d", str(house), *_target(args), *wheels], check=True)
    if sdists:
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(house), *sdists], check=True)
    pins = wheels + sdists
    (house / "requirements.txt").write_text("\n".join(pins) + "\n")
    print(f"{len(pins)} wheels ({len(sdists)} built from source) and {wheel.name} in {house} (no torch); "
          "on the offline node:")  # fmt: skip
    print(f'  python -m pip install --no-index --find-links {house} "weightshare[{args.extras}]"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
