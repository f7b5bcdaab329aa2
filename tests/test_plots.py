"""Figures from run directories: files are real PNGs of sensible size, and draw the right numbers.

The fake sweep (tests/fixtures/fake_sweep.py) has closed-form metrics; the plotted line data is
compared with medians recomputed from those formulas with :func:`statistics.median`.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import matplotlib.image
import pytest

from weightshare.errors import ConfigError
from weightshare.report.collect import load_sweep
from weightshare.report.figure_style import INIT_X
from weightshare.report.figures import fd_columns, plot_sweep, sweep_figures
from weightshare.report.figures_runs import plot_run, run_figures

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ws_fake_sweep", _HERE / "fixtures" / "fake_sweep.py")
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000, (path, path.stat().st_size)
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert height > 300 and width > 300, (path, image.shape)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sweep")
    fs.build_translate_sweep(root / "translate")
    fs.build_rotate_sweep_with_failures(root / "rotate")
    return load_sweep([root])


@pytest.fixture(scope="module")
def figures(sweep):
    return dict(sweep_figures(sweep.jobs, sweep.epochs))


def line(ax, label: str):
    matches = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(matches) == 1, [ln.get_label() for ln in ax.get_lines()]
    return matches[0]


def test_plot_sweep_writes_valid_pngs(sweep, tmp_path: Path) -> None:
    paths = plot_sweep(sweep.jobs, sweep.epochs, tmp_path, fd_layers="all")
    assert {p.name for p in paths} == {
        "accuracy_mnist_translate.png",
        "accuracy_mnist_rotate.png",
        "quadrant_swap_mnist.png",
        "filter_distance_mnist_translate_fcn_conv1.png",
        "filter_distance_mnist_translate_fcn_conv2.png",
        "filter_distance_mnist_rotate_fcn_conv1.png",
        "filter_distance_mnist_rotate_fcn_conv2.png",
    }
    for path in paths:
        assert path.parent == tmp_path
        assert_valid_png(path)


def test_every_free_layer_by_default(sweep, figures) -> None:
    assert sorted(figures) == [
        "accuracy_mnist_rotate.png",
        "accuracy_mnist_translate.png",
        "filter_distance_mnist_rotate_fcn_conv1.png",
        "filter_distance_mnist_rotate_fcn_conv2.png",
        "filter_distance_mnist_translate_fcn_conv1.png",
        "filter_distance_mnist_translate_fcn_conv2.png",
        "quadrant_swap_mnist.png",
    ]
    first = dict(sweep_figures(sweep.jobs, sweep.epochs, fd_layers="first"))  # the paper's Figure 5 only
    assert sorted(n for n in first if n.startswith("filter_distance")) == [
        "filter_distance_mnist_rotate_fcn_conv1.png",
        "filter_distance_mnist_translate_fcn_conv1.png",
    ]


def test_accuracy_figure_draws_fold_medians(figures) -> None:
    ax = figures["accuracy_mnist_rotate.png"].axes[0]
    assert "rotate" in ax.get_xlabel()
    for model in ("cnn", "fcn"):
        for label, metric in (
            ("validation", "val/acc"),
            ("translated validation", "val/translate/acc"),
            ("train", "train/acc"),
        ):
            drawn = line(ax, f"{model.upper()} {label}")
            assert list(drawn.get_xdata()) == pytest.approx([0.0, 0.2])  # level 0 shared into rotate
            expected = [
                statistics.median(fs.epoch_row(model, level, f, 2)[metric] for f in (0, 1, 2)) for level in (0.0, 0.2)
            ]
            assert list(drawn.get_ydata()) == pytest.approx(expected)
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend >= {"CNN validation", "FCN translated validation"}
    # three folds: a min-max band per line, and the label says so
    assert len(ax.collections) == 6 and ax.get_ylabel() == "accuracy (median over folds, band: min-max)"


def test_accuracy_figure_one_colour_per_model_a_style_and_marker_per_metric(figures) -> None:
    ax = figures["accuracy_mnist_translate.png"].axes[0]
    for model in ("CNN", "FCN"):
        lines = [line(ax, f"{model} {label}") for label in ("validation", "translated validation", "train")]
        assert len({ln.get_color() for ln in lines}) == 1  # one colour per model
        assert len({ln.get_linestyle() for ln in lines}) == 3 and len({ln.get_marker() for ln in lines}) == 3
    assert line(ax, "CNN validation").get_color() != line(ax, "FCN validation").get_color()
    legend = ax.get_legend()
    assert legend.handlelength >= 3  # long enough to show a dash pattern
    assert {h.get_marker() for h in legend.legend_handles} == {"o", "s", "^"}


def test_one_fold_has_no_band_and_the_label_says_so(tmp_path: Path) -> None:
    one = load_sweep([fs.build_translate_sweep(tmp_path / "one", folds=(0,))])
    figures = dict(sweep_figures(one.jobs, one.epochs))
    ax = figures["accuracy_mnist_translate.png"].axes[0]
    assert len(ax.collections) == 0 and ax.get_ylabel() == "accuracy (one fold)"
    bars = figures["quadrant_swap_mnist.png"].axes[0]
    assert bars.get_ylabel() == "accuracy (one fold)"
    assert not [c for c in bars.containers if getattr(c, "errorbar", None) is not None and c.errorbar.lines[2]]


def test_fd_columns_parse_every_target_and_kind() -> None:
    columns = [
        "val/acc",
        "fd/conv10/r1/euclid",
        "fd/conv1/to_mean/cosine",
        "fd/conv1/to_ref/euclid_raw",
        "fd/conv1/r4/cosine",
        "fd/conv1/to_ref/euclid",
        "fd/conv1/r1/euclid",
        "fd/conv2/other/euclid",
        "fd/conv1/r1/euclid/extra",
        "fd/conv1/r1/cosine",
    ]
    parsed = fd_columns(columns)
    assert list(parsed) == ["conv1", "conv10"]  # natural order; unknown targets and paths are not specs
    assert [(s.target, s.kind, s.radius, s.group) for s in parsed["conv1"]] == [
        ("r1", "euclid", 1, "neighbours"),
        ("r1", "cosine", 1, "neighbours"),
        ("r4", "cosine", 4, "neighbours"),
        ("to_ref", "euclid", None, "to_ref"),
        ("to_ref", "euclid_raw", None, "to_ref"),
        ("to_mean", "cosine", None, "to_mean"),
    ]
    assert parsed["conv1"][4].column == "fd/conv1/to_ref/euclid_raw"


def test_filter_distance_figure_starts_at_init(figures) -> None:
    fig = figures["filter_distance_mnist_translate_fcn_conv1.png"]
    titles = {ax.get_title(): ax for ax in fig.axes}
    assert set(titles) == {
        "conv1, radius 1: euclid",
        "conv1, radius 4: euclid",
        "conv1, radius 1: cosine",
        "conv1, radius 4: cosine",
        "conv1, to mean filter: euclid",
        "conv1, to mean filter: cosine",
    }
    for title, column, start in (
        ("conv1, radius 1: euclid", "fd/conv1/r1/euclid", 0.109),
        ("conv1, radius 4: cosine", "fd/conv1/r4/cosine", 2 * 0.112),
        ("conv1, to mean filter: euclid", "fd/conv1/to_mean/euclid", 0.08),
    ):
        for level in (0.0, 0.1):
            drawn = line(titles[title], f"{level:.2f}")
            assert list(drawn.get_xdata()) == [INIT_X, 0, 1, 2, 3]  # init, then metrics.csv's 0-based epochs
            expected = [
                statistics.median(fs.epoch_row("fcn", level, f, e)[column] for f in (0, 1, 2)) for e in range(4)
            ]
            assert list(drawn.get_ydata()) == pytest.approx([start, *expected])
    ax = titles["conv1, radius 1: euclid"]
    assert ax.xaxis.get_major_formatter()(INIT_X, 0) == "init" and ax.xaxis.get_major_formatter()(0, 0) == "0"
    assert ax.get_xlabel() == "epoch (0 = first trained epoch)"
    # from zero, with the largest change from init written in the panel: level 0 drifts by
    # 0.02 * (1 - exp(-4/20)) from 0.109, +3.3 %
    assert ax.get_ylim()[0] == 0
    change = 100 * 0.02 * (1 - math.exp(-4 / 20)) / 0.109
    assert [t.get_text() for t in ax.texts] == [f"axis from 0; largest change from init: {change:+.2g} %"]
    # the level-0 FCN runs also appear in the rotate figure
    rotate = figures["filter_distance_mnist_rotate_fcn_conv1.png"]
    assert {ln.get_label() for ln in rotate.axes[0].get_lines()} == {"0.00", "0.20"}


@pytest.fixture(scope="module")
def divergence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fs.build_divergence_sweep(tmp_path_factory.mktemp("div") / "divergence", levels=(0.0, 0.5), folds=(0, 1))


def test_divergence_sweep_draws_distance_to_the_shared_filter(divergence: Path) -> None:
    sweep = load_sweep([divergence])
    figures = dict(sweep_figures(sweep.jobs, sweep.epochs))
    fig = figures["filter_distance_mnist_noise_fcn_conv1_init_from-cnn.png"]  # both folds in one figure
    titles = {ax.get_title(): ax for ax in fig.axes}
    targets = ("radius 1", "radius 4", "to original shared filter", "to mean filter")
    expected_titles = {f"conv1, {target}: {kind}" for target in targets for kind in ("euclid", "cosine")}
    assert set(titles) == expected_titles | {"conv1, to original shared filter: euclid_raw"}
    for title, column in (
        ("conv1, to original shared filter: euclid", "fd/conv1/to_ref/euclid"),
        ("conv1, to original shared filter: euclid_raw", "fd/conv1/to_ref/euclid_raw"),
        ("conv1, radius 4: cosine", "fd/conv1/r4/cosine"),
    ):
        for level in (0.0, 0.5):
            drawn = line(titles[title], f"{level:.2f}")
            assert list(drawn.get_xdata()) == [INIT_X, 0, 1, 2, 3]
            expected = [fs.fd_values(level, e, diverge=True)[column] for e in range(-1, 4)]
            assert list(drawn.get_ydata()) == pytest.approx(expected)
    # unshared from the CNN: 0 at initialisation; to_ref euclid at 0.5 after epoch 4: 0.015 * 4 * 1.5
    drawn = line(titles["conv1, to original shared filter: euclid"], "0.50")
    assert drawn.get_ydata()[0] == 0 and drawn.get_ydata()[-1] == pytest.approx(0.09)
    # a distance that starts at 0 has no relative change: the note gives the absolute one
    note = titles["conv1, to original shared filter: euclid"].texts[0].get_text()
    assert note == "axis from 0; largest change from init: +0.09 (from 0)"


def test_plot_run_of_a_divergence_run(divergence: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("ws_plot_script", _HERE.parent / "scripts" / "plot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = divergence / "3"  # noise 0.5, fold 1
    assert script.main([str(run), "--out", str(tmp_path)]) == 0
    assert_valid_png(tmp_path / "filter_distance.png")
    fig = run_figures(run)["filter_distance"]
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {
        f"mean {kind} distance {target}"
        for kind in ("euclid", "cosine")
        for target in ("between neighbouring filters", "to the original shared filter", "to the layer's mean filter")
    } | {"mean euclid_raw distance to the original shared filter"}
    for title, label, column in (
        ("mean euclid distance between neighbouring filters", "conv2 r4", "fd/conv2/r4/euclid"),
        ("mean euclid distance to the original shared filter", "conv1", "fd/conv1/to_ref/euclid"),
        ("mean cosine distance to the original shared filter", "conv2", "fd/conv2/to_ref/cosine"),
        ("mean euclid_raw distance to the original shared filter", "conv2", "fd/conv2/to_ref/euclid_raw"),
        ("mean cosine distance to the layer's mean filter", "conv1", "fd/conv1/to_mean/cosine"),
    ):
        drawn = line(panels[title], label)
        assert list(drawn.get_xdata()) == [INIT_X, 0, 1, 2, 3]
        expected = [fs.fd_values(0.5, e, diverge=True)[column] for e in range(-1, 4)]
        assert list(drawn.get_ydata()) == pytest.approx(expected)
    raw = line(panels["mean euclid_raw distance to the original shared filter"], "conv2")
    assert raw.get_ydata()[-1] == pytest.approx(4.0)  # 0.5 * 4 epochs * (1 + layer index 1)
    assert "init_from=cnn" in fig.get_suptitle()


def test_vcp_figure(tmp_path: Path) -> None:
    fs.build_vcp_sweep(tmp_path / "vcp", connectivities=(0.0, 0.5, 0.9), level=0.3)
    fs.build_translate_sweep(tmp_path / "translate", models=("cnn",), levels=(0.3,))
    sweep = load_sweep([tmp_path])
    figures = dict(sweep_figures(sweep.jobs, sweep.epochs))
    assert "vcp_mnist_translate_0.30.png" in figures
    # the single-connectivity accuracy figures are folded into the VCP figure
    assert not any(name.startswith("accuracy_mnist_translate_connectivity") for name in figures)
    ax = figures["vcp_mnist_translate_0.30.png"].axes[0]
    assert "removed" in ax.get_xlabel()
    for label, metric in (("validation", "val/acc"), ("translated validation", "val/translate/acc")):
        drawn = line(ax, f"FCN {label}")
        assert list(drawn.get_xdata()) == pytest.approx([0.0, 0.5, 0.9])
        per_fold = [
            [fs.epoch_row("fcn", 0.3, f, 2, connectivity=c)[metric] for f in (0, 1, 2)] for c in (0.0, 0.5, 0.9)
        ]
        assert list(drawn.get_ydata()) == pytest.approx([statistics.median(v) for v in per_fold])
        for model in ("cnn", "fcn"):
            reference = line(ax, f"{model.upper()} {label}, connectivity 0 (reference)")
            value = statistics.median(fs.epoch_row(model, 0.3, f, 2)[metric] for f in (0, 1, 2))
            assert list(reference.get_ydata()) == pytest.approx([value, value])
    # bands: min-max over folds; the validation band spans fold 0 at 0.9 to fold 2 at 0
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    low = fs.epoch_row("fcn", 0.3, 0, 2, connectivity=0.9)["val/acc"]
    high = fs.epoch_row("fcn", 0.3, 2, 2, connectivity=0.0)["val/acc"]
    assert (band.min(), band.max()) == pytest.approx((low, high))
    assert line(ax, "CNN validation, connectivity 0 (reference)").get_ydata()[0] == pytest.approx(0.875)
    # filter distances: one figure for the group, a line per connectivity, not one figure per value
    fd_names = sorted(name for name in figures if name.startswith("filter_distance"))
    assert fd_names == [
        "filter_distance_mnist_translate_fcn_conv1.png",  # connectivity 0: the paper's table
        "filter_distance_mnist_translate_fcn_conv2.png",
        "filter_distance_vcp_mnist_translate_0.30_conv1.png",
        "filter_distance_vcp_mnist_translate_0.30_conv2.png",
    ]
    fig = figures["filter_distance_vcp_mnist_translate_0.30_conv1.png"]
    panel = {a.get_title(): a for a in fig.axes}["conv1, radius 1: euclid"]
    assert sorted(ln.get_label() for ln in panel.get_lines()) == ["0.00", "0.50", "0.90"]
    expected = [fs.fd_values(0.3, e)["fd/conv1/r1/euclid"] for e in range(-1, 4)]
    assert list(line(panel, "0.90").get_ydata()) == pytest.approx(expected)
    assert fig.legends[0].get_title().get_text() == "connectivity"


def test_quadrant_swap_bars(figures) -> None:
    ax = figures["quadrant_swap_mnist.png"].axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    expected = [
        statistics.median(fs.epoch_row(model, 0.0, f, 2)[metric] for f in (0, 1, 2))
        for metric in ("val/acc", "val/quadrant_swap/acc")
        for model in ("cnn", "fcn")
    ]
    assert heights == pytest.approx(expected)  # CNN 0.86 / FCN 0.76 clean, 0.41 / 0.31 swapped
    assert heights == pytest.approx([0.86, 0.76, 0.41, 0.31])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CNN", "FCN"]


def test_plot_run(sweep, tmp_path: Path) -> None:
    fcn_job = Path(
        sweep.jobs.loc[
            (sweep.jobs["model"] == "fcn") & (sweep.jobs["aug_level"] == 0.1) & (sweep.jobs["fold"] == 0), "job_dir"
        ].iloc[0]
    )
    paths = plot_run(fcn_job, tmp_path / "fcn")
    assert [p.name for p in paths] == ["training_curves.png", "filter_distance.png"]
    for path in paths:
        assert_valid_png(path)
    figures = run_figures(fcn_job)
    acc_ax = figures["training_curves"].axes[0]
    drawn = line(acc_ax, "validation")
    assert list(drawn.get_xdata()) == [0, 1, 2, 3]  # metrics.csv's epochs, as they are
    expected = [fs.epoch_row("fcn", 0.1, 0, e)["val/acc"] for e in range(4)]
    assert list(drawn.get_ydata()) == pytest.approx(expected)
    best = line(acc_ax, "early-stopping epoch")
    assert list(best.get_xdata()) == [2, 2]  # best epoch 2, where metrics.csv has it
    assert acc_ax.get_xlabel() == "epoch (0 = first trained epoch)"
    fd = line(figures["filter_distance"].axes[0], "conv2 r1")
    assert fd.get_xdata()[0] == INIT_X
    assert fd.get_ydata()[0] == pytest.approx(0.119)  # conv2's value at initialisation, the point "init"
    assert figures["filter_distance"].axes[0].get_ylim()[0] == 0

    cnn_job = Path(sweep.jobs.loc[sweep.jobs["model"] == "cnn", "job_dir"].iloc[0])
    assert [p.name for p in plot_run(cnn_job, tmp_path / "cnn")] == ["training_curves.png"]


def test_plot_run_needs_metrics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.csv"):
        plot_run(tmp_path, tmp_path / "out")


def test_bad_options_are_config_errors(sweep, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fd_layers"):
        plot_sweep(sweep.jobs, sweep.epochs, tmp_path, fd_layers="some")
    with pytest.raises(ConfigError, match="convention"):
        plot_sweep(sweep.jobs, sweep.epochs, tmp_path, convention="best")


def test_plot_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("ws_plot_script", _HERE.parent / "scripts" / "plot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sweep_dir = fs.build_translate_sweep(tmp_path / "sweep", models=("cnn",), levels=(0.0,), folds=(0,))
    assert script.main([str(sweep_dir / "0")]) == 0
    assert_valid_png(sweep_dir / "0" / "plots" / "training_curves.png")
    assert script.main([str(sweep_dir), "--out", str(tmp_path / "figs")]) == 0
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == ["accuracy_mnist_none.png", "quadrant_swap_mnist.png"]
    assert "accuracy_mnist_none.png" in capsys.readouterr().out


def test_run_figures_carry_a_reduced_budget(tmp_path: Path) -> None:
    small = fs.build_translate_sweep(
        tmp_path / "small", models=("cnn",), levels=(0.0,), folds=(0,), budget={"trainer.max_epochs": 2}, n_epochs=2
    )
    title = run_figures(small / "0")["training_curves"].get_suptitle()
    # one run is one fold: only the per-run difference is listed
    assert title == "mnist cnn none 0.00 fold 0 (completed)\nreduced budget, not comparable to the paper: max_epochs=2"
    full = fs.build_translate_sweep(tmp_path / "full", models=("cnn",), levels=(0.0,), folds=(0,))
    assert run_figures(full / "0")["training_curves"].get_suptitle() == "mnist cnn none 0.00 fold 0 (completed)"


def test_init_keeps_its_tick_on_a_long_run(tmp_path: Path) -> None:
    long_run = load_sweep([fs.build_translate_sweep(tmp_path / "long", models=("fcn",), levels=(0.0,), n_epochs=12)])
    fig = dict(sweep_figures(long_run.jobs, long_run.epochs))["filter_distance_mnist_none_fcn_conv1.png"]
    ax = fig.axes[0]
    ticks = list(ax.get_xticks())
    assert ticks[0] == INIT_X and ticks[1] == 0 and ticks[-1] <= 11  # the locator alone would tick 0, 2, 4, ...
    assert ax.xaxis.get_major_formatter()(ticks[0], 0) == "init"
