"""The best epoch (``results.json["best"]``) is the one early stopping waited on.

Unit tests of :func:`weightshare.results.best_and_final` on hand-made rows, and one real run
where the answer is known in advance: with a learning rate so small that no weight moves,
validation accuracy is the same every epoch, so Lightning's rule (an epoch improves only by
more than ``min_delta``; stop once ``patience`` epochs in a row did not improve) predicts
that the run stops after epoch ``patience`` (0-based) and that the best epoch is epoch 0.
"""

from __future__ import annotations

import json
import math

import pytest

from weightshare.results import best_and_final, read_metrics_csv


def rows(values: list[float | None], key: str = "val/acc") -> list[dict]:
    """One row per epoch; ``None`` leaves the metric out (an epoch without validation)."""
    out = []
    for epoch, v in enumerate(values):
        row = {"epoch": epoch, "step": 10 * (epoch + 1), "train/loss": 1.0 / (epoch + 1)}
        if v is not None:
            row[key] = v
        out.append(row)
    return out


def test_clear_maximum_is_best_and_last_row_is_final() -> None:
    best, final = best_and_final(rows([0.50, 0.70, 0.90, 0.80, 0.60]))
    assert best["epoch"] == 2 and best["val/acc"] == 0.90
    assert best["train/loss"] == pytest.approx(1.0 / 3)  # the whole row, not only the monitor
    assert final["epoch"] == 4 and final["val/acc"] == 0.60


def test_ties_keep_the_first_epoch() -> None:
    # Lightning counts an equal value as "no improvement": the first of the tied epochs is best
    best, final = best_and_final(rows([0.5, 0.8, 0.8, 0.7, 0.8]))
    assert best["epoch"] == 1
    assert final["epoch"] == 4
    best, _ = best_and_final(rows([0.3, 0.3, 0.3]))
    assert best["epoch"] == 0


def test_min_delta_ignores_small_gains() -> None:
    values = [0.50, 0.52, 0.525, 0.528]
    assert best_and_final(rows(values), min_delta=0.0)[0]["epoch"] == 3
    # min_delta 0.01: 0.52 (+0.02) improves; 0.525 and 0.528 (+0.005, +0.008 over 0.52) do not
    assert best_and_final(rows(values), min_delta=0.01)[0]["epoch"] == 1
    assert best_and_final(rows(values), min_delta=0.03)[0]["epoch"] == 0
    # a gain of exactly min_delta is not an improvement (strict >, as in Lightning)
    assert best_and_final(rows([0.5, 0.75]), min_delta=0.25)[0]["epoch"] == 0
    assert best_and_final(rows([0.5, 0.75]), min_delta=0.24)[0]["epoch"] == 1


def test_min_delta_is_measured_from_the_best_so_far_not_the_previous_epoch() -> None:
    # each step gains 0.006 < min_delta, but the fourth epoch is 0.018 over the best (epoch 0)
    best, _ = best_and_final(rows([0.500, 0.506, 0.512, 0.518]), min_delta=0.01)
    assert best["epoch"] == 2  # 0.512 - 0.500 = 0.012 > 0.01; then 0.518 - 0.512 < 0.01


def test_nan_and_missing_rows_are_skipped() -> None:
    best, final = best_and_final(rows([math.nan, 0.6, None, 0.9, math.nan, 0.7, None]))
    assert best["epoch"] == 3
    assert final["epoch"] == 5  # the last epoch that has the monitor, not the last row
    best, final = best_and_final(rows([0.4, math.nan]))
    assert best["epoch"] == 0 and final["epoch"] == 0
    assert best_and_final(rows([math.nan, None])) == ({}, {})
    assert best_and_final([]) == ({}, {})


