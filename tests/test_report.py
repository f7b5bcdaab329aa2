"""The sweep report: every table cell of a fake sweep with known numbers, failures, CLI.

The fake sweep (tests/fixtures/fake_sweep.py) writes metrics from closed formulas; the expected
medians here are recomputed from those formulas with :func:`statistics.median`, independently
of the pandas code under test, and a few cells are also checked against hand-computed literals.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from weightshare.errors import ConfigError
from weightshare.report import reference as reference_module
from weightshare.report import write_report
from weightshare.report.__main__ import main
from weightshare.report.budget import PROTOCOL_FILE, Protocol, budget_differences, budget_subtitles, load_protocol
from weightshare.report.collect import IDENTITY_FIELDS, expected_jobs, load_sweep, read_results
from weightshare.report.reference import default_reference_dir, load_reference
from weightshare.report.tables import TABLE_METRICS
from weightshare.results import SPECTRUM_FIELDS, aug_identity, find_jobs, run_identity

_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fake_sweep.py"
_spec = importlib.util.spec_from_file_location("ws_fake_sweep", _FIXTURE)
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)

FOLDS = (0, 1, 2)
MODELS = ("cnn", "fcn")
# the test's own paper values: (train, val, translation) and (val, translation) per cell
PAPER_TRANSLATE = {
    ("cnn", 0.0): (0.99, 0.90, 0.40),
    ("fcn", 0.0): (0.98, 0.80, 0.30),
    ("cnn", 0.1): (0.97, 0.88, 0.60),
    ("fcn", 0.1): (0.96, 0.78, 0.50),
}
PAPER_ROTATE = {
    ("cnn", 0.0): (0.91, 0.41),
    ("fcn", 0.0): (0.81, 0.31),
    ("cnn", 0.2): (0.85, 0.35),
    ("fcn", 0.2): (0.75, 0.25),
}
CONVENTION_EPOCHS = {"early_stopped": (2,), "last_epoch": (3,), "all_epochs": (0, 1, 2, 3)}


def write_reference(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["dataset,aug_type,aug,model,train_acc,val_acc,translation_acc"]
    lines += [f"mnist,translate,{lvl:.2f},{m},{t},{v},{tr}" for (m, lvl), (t, v, tr) in PAPER_TRANSLATE.items()]
    (directory / "paper_translation_tables.csv").write_text("\n".join(lines) + "\n")
    lines = ["aug_type,aug,model,mnist_val_acc,mnist_translation_acc,cifar10_val_acc,cifar10_translation_acc"]
    lines += [f"rotate,{lvl:.2f},{m},{v},{tr},0.5,0.2" for (m, lvl), (v, tr) in PAPER_ROTATE.items()]
    (directory / "paper_other_aug_tables.csv").write_text("\n".join(lines) + "\n")
    return directory


def expected_median(
    model: str, level: float, metric: str, convention: str, folds=FOLDS, connectivity: float = 0.0
) -> float:
    values = [
        fs.epoch_row(model, level, f, e, connectivity=connectivity)[metric]
        for f in folds
        for e in CONVENTION_EPOCHS[convention]
    ]
    return statistics.median(values)


def paper_value(aug_type: str, model: str, level: float, metric: str) -> float:
    if aug_type == "translate":
        index = {"train/acc": 0, "val/acc": 1, "val/translate/acc": 2}.get(metric)
        return math.nan if index is None else PAPER_TRANSLATE[(model, level)][index]
    index = {"val/acc": 0, "val/translate/acc": 1}.get(metric)
    return math.nan if index is None else PAPER_ROTATE[(model, level)][index]


@pytest.fixture(scope="module")
def sweep_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("sweeps")
    translate = fs.build_translate_sweep(root / "translate")
    rotate = fs.build_rotate_sweep_with_failures(root / "rotate")
    reference = write_reference(root / "reference")
    return translate, rotate, reference


@pytest.fixture(scope="module")
def report(sweep_dirs, tmp_path_factory):
    translate, rotate, reference = sweep_dirs
    out = tmp_path_factory.mktemp("report")
    return write_report([translate, rotate], out, reference_dir=reference, plots=False)


def test_fixture_best_epoch_is_two() -> None:
    # the conventions below rely on it: best val/acc at epoch 2, last epoch 3
    assert max(range(4), key=lambda e: fs.VAL_OFFSET[e]) == 2


@pytest.mark.parametrize("convention", ["early_stopped", "last_epoch", "all_epochs"])
@pytest.mark.parametrize(("aug_type", "levels"), [("translate", (0.0, 0.1)), ("rotate", (0.0, 0.2))])
def test_every_cell_of_every_table(report, convention: str, aug_type: str, levels: tuple[float, ...]) -> None:
    wide = pd.read_csv(report.out_dir / "tables" / f"mnist_{aug_type}_{convention}.csv")
    assert wide["level"].tolist() == pytest.approx(list(levels))
    expected_columns = {"level"}
    for model in MODELS:
        expected_columns |= {f"{model}/n"} | {f"{model}/{m}" for m in TABLE_METRICS}
        expected_columns |= {
            f"{model}/{m}/{k}" for m in ("train/acc", "val/acc", "val/translate/acc") for k in ("paper", "diff")
        }
    assert set(wide.columns) == expected_columns
    for row in wide.to_dict("records"):
        level = round(row["level"], 2)
        for model in MODELS:
            assert row[f"{model}/n"] == 3  # the failed/corrupt/missing rotate folds do not count
            for metric in TABLE_METRICS:
                measured = expected_median(model, level, metric, convention)
                assert row[f"{model}/{metric}"] == pytest.approx(measured, abs=1e-12), (model, level, metric)
                if f"{model}/{metric}/paper" in row:
                    paper = paper_value(aug_type, model, level, metric)
                    got_paper, got_diff = row[f"{model}/{metric}/paper"], row[f"{model}/{metric}/diff"]
                    assert math.isnan(got_diff)  # 3 of the protocol's 5 folds: not comparable
                    if math.isnan(paper):
                        assert math.isnan(got_paper)
                    else:
                        assert got_paper == pytest.approx(paper)
                        long = report.long
                        hit = long[
                            (long["convention"] == convention)
                            & (long["aug_type"] == aug_type)
                            & ((long["level"] - level).abs() < 1e-9)
                            & (long["model"] == model)
                            & (long["metric"] == metric)
                        ]
                        assert len(hit) == 1 and not hit["comparable"].iloc[0]
                        assert hit["diff"].iloc[0] == pytest.approx(measured - paper, abs=1e-12)


def test_hand_computed_cells(report) -> None:
    long = pd.read_csv(report.out_dir / "tables" / "all_long.csv")

    def cell(convention, aug_type, level, model, metric):
        hit = long[
            (long["convention"] == convention)
            & (long["aug_type"] == aug_type)
            & (long["level"].round(2) == level)
            & (long["model"] == model)
            & (long["metric"] == metric)
        ]
        assert len(hit) == 1
        return hit.iloc[0]

    # CNN, translate 0.1, val/acc at the best epoch: folds 0.855, 0.865, 0.905 -> median 0.865 (mean 0.875)
    row = cell("early_stopped", "translate", 0.1, "cnn", "val/acc")
    assert (row["median"], row["min"], row["max"]) == pytest.approx((0.865, 0.855, 0.905))
    assert (row["paper"], row["diff"]) == pytest.approx((0.88, -0.015))
    assert (row["n_jobs"], row["n_values"]) == (3, 3)
    # CNN level 0 over all 12 epoch rows: .80 .81 .83 .84 .84 .85 .85 .85 .86 .88 .89 .90 -> 0.85
    row = cell("all_epochs", "translate", 0.0, "cnn", "val/acc")
    assert row["median"] == pytest.approx(0.85)
    assert (row["n_jobs"], row["n_values"]) == (3, 12)
    # FCN rotate 0.2, last epoch translate-val: base 0.71 + 0.01 (fold 1) - 0.4 + 0.03 = 0.35; paper 0.25
    row = cell("last_epoch", "rotate", 0.2, "fcn", "val/translate/acc")
    assert (row["median"], row["diff"]) == pytest.approx((0.35, 0.10))
    md = (report.out_dir / "report.md").read_text()
    assert "0.8650 (0.8800, n/c)" in md  # 3 of 5 folds: the paper's number, no difference


def test_level_zero_is_shared_by_every_aug_type(report) -> None:
    long = report.long
    zero = long[long["level"] == 0]
    assert set(zero["aug_type"]) == {"translate", "rotate"}
    translate = zero[zero["aug_type"] == "translate"].set_index(["convention", "model", "metric"])["median"]
    rotate = zero[zero["aug_type"] == "rotate"].set_index(["convention", "model", "metric"])["median"]
    pd.testing.assert_series_equal(translate.sort_index(), rotate.sort_index())
    # but each table's 0.00 row is compared with that table's own paper value
    paper = zero.set_index(["convention", "aug_type", "model", "metric"])["paper"]
    assert paper[("early_stopped", "translate", "cnn", "val/acc")] == pytest.approx(0.90)
    assert paper[("early_stopped", "rotate", "cnn", "val/acc")] == pytest.approx(0.91)
    jobs = report.sweep.jobs
    assert set(jobs.loc[jobs["aug_level"] == 0, "aug_type"]) == {"none"}


def test_level_zero_only_gets_a_none_table(tmp_path: Path) -> None:
    sweep = fs.build_translate_sweep(tmp_path / "zero", levels=(0.0,))
    reference = write_reference(tmp_path / "ref")
    result = write_report([sweep], reference_dir=reference, plots=False)
    assert result.out_dir == sweep / "report"
    wide = pd.read_csv(sweep / "report" / "tables" / "mnist_none_early_stopped.csv")
    assert wide["level"].tolist() == [0.0]
    expected = expected_median("cnn", 0.0, "val/acc", "early_stopped")
    assert wide["cnn/val/acc"].iloc[0] == pytest.approx(expected)
    assert wide["cnn/val/acc/paper"].iloc[0] == pytest.approx(0.90)  # the translate table's 0.00 row


def test_failures_are_listed_and_the_rest_renders(report) -> None:
    failures = pd.read_csv(report.out_dir / "failures.csv")
    by_dir = {Path(d).name: row for d, row in zip(failures["job_dir"], failures.to_dict("records"))}
    assert set(by_dir) == {"3", "4", "8", "9"}
    assert by_dir["3"]["status"] == "failed" and "CUDA out of memory" in by_dir["3"]["error"]
    assert by_dir["4"]["status"] == "corrupt" and "results.json unreadable" in by_dir["4"]["error"]
    assert by_dir["8"]["status"] == "missing" and "no results.json" in by_dir["8"]["error"]
    assert by_dir["9"]["status"] == "missing" and "never created" in by_dir["9"]["error"]
    # identities from the Hydra config / overrides where results.json is unusable
    assert (by_dir["4"]["model"], by_dir["4"]["fold"]) == ("cnn", 4)
    assert (by_dir["8"]["model"], by_dir["8"]["aug_type"], by_dir["8"]["fold"]) == ("fcn", "rotate", 3)
    assert by_dir["9"]["overrides"] == "model=fcn aug.rotate=0.2 data.fold=4"
    md = (report.out_dir / "report.md").read_text()
    section = md.split("## Missing or failed jobs")[1]
    for name, status in (("3", "failed"), ("4", "corrupt"), ("8", "missing"), ("9", "missing")):
        assert f"| {status} | `rotate/{name}` |" in section
    assert "## mnist · rotate" in md and "## mnist · translate" in md
    for label in ("early-stopped", "last-epoch", "all-epochs"):
        assert md.count(f"### {label} convention") == 2


def test_expected_jobs_follow_hydra_numbering(sweep_dirs) -> None:
    translate, rotate, _ = sweep_dirs
    jobs, note = expected_jobs(translate / "multirun.yaml")
    assert note is None
    assert [p.name for p, _ in jobs] == [str(i) for i in range(12)]
    assert jobs[7][1] == ["model=fcn", "aug.translate=0.0", "data.fold=1"]
    assert json.loads((translate / "7" / "results.json").read_text())["identity"]["fold"] == 1
    assert len(expected_jobs(rotate / "multirun.yaml")[0]) == 10


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: text.replace("data.fold=0,1,2", "data.fold=range(0,"), "OverrideParseException"),
        (lambda text: "hydra: [unclosed\n", "ParserError"),
        (lambda text: "just text\n", "no hydra section"),
    ],
)
def test_unlistable_expected_jobs_leave_a_note(tmp_path: Path, edit, reason: str) -> None:
    sweep = fs.build_translate_sweep(tmp_path / "s", models=("cnn",), levels=(0.1,))
    (sweep / "2").rename(tmp_path / "gone")  # a never-created job that only multirun.yaml could reveal
    path = sweep / "multirun.yaml"
    path.write_text(edit(path.read_text()))
    jobs, note = expected_jobs(path)
    assert jobs == []
    assert note.startswith(f"could not list the expected jobs of {sweep}: ") and reason in note
    result = write_report([sweep], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    assert result.sweep.notes == [note]
    assert len(result.sweep.jobs) == 2  # the jobs that exist still count; job 2 cannot be known
    section = (result.out_dir / "report.md").read_text().split("## Missing or failed jobs")[1]
    assert f"- {note}" in section and "Missing-job detection is incomplete" in section


def test_other_sweepers_have_no_expected_jobs_and_no_note(tmp_path: Path) -> None:
    sweep = fs.build_translate_sweep(tmp_path / "s", models=("cnn",), levels=(0.1,), folds=(0,))
    path = sweep / "multirun.yaml"
    path.write_text(
        path.read_text().replace(
            "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
            "hydra_plugins.weightshare_optuna_sweeper.OptunaSweeper",
        )
    )
    assert expected_jobs(path) == ([], None)
    result = write_report([sweep], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    assert result.sweep.notes == []
    assert "Missing-job detection" not in (result.out_dir / "report.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"status": "compl', "Unterminated string"),
        ("[1, 2]", "not an object"),
        ('{"status": "exploded", "identity": {"data": "mnist", "model": "cnn"}}', "'exploded'"),
        ('{"status": "completed"}', "no identity"),
        ("", "Expecting value"),
    ],
)
def test_malformed_results_are_corrupt(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "results.json").write_text(text)
    row = read_results(tmp_path)
    assert row["status"] == "corrupt"
    assert message in row["error"]


def test_missing_metrics_and_partial_best_are_handled(tmp_path: Path) -> None:
    a = fs.write_job(tmp_path / "s" / "0", "cnn", 0.1, 0, "translate")
    b = fs.write_job(tmp_path / "s" / "1", "cnn", 0.1, 1, "translate")
    (a / "metrics.csv").unlink()
    payload = json.loads((b / "results.json").read_text())
    del payload["best"]["val/rotate/acc"]  # results.json lacks a metric: taken from metrics.csv row 2
    (b / "results.json").write_text(json.dumps(payload))
    with open(b / "metrics.csv", "a") as handle:
        handle.write("3,40,0.5")  # a last line cut short by a crash: epoch, step, lr
    sweep = load_sweep([tmp_path / "s"])
    jobs = sweep.jobs.set_index(sweep.jobs["job_dir"].map(lambda d: Path(d).name))
    expected = fs.epoch_row("cnn", 0.1, 1, 2)["val/rotate/acc"]
    assert jobs.loc["1", "best/val/rotate/acc"] == pytest.approx(expected)
    assert "no metrics.csv" in jobs.loc["0", "note"]
    epochs = sweep.epochs
    assert sorted(epochs["epoch"]) == [0, 1, 2, 3]  # job 1 only; its duplicated epoch 3 keeps the last row
    last = epochs[epochs["epoch"] == 3].iloc[0]
    assert last["lr"] == pytest.approx(0.5) and math.isnan(last["val/acc"])
    result = write_report([tmp_path / "s"], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    long = result.long.set_index(["convention", "model", "metric"])
    assert long.loc[("early_stopped", "cnn", "val/acc"), "n_jobs"] == 2
    assert long.loc[("all_epochs", "cnn", "val/acc"), "n_jobs"] == 1
    assert "no metrics.csv" in (result.out_dir / "report.md").read_text()


def test_other_settings_get_their_own_table(tmp_path: Path) -> None:
    fs.build_translate_sweep(tmp_path / "s", levels=(0.1,), folds=(0,))
    job = fs.write_job(tmp_path / "s" / "tiled", "fcn", 0.1, 0, "translate")
    payload = json.loads((job / "results.json").read_text())
    payload["identity"]["share_tile"] = 2
    (job / "results.json").write_text(json.dumps(payload))
    result = write_report([tmp_path / "s"], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    paper_table = pd.read_csv(result.out_dir / "tables" / "mnist_translate_early_stopped.csv")
    tiled_table = pd.read_csv(result.out_dir / "tables" / "mnist_translate_share_tile-2_early_stopped.csv")
    assert paper_table["fcn/n"].tolist() == [1] and tiled_table["fcn/n"].tolist() == [1]
    assert "## mnist · translate · share_tile=2" in (result.out_dir / "report.md").read_text()
    assert result.vcp_groups == []


def test_divergence_folds_are_pooled(tmp_path: Path) -> None:
    sweep = fs.build_divergence_sweep(tmp_path / "div", levels=(0.0, 0.5), folds=(0, 1))
    init_from = {json.loads((sweep / str(n) / "results.json").read_text())["identity"]["init_from"] for n in range(4)}
    assert len(init_from) == 4  # every fold has its own checkpoint path
    result = write_report([sweep], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    jobs = result.sweep.jobs
    assert len(jobs) == 4  # the nested cnn_stage/ jobs are not jobs of the sweep
    assert set(jobs["setting"]) == {"init_from=cnn"}
    assert set(jobs["init_from"]) == init_from  # the path itself stays in the identity column
    wide = pd.read_csv(result.out_dir / "tables" / "mnist_noise_init_from-cnn_early_stopped.csv")
    assert wide["level"].tolist() == pytest.approx([0.0, 0.5])
    assert wide["fcn/n"].tolist() == [2, 2]
    for row, level in zip(wide.to_dict("records"), (0.0, 0.5)):
        assert row["fcn/val/acc"] == pytest.approx(
            expected_median("fcn", level, "val/acc", "early_stopped", folds=(0, 1))
        )
    # fcn noise 0.5, best epoch: folds 0 and 1 -> 0.70 + 0.025 + 0.05 + (0, 0.01) -> median 0.78
    assert wide["fcn/val/acc"].iloc[1] == pytest.approx(0.78)
    md = (result.out_dir / "report.md").read_text()
    assert md.count("## mnist · noise · init_from=cnn") == 1 and "cnn_stage" not in md


def test_vcp_view(tmp_path: Path) -> None:
    """Figures C.1-C.2 as a table: FCN at 3 connectivity values x 3 folds, the CNN reference at 0."""
    root = tmp_path / "sweeps"
    fs.build_vcp_sweep(root / "vcp", connectivities=(0.0, 0.5, 0.9), level=0.3)
    fs.build_translate_sweep(root / "translate", models=("cnn",), levels=(0.3,))
    # same connectivity, another depth: a different experiment, not part of the view
    fs.write_job(root / "depth2" / "0", "fcn", 0.3, 0, "translate", connectivity=0.5, depth=2)
    result = write_report([root], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    assert [tuple(g) for g in result.vcp_groups] == [("mnist", "", "translate", 0.3)]
    for convention in ("early_stopped", "last_epoch", "all_epochs"):
        wide = pd.read_csv(result.out_dir / "tables" / f"vcp_mnist_translate_0.30_{convention}.csv")
        assert wide["connectivity"].tolist() == pytest.approx([0.0, 0.5, 0.9])
        assert wide["fcn/n"].tolist() == [3, 3, 3]
        assert wide["cnn/n"].fillna(0).tolist() == [3, 0, 0]
        for row in wide.to_dict("records"):
            c = row["connectivity"]
            for metric in TABLE_METRICS:
                expected = expected_median("fcn", 0.3, metric, convention, connectivity=c)
                assert row[f"fcn/{metric}"] == pytest.approx(expected, abs=1e-12), (c, metric)
                cnn = row[f"cnn/{metric}"]
                if c == 0:
                    assert cnn == pytest.approx(expected_median("cnn", 0.3, metric, convention), abs=1e-12)
                else:
                    assert math.isnan(cnn)
    wide = pd.read_csv(result.out_dir / "tables" / "vcp_mnist_translate_0.30_early_stopped.csv")
    # FCN, 50% removed, best epoch, fold 1: 0.70 + 0.015 + 0.01 - 0.2 * 0.5 + 0.05 = 0.675
    assert wide["fcn/val/acc"].iloc[1] == pytest.approx(0.675)
    md = (result.out_dir / "report.md").read_text()
    assert "## mnist · VCP · translate 0.30" in md
    assert "| 0.50 | 3 | 0.6950 | 0.6750 |" in md  # connectivity, FCN n, train, val
    # the single-connectivity tables are folded into the view; the paper's table and the depth-2 one stay
    assert "## mnist · translate · connectivity=0.5" not in md
    assert "## mnist · translate · connectivity=0.9" not in md
    assert "## mnist · translate\n" in md and "## mnist · translate · depth=2,connectivity=0.5" in md
    assert (result.out_dir / "tables" / "mnist_translate_connectivity-0.5_early_stopped.csv").is_file()
    long = pd.read_csv(result.out_dir / "tables" / "vcp_long.csv")
    assert set(long["model"]) == {"cnn", "fcn"} and set(long["connectivity"]) == {0.0, 0.5, 0.9}


def test_a_learning_rate_search_is_not_pooled(tmp_path: Path) -> None:
    for fold, lr in ((0, 1e-3), (1, 1e-3), (0, 1e-4)):
        job = fs.write_job(tmp_path / "s" / f"{fold}-{lr}", "cnn", 0.1, fold, "translate")
        payload = json.loads((job / "results.json").read_text())
        payload["identity"]["lr"] = lr
        (job / "results.json").write_text(json.dumps(payload))
    result = write_report([tmp_path / "s"], plots=False, reference_dir=write_reference(tmp_path / "ref"))
    assert sorted(set(result.long["setting"])) == ["lr=0.0001", "lr=0.001"]
    high = pd.read_csv(result.out_dir / "tables" / "mnist_translate_lr-0.001_early_stopped.csv")
    assert high["cnn/n"].tolist() == [2]
    # one learning rate for the whole data set (the protocol) adds no label
    only = fs.write_job(tmp_path / "one" / "0", "cnn", 0.1, 0, "translate")
    payload = json.loads((only / "results.json").read_text())
    payload["identity"]["lr"] = 1e-3
    (only / "results.json").write_text(json.dumps(payload))
    assert load_sweep([tmp_path / "one"]).jobs["setting"].tolist() == [""]


def test_duplicate_folds_are_counted_and_warned(sweep_dirs, tmp_path: Path) -> None:
    translate, _, reference = sweep_dirs
    shutil.copytree(translate / "4", tmp_path / "rerun" / "4")  # cnn 0.1 fold 1 once more
    result = write_report([translate, tmp_path / "rerun"], tmp_path / "out", reference_dir=reference, plots=False)
    wide = pd.read_csv(tmp_path / "out" / "tables" / "mnist_translate_early_stopped.csv")
    assert wide["cnn/n"].tolist() == [3, 4]
    # folds 0, 1, 1, 2 -> median of 0.855, 0.865, 0.865, 0.905
    assert wide["cnn/val/acc"].iloc[1] == pytest.approx(0.865)
    assert "## Warnings" in (result.out_dir / "report.md").read_text()


def test_aug_type_rule() -> None:
    # one rule for results.json and for a failed job's saved config; a missing type is level 0
    assert aug_identity({"translate": 0.0, "rotate": 0.0}) == ("none", 0.0)
    assert aug_identity({"noise": 0.3}) == ("noise", 0.3)
    assert aug_identity({"translate": 0.1, "rotate": 0.2, "noise": None}) == ("mixed", None)


def test_find_jobs_is_the_one_walk_of_a_sweep(tmp_path: Path) -> None:
    """Jobs in natural order; a job's cnn_stage/ and hidden folders are not walked; multirun.yaml found."""
    root = fs.build_divergence_sweep(tmp_path / "div", levels=(0.0, 0.1, 0.2, 0.3), folds=(0, 1, 2))
    (root / "12" / ".hydra").mkdir(parents=True)  # a job Hydra started, that wrote nothing else yet
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "results.json").write_text("{}")
    jobs, multiruns = find_jobs(root)
    assert [p.name for p in jobs] == [str(n) for n in range(13)]  # 0, 1, 2, ..., 10, 11, 12
    assert multiruns == [root / "multirun.yaml"]
    assert find_jobs(root / "3") == ([root / "3"], [])  # a run directory is its own one job
    # the report reads exactly these jobs (plus never-created ones multirun.yaml lists)
    sweep = load_sweep([root])
    found = sweep.jobs[sweep.jobs["error"] != "job directory never created (listed by multirun.yaml)"]
    assert sorted(found["job_dir"]) == sorted(str(p.resolve()) for p in jobs)


