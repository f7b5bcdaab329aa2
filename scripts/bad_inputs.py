"""Re-try the bad inputs of issue 19 on the command line and count the outcomes.

Each case runs ``python train.py <args>`` in a fresh temporary directory (run and sweep
directories inside it) and is classified by what a user sees:

- ``one-line exit 2``: exactly one line of output, ``error: ...`` naming the expected key, exit 2;
- ``sweep stopped``: a sweep that ran its trials and stopped on failures: its table, then one
  ``error:`` line, exit 1, no traceback;
- ``ran``: a case that is valid once understood (it must exit 0);
- ``multi-line`` / ``traceback`` / ``accepted``: what the issue counted as defects.

``--list`` prints the table; ``--json`` the counts as JSON. The same table drives
``tests/test_config_errors.py`` (in-process, one test per case). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bad_inputs.py          # ~3-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: a run that can really train, fast (for the cases that are valid once understood)
FAST = [
    "data=synthetic",
    "data.options.size=256",
    "trainer.max_epochs=1",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
]
TPE = ["hparams_search=tpe"]


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the key its one-line error must name (None: it must run)."""

    name: str
    args: list[str]
    key: str | None
    env: dict[str, str] = field(default_factory=dict)
    expect: str = "one-line exit 2"


NO_WANDB = {"WANDB_API_KEY": "", "WANDB_MODE": "", "HOME": "{home}"}

