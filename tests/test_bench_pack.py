"""scripts/bench_pack.py runs and writes its JSON (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_pack.py"


def test_bench_pack_smallest_case_writes_json(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_pack", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--device", "cpu", "--threads", "1", "--nets", "mnist", "--models", "cnn", "--dtypes", "fp32",
                "--ks", "1", "2", "--rounds", "1", "--steps", "1", "--warmup", "0", "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert [r["k"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        assert r["pack_member_img_s"] > 0 and r["sequential_member_img_s"] > 0 and r["peak_mem_mb"] > 0