def test_identity_of_a_job_without_results_comes_from_run_identity(tmp_path: Path) -> None:
    """A .hydra/config.yaml (unresolved: lr is an interpolation) gives run_identity's fields."""
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        "seed: 7\ndata: {name: mnist, split: kfold, fold: 3, lr: 0.05}\n"
        "model: {name: fcn, depth: 3, arch: null, connectivity: 0.5, share_tile: null, share_penalty: 0.0,"
        " init_from: null}\noptimizer: {name: sgd, lr: '${data.lr}'}\ndivergence: {cnn_epochs: 2}\n"
        "aug: {translate: 0.1, rotate: 0.0, noise: 0.0, edge_noise: 0.0}\n"
    )
    row = read_results(job)
    assert row["status"] == "missing"
    expected = dict(
        data="mnist", model="fcn", depth=3, arch=None, split="kfold", fold=3, aug_type="translate",
        aug_level=0.1, connectivity=0.5, share_tile=None, share_penalty=0.0, lr=0.05, optimizer="sgd",
        seed=7, init_from="cnn_stage",
    )  # fmt: skip
    assert {k: row[k] for k in IDENTITY_FIELDS if k in row} == expected
    # run_identity's fields, and the sharing-spectrum fields that only runs using them have
    assert set(IDENTITY_FIELDS) == set(run_identity({})) - {"aug"} | set(SPECTRUM_FIELDS)
    # a value of the wrong type is no identity (and no crash)
    (job / ".hydra" / "config.yaml").write_text("model: {name: fcn, connectivity: lots}\n")
    assert "model" not in read_results(job)


