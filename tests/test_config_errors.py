"""Every mistake is one clear line before anything starts (issue 19).

The cases are the table of ``scripts/bad_inputs.py`` (the issue's inputs). In-process, each
goes through :func:`~weightshare.config.cli.check_command_line`, what ``python train.py``
runs before Hydra creates anything: it must raise one :class:`WeightshareError` line naming
the key, and leave the directory empty. A few cases run end to end as subprocesses (exit
status 2, one line of output, no run directory).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from weightshare.config.cli import check_command_line, normalize_argv
from weightshare.errors import ConfigError, WeightshareError

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ws_bad_inputs", REPO / "scripts" / "bad_inputs.py")
assert _spec is not None and _spec.loader is not None
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["ws_bad_inputs"] = bad_inputs
_spec.loader.exec_module(bad_inputs)

REJECTED = [c for c in bad_inputs.CASES if c.expect == "one-line exit 2"]


def _apply_env(case, monkeypatch, tmp_path: Path) -> None:
    for key, value in case.env.items():
        if value == "":
            monkeypatch.delenv(key, raising=False)
        else:
            home = tmp_path.parent / f"{tmp_path.name}-home"
            monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)).replace("{home}", str(home)))


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_bad_input_is_one_line_naming_the_key_and_writes_nothing(case, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    _apply_env(case, monkeypatch, tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    args += [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with pytest.raises(WeightshareError) as err:
        check_command_line(normalize_argv(args))
    message = str(err.value)
    assert "\n" not in message
    assert case.key in message, message
    assert list(tmp_path.iterdir()) == []  # no run dir, no sweep dir, no data folder


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["trainer.max_epoch=1"], "did you mean trainer.max_epochs?"),
        (["model=fcnn"], "did you mean fcn?"),
        (["+callbacks.early_stopping.pateince=3"], "did you mean callbacks.early_stopping.patience?"),
        (["-m", "data=synthetic", "model=cnn,fcnn"], "did you mean fcn?"),
        (["optimizer=adamm"], "did you mean adam?"),
    ],
)
def test_near_misses_suggest_the_key_or_option(args, suggestion, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=suggestion.replace(".", r"\.").replace("?", r"\?")):
        check_command_line([*args, f"hydra.run.dir={tmp_path / 'run'}"])


def test_misplaced_multirun_flag_is_moved_to_the_front() -> None:
    assert normalize_argv(["data=synthetic", "-m", "model=fcn"]) == ["-m", "data=synthetic", "model=fcn"]
    assert normalize_argv(["--multirun", "a=1", "-m"]) == ["-m", "a=1"]
    assert normalize_argv(["--cfg", "job", "a=1"]) == ["--cfg", "job", "a=1"]


@pytest.mark.parametrize("preset", ["paper_translate", "paper_vcp", "sharing_spectrum", "quickstart"])
def test_sweep_presets_switch_to_multirun_like_the_searches(preset) -> None:
    """One rule for every preset with ``hydra.sweeper.params``: it runs as a sweep with or without -m."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from weightshare.config.cli import _hydra

    hydra = _hydra(SimpleNamespace(config_dir=None))
    try:
        assert hydra.get_mode(config_name="train", overrides=[f"experiment={preset}"]) == RunMode.MULTIRUN
        assert hydra.get_mode(config_name="train", overrides=["experiment=divergence"]) is not RunMode.MULTIRUN
    finally:
        GlobalHydra.instance().clear()


def test_valid_command_lines_pass(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (
        ["data=synthetic", "model=fcn", "trainer.limit_train_batches=2", "trainer.max_time=00:01:00:00"],
        ["-m", "data=synthetic", "model=cnn,fcn", "trainer.max_epochs=1"],
        ["hparams_search=tpe", "data=synthetic", "model=fcn"],
        ["optimizer=sgd", "optimizer.momentum=0.5", "scheduler=multistep", "scheduler.gamma=0.5"],
        ["model=fcn", "model.fcn_init=keras", "model.connectivity=0.5", "model.connectivity_mode=input"],
    ):
        check_command_line([*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert list(tmp_path.iterdir()) == []


def test_storage_urls(tmp_path) -> None:
    from hydra_plugins.weightshare_optuna_sweeper._preflight import check_storage_url

    check_storage_url(None)
    check_storage_url(f"sqlite:///{tmp_path / 'x.db'}")
    for url, fragment in [
        ("notaurl", "a database URL"),
        (f"sqlite:///{tmp_path / 'missing' / 'x.db'}", "does not exist"),
        ("postgresql://127.0.0.1:1/db", "did not accept a connection"),
    ]:
        with pytest.raises(ConfigError, match=fragment) as err:
            check_storage_url(url)
        assert err.value.key == "hydra.sweeper.storage"
    assert not (tmp_path / "missing").exists()


def test_memory_estimate_counts_weights_gradients_and_adam_state(compose, tmp_path) -> None:
    from weightshare.builders import build_model
    from weightshare.config.preflight import memory_estimate
    from weightshare.data.dataset import DataInfo
    from weightshare.models import count_parameters

    cfg = compose(["model=fcn", "aug.crop_padding=2"], output_dir=tmp_path)
    need = memory_estimate(cfg)
    params = count_parameters(build_model(cfg.model, DataInfo("mnist", 1, 28, 28, 10)))
    assert need["params"] == params  # the meta build counts what the real one allocates
    assert need["network"] == params * 4 * 4  # fp32 weights, gradients, two Adam moments
    assert need["batch"] == 256 * 1 * 32 * 32 * 4  # one batch padded by 2 on each side


def test_failed_download_leaves_no_empty_folders(tmp_path) -> None:
    from weightshare.data import download as dl
    from weightshare.errors import DataError

    root = tmp_path / "typo"

    def fetch_all() -> None:
        (root / "MNIST" / "raw").mkdir(parents=True)
        raise DataError("offline")

    with pytest.raises(DataError):
        dl.locate_or_download(
            "MNIST", [root / "MNIST" / "raw"], ["a"], download=True, fetch_all=fetch_all,
            download_dir=root / "MNIST" / "raw", hint="set data.root",
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ end to end
def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", **env}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["trainer.max_epoch=1"], "did you mean trainer.max_epochs?"),
        (["data=synthetic", "-m", "model=fcn,cnnn"], "did you mean cnn?"),  # -m after an override
    ],
)
def test_command_line_error_is_one_line_exit_2_and_writes_nothing(args, key, tmp_path) -> None:
    proc = _run([*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config error: ") and key in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_hydra_full_error_shows_hydras_own_message(tmp_path) -> None:
    proc = _run(["trainer.max_epoch=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode == 1
    assert "Could not override 'trainer.max_epoch'" in proc.stderr and "Traceback" in proc.stderr