CASES: list[Case] = [
    # ---- were tracebacks
    Case("seed beyond the generator", ["seed=8589934592"], "seed"),
    Case("gradient_clip_val nan", ["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val"),
    Case("devices 0", ["trainer.devices=0"], "trainer.devices"),
    Case("accelerator tpu", ["trainer.accelerator=tpu"], "trainer.accelerator"),
    Case("max_time bogus", ["trainer.max_time=bogus"], "trainer.max_time"),
    Case("profiler bogus", ["trainer.profiler=bogus"], "trainer.profiler"),
    Case("fast_dev_run abc", ["trainer.fast_dev_run=abc"], "trainer.fast_dev_run"),
    Case("limit_train_batches 1.5", ["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches"),
    Case("hidden too big for memory", ["model.hidden=100000000"], "model.hidden"),
    Case("crop padding too big for memory", ["aug.crop_padding=100000"], "aug.crop_padding"),
    Case("wandb without credentials", ["logger=wandb"], "logger.wandb.offline", env=NO_WANDB),
    Case("storage not a URL", [*TPE, "hydra.sweeper.storage=notaurl"], "hydra.sweeper.storage"),
    Case("storage host refuses", [*TPE, "hydra.sweeper.storage=postgresql://127.0.0.1:1/db"], "hydra.sweeper.storage"),
    Case(
        "sqlite folder missing",
        [*TPE, "hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db"],
        "hydra.sweeper.storage",
    ),
    Case("interval reversed", [*TPE, "optimizer.lr=interval(1e-1, 1e-5)"], "optimizer.lr"),
    Case("interval nan", [*TPE, "optimizer.lr=interval(nan, 1)"], "optimizer.lr"),
    Case("log of a negative bound", [*TPE, "optimizer.lr=tag(log, interval(-1, 1))"], "optimizer.lr"),
    Case("range step 0", [*TPE, "model.depth=range(2, 4, 0)"], "model.depth"),
    Case(
        "study stops on failed trials",
        [*TPE, *FAST, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0", "ckpt_path=/nonexistent.ckpt"],
        "max_failure_rate",
        expect="sweep stopped",
    ),
    # ---- were silently accepted
    Case("fcn_init on a CNN", ["model=cnn", "model.fcn_init=keras"], "model.fcn_init"),
    Case("connectivity_mode on a CNN", ["model=cnn", "model.connectivity_mode=input"], "model.connectivity_mode"),
    Case("momentum with Adam", ["optimizer.momentum=0.5"], "optimizer.momentum"),
    Case("betas with SGD", ["optimizer=sgd", "optimizer.betas=[0.5,0.5]"], "optimizer.betas"),
    Case("gamma without a schedule", ["scheduler.gamma=0.5"], "scheduler.gamma"),
    Case("min_epochs above max_epochs", ["trainer.min_epochs=5", "trainer.max_epochs=1"], "trainer.min_epochs"),
    Case("validation every 5 epochs", ["trainer.check_val_every_n_epoch=5"], "trainer.check_val_every_n_epoch"),
    Case("deterministic bogus", ["trainer.deterministic=bogus"], "trainer.deterministic"),
    Case("negative sanity steps", ["trainer.num_sanity_val_steps=-5"], "trainer.num_sanity_val_steps"),
    Case(
        "radius beyond every layer",
        ["model=fcn", "callbacks.filter_metrics.radii=[1000]"],
        "callbacks.filter_metrics.radii",
    ),
    Case("noise_std nan", ["data=synthetic", "data.options.noise_std=nan"], "data.options.noise_std"),
    Case("two models in one run", ["model=[cnn,fcn]"], "model"),
    Case("float16 on a CPU", ["trainer.precision=16-mixed"], "trainer.precision"),
    Case("unknown search key", [*TPE, "optimizer.bogus=choice(1, 2)"], "optimizer.bogus"),
    Case("search value not a number", [*TPE, "optimizer.lr='@@@'"], "optimizer.lr"),
    Case("unknown search option", [*TPE, "model=choice(cnn, transformer)"], "model"),
    Case("unknown tag", [*TPE, "optimizer.lr=tag(bogus, interval(1e-5, 1e-1))"], "optimizer.lr"),
    Case("sweep preset forced to one run", ["experiment=paper_translate", "hydra.mode=RUN"], "hydra.mode"),
    # ---- were Hydra's multi-line messages, or checked after start
    Case("misspelled key", ["trainer.max_epoch=1"], "trainer.max_epoch"),
    Case("wrong type int", ["model.depth=three"], "model.depth"),
    Case("wrong type float", ["aug.translate=abc"], "aug.translate"),
    Case("unknown model", ["model=transfomer"], "model"),
    Case("unknown option near miss", ["model=fcnn"], "model"),
    Case("number with junk", ["optimizer.lr=1e-3x"], "optimizer.lr"),
    Case("n_trials 0", [*TPE, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials"),
    Case("override grammar", ["model.depth=[1,"], "model.depth"),
    Case("sweep without -m", ["model=cnn,fcn"], "model"),
    Case(
        "bad value every job of a sweep shares",
        ["-m", "seed=0,1", "trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val",
    ),
    Case("bad value in a sweep", ["-m", "optimizer.lr=1e-3,-1"], "optimizer.lr"),
    Case("append to an existing key", ["+trainer.max_epochs=1"], "trainer.max_epochs"),
    Case("unknown impl", ["model=fcn", "model.impl=bogus"], "model.impl"),
    Case("empty radii", ["model=fcn", "callbacks.filter_metrics.radii=[]"], "callbacks.filter_metrics.radii"),
    Case(
        "filter index beyond the filters",
        ["model=fcn", "callbacks.filter_images.filter_index=99"],
        "callbacks.filter_images.filter_index",
    ),
    Case("image size below the minimum", ["data=synthetic", "data.options.image_size=4"], "data.options.image_size"),
    Case("more folds than rows", ["data=synthetic", "data.n_folds=100000"], "data.n_folds"),
    Case("edge width beyond half the image", ["aug.edge_width=20"], "aug.edge_width"),
    Case("eval edge width beyond half the image", ["eval.edge_width=20"], "eval.edge_width"),
    Case("unknown layer", ["model=fcn", "callbacks.filter_metrics.layers=[bogus]"], "callbacks.filter_metrics.layers"),
    Case("negative noise", ["data=synthetic", "data.options.noise_std=-1"], "data.options.noise_std"),
    Case("missing checkpoint", ["ckpt_path=/nonexistent.ckpt"], "ckpt_path"),
    Case("missing init_from", ["model=fcn", "model.init_from=/nonexistent.ckpt"], "model.init_from"),
    Case("mistyped data.root offline", ["data.root={tmp}/typo", "data.download=false"], "data.root"),
    # ---- valid once understood
    Case("-m after overrides", ["data=synthetic", "-m", "model=fcn", *FAST[1:]], None, expect="ran"),
]


def _fill(text: str, tmp: Path, home: Path | None = None) -> str:
    text = text.replace("{tmp}", str(tmp))
    return text.replace("{home}", str(home)) if home is not None else text


def run_case(case: Case, timeout: int = 300) -> dict[str, object]:
    """Run one case in a fresh directory; its outcome, output line count and what it left behind."""
    with tempfile.TemporaryDirectory(prefix="ws-bad-") as tmp_name, tempfile.TemporaryDirectory() as home_name:
        tmp, home = Path(tmp_name), Path(home_name)  # an empty HOME: no ~/.netrc
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
        for k, v in case.env.items():
            if v == "":
                env.pop(k, None)
            else:
                env[k] = _fill(v, tmp, home)
        args = [_fill(a, tmp) for a in case.args]
        args += [f"hydra.run.dir={tmp / 'run'}", f"hydra.sweep.dir={tmp / 'sweep'}"]
        proc = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        written = sorted(str(p.relative_to(tmp)) for p in tmp.iterdir())
    text = proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if "Traceback" in text:
        outcome = "traceback"
    elif proc.returncode == 0:
        outcome = "ran" if case.expect == "ran" else "accepted"
    elif proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        outcome = "one-line exit 2"
    elif proc.returncode == 1 and last.startswith("error:") and case.expect == "sweep stopped":
        outcome = "sweep stopped"
    else:
        outcome = "multi-line"
    names_key = case.key is None or case.key in last
    ok = outcome == case.expect and names_key and (case.expect != "one-line exit 2" or written == [])
    return {
        "case": case.name,
        "outcome": outcome,
        "exit": proc.returncode,
        "lines": len(lines),
        "names_key": names_key,
        "written": written,
        "ok": ok,
        "message": last[:200],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("-k", default="", help="only cases whose name contains this text")
    opts = parser.parse_args()
    cases = [c for c in CASES if opts.k in c.name]
    if opts.list:
        for c in cases:
            print(f"{c.name:40s} {' '.join(c.args)}")
        return
    rows = []
    for case in cases:
        row = run_case(case)
        rows.append(row)
        flag = "ok " if row["ok"] else "BAD"
        print(f"{flag} {row['outcome']:16s} exit={row['exit']} lines={row['lines']:<3} {case.name}: {row['message']}")
    counts = Counter(str(r["outcome"]) for r in rows)
    summary = {"tried": len(rows), "as_expected": sum(bool(r["ok"]) for r in rows), "outcomes": dict(counts)}
    print(json.dumps(summary, indent=2) if opts.json else summary)
    if summary["as_expected"] != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