def test_paper_numbers_ship_with_the_package() -> None:
    # package data beside the module, not the development checkout's ../shared
    directory = default_reference_dir()
    assert directory == Path(reference_module.__file__).resolve().parent / "reference_data"
    assert "shared" not in directory.parts
    for name in ("paper_translation_tables.csv", "paper_other_aug_tables.csv", "README.md", PROTOCOL_FILE):
        assert (directory / name).is_file(), name
    ref = load_reference().set_index(["data", "aug_type", "level_key", "model", "metric"])["paper"]
    assert ref[("mnist", "translate", 10, "cnn", "val/acc")] == pytest.approx(0.993071)
    assert ref[("mnist", "translate", 10, "fcn", "train/acc")] == pytest.approx(0.995665)
    assert ref[("mnist", "edge_noise", 10, "cnn", "val/acc")] == pytest.approx(0.99100)
    assert ref[("cifar10", "edge_noise", 0, "fcn", "val/translate/acc")] == pytest.approx(0.43347)
    assert load_protocol()[("mnist", "kfold")] == Protocol("mnist", "kfold", 250, 50, 5)
    assert load_protocol()[("cifar10", "standard")] == Protocol("cifar10", "standard", 200, 50, 1)


def test_report_of_a_sweep_without_shared_shows_the_paper(tmp_path: Path) -> None:
    """A sweep far from any ../shared, no --reference-dir: the cells carry the paper's numbers."""
    sweep = fs.build_translate_sweep(tmp_path / "clone" / "multirun", folds=(0, 1, 2, 3, 4))
    report = write_report([sweep], tmp_path / "out", plots=False)
    long = report.long
    cell = long[
        (long["convention"] == "early_stopped")
        & (long["aug_type"] == "translate")
        & (long["level"] == 0.1)
        & (long["model"] == "cnn")
        & (long["metric"] == "val/acc")
    ].iloc[0]
    measured = expected_median("cnn", 0.1, "val/acc", "early_stopped", folds=(0, 1, 2, 3, 4))
    assert cell["paper"] == pytest.approx(0.993071)
    assert bool(cell["comparable"]) and cell["diff"] == pytest.approx(measured - 0.993071)
    text = (report.out_dir / "report.md").read_text()
    assert f"{measured:.4f} (0.9931, {measured - 0.993071:+.4f})" in text
    assert "shipped with the package" in text
    assert "Reduced budget" not in text  # the protocol's budget and all 5 folds


