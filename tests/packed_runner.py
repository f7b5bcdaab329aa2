"""Run a small pack in a subprocess (the kill/SIGTERM tests): ``python packed_runner.py ROOT EPOCHS [resume]``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from packed_helpers import make_cfg
from weightshare.packed import train_pack

MEMBERS = [
    ["data.fold=0", "seed=0", "aug.translate=0.2"],
    ["data.fold=1", "seed=1", "optimizer.lr=0.003", "aug.noise=0.1"],
]


def configs(root: Path, epochs: int, resume: bool) -> list:
    extra = ["model=fcn", f"trainer.max_epochs={epochs}", "data.options.size=640"]
    if resume:
        extra.append("resume=true")
    return [make_cfg(root / f"m{i}", [*extra, *m]) for i, m in enumerate(MEMBERS)]


if __name__ == "__main__":
    root, epochs = Path(sys.argv[1]), int(sys.argv[2])
    print(train_pack(configs(root, epochs, len(sys.argv) > 3)), flush=True)
