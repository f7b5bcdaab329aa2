"""``scripts/gpu_check.sh`` on a machine without CUDA: it says so, runs the smallest CPU case of
every step, keeps going past a failing step and records each step's exit status."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path; on a CUDA machine the script runs the GPU checks")
@pytest.mark.timeout(400)
def test_gpu_check_without_cuda_runs_the_cpu_case_and_records_every_step(tmp_path: Path) -> None:
    # a python that fails the layer benchmark (and only it): the steps after it must still run
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *bench_layers.py*) echo broken >&2; exit 3;; esac\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(wrapper), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # one step failed
    assert "no CUDA device" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["cuda"] is False and summary["ok"] is False
    assert steps["bench_layers"]["exit_status"] == 3 and "broken" in (out / "bench_layers.log").read_text()
    assert steps["cuda_tests"]["skipped"] is True
    for name in ("env", "bench_pack", "sweep", "report"):
        assert steps[name]["exit_status"] == 0, (name, (out / f"{name}.log").read_text()[-2000:])
    assert json.loads((out / "env.json").read_text())["cuda"] is False
    assert [r["k"] for r in json.loads((out / "bench_pack.json").read_text())["results"]] == [1, 2]
    results = [json.loads(p.read_text()) for p in sorted((out / "paper_translate_small").glob("*/results.json"))]
    assert len(results) == 4  # cnn, fcn x translate 0, 0.3
    assert all(r["status"] == "completed" for r in results)
    assert {(r["identity"]["model"], r["identity"]["aug_level"]) for r in results} == {
        ("cnn", 0.0),
        ("cnn", 0.3),
        ("fcn", 0.0),
        ("fcn", 0.3),
    }
    assert (out / "report" / "report.md").is_file()
    assert "hydra/launcher=packed" in (out / "paper_translate_small" / "multirun.yaml").read_text()