def test_reduced_budget_banner_and_not_comparable(tmp_path: Path) -> None:
    """3,000 images, 2 epochs, patience 5, one fold: a banner, n/c instead of differences, subtitles."""
    budget = {
        "data.limit_train": 3000,
        "data.limit_val": 1000,
        "trainer.max_epochs": 2,
        "callbacks.early_stopping.patience": 5,
    }
    sweep = fs.build_translate_sweep(tmp_path / "small", folds=(0,), budget=budget, n_epochs=2)
    report = write_report([sweep], tmp_path / "out", plots=True, fd_layers="first")
    assert [d.short for d in report.budget] == [
        "limit_train=3000",
        "limit_val=1000",
        "max_epochs=2",
        "patience=5",
        "folds 1/5",
    ]
    text = (report.out_dir / "report.md").read_text()
    banner = text[: text.index("Generated")]
    assert "Reduced budget" in banner
    for line in (
        "training examples limited to 3000 (`data.limit_train`; protocol: the whole training set)",
        "validation examples limited to 1000 (`data.limit_val`",
        "at most 2 epochs (`trainer.max_epochs`; protocol: up to 250)",
        "early-stopping patience 5 (`callbacks.early_stopping.patience`; protocol: 50)",
        "folds 0 only, 1 of 5 (`data.fold`",
    ):
        assert line in banner, line
    assert not report.long["comparable"].any()
    long = report.long
    measured = long[
        (long["convention"] == "early_stopped")
        & (long["level"] == 0.1)
        & (long["model"] == "cnn")
        & (long["metric"] == "val/acc")
    ]["median"].iloc[0]
    assert measured == pytest.approx(fs.epoch_row("cnn", 0.1, 0, 1)["val/acc"])  # 2 epochs: the best is epoch 1
    assert f"{measured:.4f} (0.9931, n/c)" in text
    wide = pd.read_csv(report.out_dir / "tables" / "mnist_translate_early_stopped.csv")
    assert wide["cnn/val/acc/paper"].notna().all() and wide["cnn/val/acc/diff"].isna().all()
    # the same list under every figure's title
    from weightshare.report.figures import sweep_figures

    subtitles = budget_subtitles(report.budget)
    figures = dict(sweep_figures(report.sweep.jobs, report.sweep.epochs, subtitles=subtitles))
    assert figures
    for name, fig in figures.items():
        titles = [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]
        assert any(subtitles["mnist"] in " ".join(t.split()) for t in titles), name
    assert subtitles["mnist"].endswith("limit_train=3000, limit_val=1000, max_epochs=2, patience=5, folds 1/5")


