"""scripts/bench_pack.py runs and writes its JSON (no timing is asserted); a bad --old-src is refused."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_pack.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_pack", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_pack_smallest_case_writes_json(tmp_path):
    bench = _load()
    out = tmp_path / "bench.json"
    bench.main(["--device", "cpu", "--threads", "1", "--nets", "mnist", "--models", "cnn", "--dtypes", "fp32",
                "--ks", "1", "2", "--rounds", "1", "--steps", "1", "--warmup", "0", "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert [r["k"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        assert r["pack_member_img_s"] > 0 and r["sequential_member_img_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["threads"] == 1 and "old_member_img_s" not in r  # no --old-src: no old column
    assert "load average" in data["uptime_before"] or data["uptime_before"]


@pytest.mark.parametrize("bad", ["--ks 0", "--old-src /nonexistent/src"])
def test_bench_pack_bad_option_is_one_line_and_exit_2(tmp_path, bad):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", *bad.split()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("bench_pack.py: error:")
