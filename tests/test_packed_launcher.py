"""``hydra/launcher=packed``: grouping, run directories, fallback, errors, submitit, Optuna batches.

End-to-end checks run ``train.py`` (through ``tests/fixtures/packed_spy.py``, which records
every ``train_pack`` call) on synthetic data with one or two epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hydra_plugins.weightshare_packed_launcher._plan import PACK, SINGLE, group

REPO = Path(__file__).resolve().parents[1]
SPY = REPO / "tests" / "fixtures" / "packed_spy.py"
TINY = [
    "data=synthetic",
    "data.options.size=256",
    "trainer.max_epochs=1",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
    "test=false",
]


def _run(
    tmp_path: Path, args: list[str], *, spy: bool = True, timeout: int = 600
) -> tuple[subprocess.CompletedProcess, list[dict[str, Any]]]:
    """``train.py -m ARGS`` in ``tmp_path``; returns the process and the recorded train_pack calls."""
    log = tmp_path / "spy.jsonl"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PACK_SPY_LOG": str(log), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    script = [str(SPY), "hydra.job.name=train"] if spy else [str(REPO / "train.py")]
    proc = subprocess.run(
        [sys.executable, script[0], "-m", *script[1:], *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return proc, calls


def _results(sweep: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(n)]


def _members(calls: list[dict[str, Any]]) -> list[list[str]]:
    """Each train_pack call as the job numbers (run directory names) of its members."""
    return [[Path(m).name for m in c["members"]] for c in calls]


# ------------------------------------------------------------------ grouping (no training)
def test_group_packs_equal_keys_in_job_order_with_singles_in_place() -> None:
    keys = ["cnn", "fcn", None, "cnn", "fcn", "cnn"]
    assert group(keys, None) == [(PACK, [0, 3, 5]), (PACK, [1, 4]), (SINGLE, [2])]
    assert group(keys, 2) == [(PACK, [0, 3]), (PACK, [1, 4]), (SINGLE, [2]), (PACK, [5])]
    assert group(keys, 1) == [(PACK, [0]), (PACK, [1]), (SINGLE, [2]), (PACK, [3]), (PACK, [4]), (PACK, [5])]
    assert group([None, None], None) == [(SINGLE, [0]), (SINGLE, [1])]
    assert group([], 3) == []
    with pytest.raises(ValueError, match="pack_size"):
        group(keys, 0)


def test_plugin_modules_hydra_scans_import_nothing_heavy() -> None:
    code = (
        "import sys, hydra_plugins.weightshare_packed_launcher.config, "
        "hydra_plugins.weightshare_packed_launcher.packed_launcher; "
        "print(sorted(m for m in ('torch', 'submitit', 'weightshare', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("hydra.launcher.pack_size=0", "hydra.launcher.pack_size=0 is not allowed; expected an integer >= 1"),
        ("hydra.launcher.executor=cloud", "hydra.launcher.executor='cloud' is not allowed; expected local | slurm"),
    ],
)
def test_bad_launcher_option_is_a_one_line_error(tmp_path: Path, override: str, expected: str) -> None:
    proc, calls = _run(tmp_path, ["hydra/launcher=packed", override, *TINY, "seed=0,1"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config error: ") and expected in lines[0], proc.stderr
    assert calls == [] and not list(tmp_path.rglob("results.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_trainer_gpu_without_cuda_is_a_one_line_error(tmp_path: Path) -> None:
    proc, calls = _run(tmp_path, ["hydra/launcher=packed", "trainer=gpu", *TINY, "seed=0,1"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.accelerator='gpu' is not allowed" in lines[0], proc.stderr
    assert "without CUDA" in lines[0]
    assert calls == []


# ------------------------------------------------------------------ end to end
def _hydra_yaml(job_dir: Path) -> dict[str, Any]:
    """``.hydra/hydra.yaml`` less what differs between launchers and sweep directories."""
    hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    for key in ("launcher", "sweep", "overrides"):
        hydra.pop(key)
    hydra["runtime"].pop("output_dir")
    hydra["runtime"]["choices"].pop("hydra/launcher")
    return hydra


def _tree(job_dir: Path) -> set[str]:
    return {str(p.relative_to(job_dir)) for p in job_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess, list]:
    """The same two jobs under the basic launcher and the packed launcher."""
    tmp_path = tmp_path_factory.mktemp("two_sweeps")
    jobs = [*TINY, "seed=0,1"]
    basic, pack = tmp_path / "basic", tmp_path / "packed"
    proc, _ = _run(tmp_path, [*jobs, f"hydra.sweep.dir={basic}", "hydra.job.name=train"], spy=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, calls = _run(tmp_path, ["hydra/launcher=packed", *jobs, f"hydra.sweep.dir={pack}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return basic, pack, proc, calls


def test_packed_sweep_writes_the_basic_launchers_run_directories(two_sweeps) -> None:
    basic, pack, proc, calls = two_sweeps
    assert _members(calls) == [["0", "1"]]  # both jobs in one pack, one call
    assert sorted(p.name for p in pack.iterdir()) == sorted(p.name for p in basic.iterdir())
    for i in ("0", "1"):
        assert _tree(pack / i) == _tree(basic / i)
        for name in ("config.yaml", "overrides.yaml"):
            assert (pack / i / ".hydra" / name).read_text() == (basic / i / ".hydra" / name).read_text()
        assert _hydra_yaml(pack / i) == _hydra_yaml(basic / i)
        hydra = yaml.safe_load((pack / i / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["runtime"]["output_dir"] == str(pack / i) and hydra["job"]["num"] == int(i)
        text = (pack / i / "train.log").read_text()
        assert "pack of 2: jobs #0, #1" in text  # the pack's lines, in every member's log
        assert text.count("done: val/acc") == 1 and f"-> {pack / i / 'results.json'}" in text  # its own, only
    for a, b in zip(_results(basic, 2), _results(pack, 2)):
        assert b["status"] == "completed" and b["identity"] == a["identity"]
        assert b["output_dir"] == str(pack / str(a["identity"]["seed"]))
    # the end-of-sweep summary callback read the packed jobs
    assert f"sweep {pack}" in proc.stdout and proc.stdout.count("completed") >= 2


def test_rerun_skips_completed_members_and_retrains_the_others(two_sweeps, tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    shutil.copytree(two_sweeps[1], sweep)
    first = _results(sweep, 2)
    broken = dict(first[1], status="failed", error="RuntimeError: killed")
    (sweep / "1" / "results.json").write_text(json.dumps(broken))
    metrics0 = (sweep / "0" / "metrics.csv").read_text()

    proc, calls = _run(tmp_path, ["hydra/launcher=packed", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _members(calls) == [["0", "1"]]  # the packed trainer, not the launcher, skips completed members
    again = _results(sweep, 2)
    assert again[0] == first[0]  # completed: not retrained, results.json untouched
    assert (sweep / "0" / "metrics.csv").read_text() == metrics0
    assert again[1]["status"] == "completed" and again[1]["started_unix"] > first[1]["started_unix"]
    assert again[1]["output_dir"] == str(sweep / "1")
    assert proc.stdout.count("completed") >= 2  # the summary table lists both


def test_groups_by_key_and_pack_size_and_runs_unpackable_jobs_alone(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc, calls = _run(
        tmp_path,
        [
            "hydra/launcher=packed",
            "hydra.launcher.pack_size=2",
            *TINY,
            "model=cnn,fcn",
            "seed=0,1,2",
            f"hydra.sweep.dir={sweep}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # job order: (cnn, 0) (cnn, 1) (cnn, 2) (fcn, 0) (fcn, 1) (fcn, 2); packs of at most 2, CNNs first
    assert _members(calls) == [["0", "1"], ["2"], ["3", "4"], ["5"]]
    assert len({c["pid"] for c in calls}) == 1  # one process trained every pack
    results = _results(sweep, 6)
    assert [r["identity"]["model"] for r in results] == ["cnn"] * 3 + ["fcn"] * 3
    assert all(r["status"] == "completed" for r in results)

    # the divergence experiment is unpackable: it runs as a single job, with the reason logged
    div = tmp_path / "d"
    proc, calls = _run(
        tmp_path,
        ["hydra/launcher=packed", *TINY, "model=fcn", "divergence.cnn_epochs=0,1", f"hydra.sweep.dir={div}"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _members(calls) == [["0"]]
    assert "job #1 runs as a single job: " in proc.stdout + proc.stderr
    reason = (proc.stdout + proc.stderr).split("job #1 runs as a single job: ")[1].splitlines()[0]
    assert "divergence" in reason
    plain, two_stage = _results(div, 2)
    assert plain["status"] == two_stage["status"] == "completed"
    assert "stages" in two_stage and (div / "1" / "cnn_stage" / "results.json").is_file()
    assert (div / "1" / ".hydra" / "overrides.yaml").is_file() and (div / "1" / "train.log").is_file()


@pytest.mark.timeout(600)
def test_submitit_local_executor_runs_one_job_per_pack(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc, _ = _run(
        tmp_path,
        [
            "hydra/launcher=packed",
            "hydra.launcher.executor=submitit_local",
            "hydra.launcher.pack_size=2",
            "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1",
            *TINY,
            "seed=0,1,2",
            f"hydra.sweep.dir={sweep}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b, c = _results(sweep, 3)
    assert a["status"] == b["status"] == c["status"] == "completed"
    assert a["pid"] == b["pid"] != c["pid"]  # pack {0, 1} in one submitit job, {2} in another
    assert os.getpid() not in (a["pid"], c["pid"])
    submitted = [p for p in (sweep / ".submitit").iterdir() if p.is_dir() and p.name.isdigit()]  # one per job
    assert len(submitted) == 2
    for i in range(3):
        assert (sweep / str(i) / ".hydra" / "hydra.yaml").is_file() and (sweep / str(i) / "train.log").is_file()


def test_optuna_batch_of_n_jobs_trials_trains_as_one_pack(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc, calls = _run(
        tmp_path,
        [
            "hydra/launcher=packed",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.direction=maximize",
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _members(calls) == [["0", "1"], ["2", "3"]]  # each batch of 2 trials: one train_pack call
    results = _results(sweep, 4)
    assert all(r["status"] == "completed" for r in results)
    lrs = [r["config"]["optimizer"]["lr"] for r in results]
    assert len(set(lrs)) == 4  # the members of a pack differ in learning rate
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert max(r["final"]["val/acc_best"] for r in results) == pytest.approx(best["best_value"])