def test_budget_of_a_job_without_config_is_unknown_not_a_difference(tmp_path: Path) -> None:
    sweep = fs.build_translate_sweep(tmp_path / "old", models=("cnn",), levels=(0.0,), folds=(0, 1, 2, 3, 4))
    for job in sweep.iterdir():
        if (job / "results.json").is_file():
            payload = json.loads((job / "results.json").read_text())
            payload.pop("config")
            (job / "results.json").write_text(json.dumps(payload))
    report = write_report([sweep], tmp_path / "out", plots=False)
    assert report.budget == [] and report.n_unknown_budget == 5
    assert "5 completed job(s) record no config" in (report.out_dir / "report.md").read_text()
    assert report.long["comparable"].all()


def test_budget_early_stopping_off_and_batch_limits(tmp_path: Path) -> None:
    budget = {"callbacks.early_stopping.enabled": False, "trainer.limit_train_batches": 0.25}
    sweep = fs.build_translate_sweep(
        tmp_path / "s", models=("cnn",), levels=(0.0,), folds=(0, 1, 2, 3, 4), budget=budget
    )
    differences = budget_differences(load_sweep([sweep]).jobs)
    assert [(d.key, d.what) for d in differences] == [
        ("trainer.limit_train_batches", "training batches limited to 0.25"),
        ("callbacks.early_stopping.enabled", "early stopping off"),
    ]