def test_mode_min_on_a_loss() -> None:
    losses = [1.0, 0.6, 0.4, 0.45, 0.4, 0.3]
    best, final = best_and_final(rows(losses, "val/loss"), monitor="val/loss", mode="min")
    assert best["epoch"] == 5 and final["epoch"] == 5
    best, _ = best_and_final(rows([1.0, 0.6, 0.4, 0.45, 0.41], "val/loss"), monitor="val/loss", mode="min")
    assert best["epoch"] == 2
    # mode max on the same numbers picks the largest loss: the mode is not ignored
    best, _ = best_and_final(rows([1.0, 0.6, 0.4, 0.45, 0.41], "val/loss"), monitor="val/loss", mode="max")
    assert best["epoch"] == 0
    # min_delta in mode min: an epoch must be lower by more than min_delta
    best, _ = best_and_final(rows([1.0, 0.95, 0.8, 0.79], "val/loss"), monitor="val/loss", mode="min", min_delta=0.1)
    assert best["epoch"] == 2
    best, _ = best_and_final(rows([1.0, 0.93], "val/loss"), monitor="val/loss", mode="min", min_delta=0.1)
    assert best["epoch"] == 0  # 0.07 lower is not more than 0.1 lower


def test_other_monitor_reads_only_that_column() -> None:
    data = [{"epoch": e, "val/acc": a, "val/translate/acc": t} for e, (a, t) in enumerate([(0.9, 0.1), (0.8, 0.5)])]
    assert best_and_final(data)[0]["epoch"] == 0
    assert best_and_final(data, monitor="val/translate/acc")[0]["epoch"] == 1
    assert best_and_final(data, monitor="val/absent") == ({}, {})


def lightning_stop_epoch(values: list[float], patience: int, min_delta: float = 0.0) -> int | None:
    """The 0-based epoch after which Lightning's EarlyStopping (mode max) stops, None if never.

    Written from Lightning's documented rule, independently of the code under test.
    """
    best, wait = -math.inf, 0
    for epoch, v in enumerate(values):
        if v - min_delta > best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def test_the_stopping_rule_helper_itself() -> None:
    assert lightning_stop_epoch([0.5, 0.5, 0.5, 0.5], patience=2) == 2
    assert lightning_stop_epoch([0.5, 0.6, 0.6, 0.7, 0.7, 0.7], patience=2) == 5
    assert lightning_stop_epoch([0.5, 0.6, 0.7], patience=1) is None


@pytest.mark.trains
@pytest.mark.parametrize("patience", [2])
def test_run_with_frozen_weights_stops_when_the_rule_says(compose, tmp_path, patience) -> None:
    from weightshare.train import train

    max_epochs = patience + 4
    cfg = compose(
        [
            "data=synthetic",
            "data.options.size=256",
            f"data.patience={patience}",  # callbacks.early_stopping.patience follows the data config
            "optimizer.lr=1e-12",  # Adam steps of 1e-12 are below float32 resolution of the weights
            f"trainer.max_epochs={max_epochs}",
            "callbacks=minimal",
            "eval=clean",
            "test=false",
            "threads=1",
        ],
        output_dir=tmp_path,
    )
    assert cfg.callbacks.early_stopping.patience == patience
    train(cfg)
    res = json.loads((tmp_path / "results.json").read_text())
    table = read_metrics_csv(tmp_path / "metrics.csv")
    accs = [r["val/acc"] for r in table]
    assert len(set(accs)) == 1, accs  # the premise: validation accuracy cannot change
    assert 0.0 < accs[0] < 1.0
    # the rule on a constant sequence: improve at epoch 0, then `patience` epochs without
    expected_stop = lightning_stop_epoch([accs[0]] * max_epochs, patience)
    assert expected_stop == patience < max_epochs - 1
    assert res["status"] == "completed"
    assert res["stopped_epoch"] == expected_stop
    assert res["epochs_completed"] == expected_stop + 1 == len(table)
    assert [r["epoch"] for r in table] == list(range(expected_stop + 1))
    assert res["best"]["epoch"] == 0  # ties keep the first epoch: the one early stopping waited on
    assert res["final"]["epoch"] == expected_stop
