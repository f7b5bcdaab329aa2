"""The sharing-spectrum report (report.spectrum) and the run identity of the new mechanisms."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from weightshare.config.compose import load_config
from weightshare.report import write_report
from weightshare.report.collect import load_sweep
from weightshare.report.spectrum import has_spectrum, mechanism_of, spectrum_table
from weightshare.results import run_identity

BASE_IDENTITY = {
    "data": "mnist",
    "depth": 3,
    "arch": "paper",
    "split": "kfold",
    "connectivity": 0.0,
    "share_tile": None,
    "share_penalty": 0.0,
    "lr": 0.001,
    "optimizer": "adam",
    "seed": 0,
    "init_from": None,
}


def write_job(root: Path, name: str, level: float, fold: int, acc: float, params: int, fd: float | None, **ident):
    job = root / name
    job.mkdir(parents=True)
    identity = {**BASE_IDENTITY, **ident, "fold": fold, "aug_level": level}
    identity["aug_type"] = "translate" if level > 0 else "none"
    final = {"val/acc": acc, "val/translate/acc": acc - 0.3, "val/quadrant_swap/acc": acc - 0.5}
    if fd is not None:
        final["fd/conv1/r1/euclid"] = fd
    payload = {"status": "completed", "identity": identity, "param_count": params, "epochs_completed": 10}
    payload |= {"final": final, "best": dict(final, epoch=9)}
    (job / "results.json").write_text(json.dumps(payload))


def build(root: Path) -> Path:
    for level in (0.0, 0.3):
        for fold, shift in ((0, 0.0), (1, 0.02), (2, 0.01)):  # median = the fold-2 value
            a = 0.9 + level / 10 + shift
            write_job(root, f"cnn_{level}_{fold}", level, fold, a, 100, None, model="cnn")
            write_job(root, f"fcn_{level}_{fold}", level, fold, a - 0.1, 1000, 0.11, model="fcn")
            write_job(
                root, f"lr4_{level}_{fold}", level, fold, a + 0.01, 300, 0.02, model="lowrank", rank=4, combining="full"
            )
            write_job(root, f"lr2_{level}_{fold}", level, fold, a, 200, 0.01, model="lowrank", rank=2, combining="full")
            write_job(root, f"t2_{level}_{fold}", level, fold, a - 0.02, 500, 0.07, model="fcn", share_tile=2)
            write_job(
                root,
                f"l1_{level}_{fold}",
                level,
                fold,
                a - 0.05,
                1000,
                0.09,
                model="fcn",
                share_penalty=1e-4,
                share_penalty_kind="l1_all_pairs",
            )
            write_job(root, f"l2_{level}_{fold}", level, fold, a - 0.06, 1000, 0.08, model="fcn", share_penalty=1e-3)
            write_job(
                root,
                f"dyn_{level}_{fold}",
                level,
                fold,
                a - 0.04,
                1000,
                0.05,
                model="fcn",
                dynamic_sharing="every=10;strength=0.5;radius=all",
            )
    return root


def test_spectrum_table_rows_and_medians(tmp_path):
    sweep = load_sweep([build(tmp_path / "sweep")])
    assert has_spectrum(sweep.jobs)
    table = spectrum_table(sweep.jobs)
    assert len(table) == 8 * 2 and set(table["n"]) == {3}
    mechanisms = list(dict.fromkeys(table["mechanism"]))
    assert mechanisms == ["CNN", "tiled", "low-rank", "soft L2 neighbours", "soft L1 all pairs", "dynamic", "FCN"]
    row = table[
        (table["mechanism"] == "low-rank") & (table["setting"] == "R=4 full") & (table["train_translate"] == 0.3)
    ]
    assert row["clean_acc"].item() == pytest.approx(0.9 + 0.03 + 0.01 + 0.01)  # median shift 0.01
    assert row["translated_acc"].item() == pytest.approx(0.95 - 0.3)
    assert row["quadrant_swap_acc"].item() == pytest.approx(0.95 - 0.5)
    assert row["param_count"].item() == 300 and row["epochs"].item() == 10 and row["fd_conv1_r1"].item() == 0.02
    lowrank = table[table["mechanism"] == "low-rank"]
    assert list(lowrank["setting"]) == ["R=2 full", "R=2 full", "R=4 full", "R=4 full"]  # by parameter count
    cnn = table[table["mechanism"] == "CNN"]
    assert list(cnn["fd_conv1_r1"]) == [0.0, 0.0]
    assert set(table[table["mechanism"] == "dynamic"]["setting"]) == {"every=10, strength=0.5, radius=all"}
    # the paper tables keep the mechanisms apart: each has its own setting label
    settings = set(sweep.jobs["setting"])
    assert {"rank=4,combining=full", "share_penalty=0.0001,share_penalty_kind=l1_all_pairs"} <= settings


def test_report_writes_the_spectrum_table_and_figure(tmp_path):
    report = write_report([build(tmp_path / "sweep")], tmp_path / "out")
    names = {p.name for p in report.files}
    assert {"spectrum.csv", "spectrum.md", "spectrum_mnist.png"} <= names
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## The sharing spectrum" in md and "| low-rank | R=4 full | 0.3 | 3 | 300 |" in md
    assert "![spectrum_mnist](plots/spectrum_mnist.png)" in md
    assert (tmp_path / "out" / "plots" / "spectrum_mnist.png").stat().st_size > 10_000
    frame = pd.read_csv(tmp_path / "out" / "spectrum.csv")
    assert len(frame) == 16


def test_no_spectrum_for_a_cnn_fcn_sweep(tmp_path):
    root = tmp_path / "sweep"
    write_job(root, "a", 0.0, 0, 0.9, 100, None, model="cnn")
    write_job(root, "b", 0.0, 0, 0.8, 1000, 0.1, model="fcn")
    sweep = load_sweep([root])
    assert not has_spectrum(sweep.jobs)
    report = write_report([root], tmp_path / "out", plots=False)
    assert "spectrum.md" not in {p.name for p in report.files}
    assert "sharing spectrum" not in (tmp_path / "out" / "report.md").read_text()


def test_mechanism_labels():
    assert mechanism_of({"model": "cnn"}) == ("CNN", "")
    assert mechanism_of({"model": "fcn", "connectivity": 0.5}) == ("FCN", "connectivity=0.5")
    assert mechanism_of({"model": "lowrank", "rank": 8.0, "combining": "factorized"}) == ("low-rank", "R=8 factorized")
    assert mechanism_of({"model": "fcn", "share_penalty": 0.01}) == ("soft L2 neighbours", "weight=0.01")


@pytest.mark.parametrize(
    ("overrides", "extra"),
    [
        (["model=cnn"], {}),
        (["model=fcn", "model.share_penalty=0.1"], {}),
        (["model=lowrank", "model.rank=2"], {"rank": 2, "combining": "factorized"}),  # the authors' default
        (
            ["model=lowrank", "model.rank=2", "model.combining=full", "model.spatial_bias=false"],
            {"rank": 2, "combining": "full", "lowrank_bias": "filter=true;spatial=false"},
        ),
        (
            ["model=fcn", "model.share_penalty=0.1", "model.share_penalty_kind=l1_all_pairs"],
            {"share_penalty_kind": "l1_all_pairs"},
        ),
        (
            ["model=fcn", "model.dynamic_sharing.every=10", "model.dynamic_sharing.strength=0.5"],
            {"dynamic_sharing": "every=10;strength=0.5;radius=all"},
        ),
        (
            ["model=fcn", "model.dynamic_sharing.every=3", "model.dynamic_sharing.radius=2"],
            {"dynamic_sharing": "every=3;strength=1;radius=2"},
        ),
    ],
)
def test_run_identity_names_the_mechanism_only_when_used(overrides, extra):
    identity = run_identity(load_config(["data=synthetic", *overrides]))
    new_keys = {"rank", "combining", "lowrank_bias", "share_penalty_kind", "dynamic_sharing"}
    assert {k: identity[k] for k in new_keys & set(identity)} == extra
    # the fields every run had before keep their names (older results.json still match)
    assert {"data", "model", "share_tile", "share_penalty", "init_from"} <= set(identity)


def test_spectrum_experiment_composes_every_mechanism():
    from weightshare.config.validate import validate_config

    for preset, model in [
        ("cnn", "cnn"),
        ("tiled_t4", "fcn"),
        ("lowrank_r8", "lowrank"),
        ("soft_l1", "fcn"),
        ("dynamic", "fcn"),
    ]:
        cfg = load_config(["experiment=sharing_spectrum", f"spectrum={preset}"], validate=False)
        validate_config(cfg)
        assert cfg.model.name == model
        assert list(cfg.eval.variants) == ["clean", "translate", "quadrant_swap"]
    cfg = load_config(["experiment=sharing_spectrum", "spectrum=lowrank_r8"])
    assert cfg.model.rank == 8 and cfg.model.combining == "full"