@pytest.fixture(scope="module")
def grid_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = fs.build_search(tmp_path_factory.mktemp("search") / "grid", pruned=(11,))
    return root


def test_search_report_of_a_grid(grid_search: Path, tmp_path: Path) -> None:
    report = write_report([grid_search], tmp_path / "out", plots=True)
    assert len(report.searches) == 1
    search = report.searches[0]
    trials = search.trials
    # sorted by objective, best first; the pruned trial after the complete ones
    complete = trials[trials["state"] == "COMPLETE"]
    assert list(complete["objective"]) == sorted(complete["objective"], reverse=True)
    assert trials.iloc[0][["optimizer.lr", "model.depth", "model"]].tolist() == [1e-3, 3, "cnn"]
    assert trials.iloc[0]["objective"] == pytest.approx(fs.grid_objective("cnn", 3, 1e-3))
    assert trials.iloc[-1]["state"] == "PRUNED" and trials.iloc[-1]["trial"] == 11
    text = (report.out_dir / "report.md").read_text()
    assert "## Search: train-fakesearch" in text
    assert "### The grid: learning rate x depth x model" in text
    assert "| lr | CNN depth 2 | CNN depth 3 | FCN depth 2 | FCN depth 3 |" in text
    row = f"| 0.001 | {fs.grid_objective('cnn', 2, 1e-3):.4f} | {fs.grid_objective('cnn', 3, 1e-3):.4f} |"
    assert row in text
    grid = pd.read_csv(report.out_dir / "tables" / "search_train-fakesearch_grid.csv")
    assert grid["lr"].tolist() == [1e-2, 1e-3, 1e-4]
    assert grid.iloc[2].tolist()[1:] == [
        pytest.approx(fs.grid_objective("cnn", 2, 1e-4)),
        pytest.approx(fs.grid_objective("cnn", 3, 1e-4)),
        pytest.approx(fs.grid_objective("fcn", 2, 1e-4)),
        "pruned",  # trial 11: fcn, depth 3, lr 1e-4
    ]
    assert "Paper (Appendix A), best point on mnist: CNN depth 3, lr 0.001: 0.9932" in text
    # Optuna's own figures, and none of the per-trial tables and figures
    names = sorted(p.name for p in (report.out_dir / "plots").iterdir())
    assert names == [
        f"search_train-fakesearch_{stem}.png"
        for stem in ("contour_lr_depth", "optimization_history", "param_importances", "slice")
    ]
    assert "## mnist" not in text and not report.tables
    assert "pruned" not in report.failures["status"].tolist()  # a pruned trial is no failure
    assert "pruned trials of a search: 1" in text
    assert "Reduced budget" not in text  # the search's own protocol: standard split, 100 epochs, patience 25


def test_search_per_trial_and_a_tpe_search(tmp_path: Path) -> None:
    root, _ = fs.build_search(tmp_path / "tpe", lrs=(3e-3, 1e-3), depths=(2, 3), models=("fcn",), categorical_lr=False)
    report = write_report([root], tmp_path / "out", plots=False)
    text = (report.out_dir / "report.md").read_text()
    assert "## Search: train-fakesearch" in text and "### The grid" not in text  # lr is no grid here
    per_trial = write_report([root], tmp_path / "per_trial", plots=False, per_trial=True)
    assert per_trial.tables and "## mnist" in (per_trial.out_dir / "report.md").read_text()


def test_search_with_its_storage_gone(tmp_path: Path) -> None:
    """A moved sweep directory still finds optuna.db beside its jobs; without it, the jobs alone."""
    original, _ = fs.build_search(tmp_path / "original", lrs=(1e-3,), depths=(3,))
    moved = tmp_path / "moved"
    original.rename(moved)
    report = write_report([moved], tmp_path / "out", plots=False)
    search = report.searches[0]
    assert search.study is not None and len(search.trials) == 2
    assert search.trials["objective"].tolist() == pytest.approx(
        [fs.grid_objective("cnn", 3, 1e-3), fs.grid_objective("fcn", 3, 1e-3)]
    )
    (moved / "optuna.db").unlink()
    report = write_report([moved], tmp_path / "out2", plots=False)
    search = report.searches[0]
    assert search.study is None and "not found" in search.problem
    assert search.trials["trial"].tolist() == [0, 1] and search.trials["state"].tolist() == ["COMPLETED"] * 2
    assert "not found" in (report.out_dir / "report.md").read_text()
    assert not list(tmp_path.rglob("*.db")) and not original.exists()  # a report never creates a storage


def test_reference_dir_given_but_absent_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--reference-dir"):
        load_reference(tmp_path / "nope", required=True)
    assert load_reference(tmp_path / "nope").empty


def test_cli(sweep_dirs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    translate, rotate, reference = sweep_dirs
    out = tmp_path / "cli"
    assert main([str(translate), str(rotate), "--out", str(out), "--reference-dir", str(reference), "--no-plots"]) == 0
    assert "22 jobs (18 completed, 4 missing, failed or flagged)" in capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "failures.csv").is_file()
    assert not (out / "plots").exists()
    assert main([str(translate), "--out", str(out), "--reference-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reference-dir" in err
    assert main([str(tmp_path / "no_such_sweep")]) == 2
    assert "no_such_sweep" in capsys.readouterr().err


def test_220_job_sweep(tmp_path: Path) -> None:
    """The paper's Table 1 and 2 sweeps at full size (2 x 11 levels x 2 models x 5 folds)."""
    levels = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)
    for data in ("mnist", "cifar10"):
        fs.build_translate_sweep(tmp_path / data, levels=levels, folds=(0, 1, 2, 3, 4), data=data, n_epochs=20)
    result = write_report([tmp_path], reference_dir=write_reference(tmp_path / "ref"))
    assert len(result.sweep.jobs) == 220 and result.failures.empty
    plots = sorted(p.name for p in result.files if p.suffix == ".png")
    assert plots == sorted(
        f"{kind}_{data}{suffix}.png"
        for kind, suffix in (
            ("accuracy", "_translate"),
            ("filter_distance", "_translate_fcn_conv1"),  # every free layer by default
            ("filter_distance", "_translate_fcn_conv2"),
            ("quadrant_swap", ""),
        )
        for data in ("cifar10", "mnist")
    )
    assert result.vcp_groups == [] and result.sweep.notes == []
    for data in ("mnist", "cifar10"):
        for convention in ("early_stopped", "last_epoch", "all_epochs"):
            wide = pd.read_csv(tmp_path / "report" / "tables" / f"{data}_translate_{convention}.csv")
            assert wide["level"].tolist() == pytest.approx(list(levels))
            assert (wide["cnn/n"] == 5).all() and (wide["fcn/n"] == 5).all()
    wide = pd.read_csv(tmp_path / "report" / "tables" / "cifar10_translate_early_stopped.csv")
    # fold offsets 0, .01, .05, .02, .03 -> median .02; 0.70 + 0.05 * 0.99 + 0.02 + 0.05
    assert wide["fcn/val/acc"].iloc[-1] == pytest.approx(0.8195)


def test_standard_split_tables_are_not_compared_with_the_k_fold_paper(tmp_path: Path) -> None:
    budget = {"data.split": "standard", "trainer.max_epochs": 100, "callbacks.early_stopping.patience": 25}
    sweep = fs.build_translate_sweep(tmp_path / "std", models=("cnn",), levels=(0.0, 0.1), folds=(0,), budget=budget)
    report = write_report([sweep], tmp_path / "out", plots=False)
    # the search's budget (100 epochs, patience 25) is right for the standard split; the split is not
    assert [(d.key, d.short) for d in report.budget] == [("data.split", "split=standard")]
    assert not report.long["comparable"].any()
    assert "the standard split in the tables" in (report.out_dir / "report.md").read_text()
