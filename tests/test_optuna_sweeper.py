"""The Optuna sweeper plugin (``hydra/sweeper=optuna``) on a toy Hydra app.

The toy app (tests/apps/toy_objective) has a known per-epoch accuracy curve, so every test
knows which trials exist, what they return and which ones a pruner must stop. Sweeps run
in-process with Hydra's basic launcher, except the interrupt test, which kills a real
sweep process and resumes it with the same command.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.weightshare_optuna_sweeper._impl import TooManyFailedTrialsError
from hydra_plugins.weightshare_optuna_sweeper._outcome import NONE_MESSAGE, job_error, objective_values
from hydra_plugins.weightshare_optuna_sweeper._search_space import format_value, parse_search_space
from hydra_plugins.weightshare_optuna_sweeper._study import (
    derived_study_name,
    resume_command,
    study_name,
    sweep_dir_is_stable,
)
from weightshare.errors import ConfigError
from weightshare.trial_protocol import (
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ATTR_PRUNED,
    ATTR_PRUNED_EPOCH,
    ATTR_RETRY_OF,
    open_storage,
)

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "tests" / "apps" / "toy_objective"
APP = APP_DIR / "app.py"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy_acc(lr: float, depth: int, model: str, epoch: int) -> float:
    """The toy app's curve, written out again here as the reference."""
    q = 0.99 - 0.15 * abs(math.log10(lr) + 3.0) - 0.02 * (3 - depth) - (0.01 if model == "fcn" else 0.0)
    return q * (1.0 - 0.5 ** (epoch + 1))


def load_study(sweep_dir: Path, storage: Any = None) -> optuna.Study:
    storage = storage or open_storage(f"sqlite:///{sweep_dir / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def job_records(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """toy_result.json of every job directory, by job number (= trial number)."""
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/toy_result.json")}


def load_app() -> Any:
    spec = importlib.util.spec_from_file_location("toy_objective_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def sweep(hydra_sweep_runner: Any, hydra_restore_singletons: Any, tmp_path: Path) -> Any:
    """Run the toy app in multirun, in-process; returns the sweep directory."""
    objective = load_app().objective

    def run(overrides: list[str]) -> Path:
        sweep_dir = tmp_path / "sweep"
        runner = hydra_sweep_runner(
            calling_file=str(APP),
            calling_module=None,
            task_function=objective,
            config_path="conf",
            config_name="config",
            overrides=overrides,
            temp_dir=sweep_dir,
        )
        runner.__enter__()  # no __exit__: it would delete the sweep directory we inspect
        return sweep_dir

    return run


# ---------------------------------------------------------------- plugin and search space


def test_plugin_is_discovered_and_config_registered() -> None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.weightshare_optuna_sweeper.optuna_sweeper.OptunaSweeper" in names
    cs = ConfigStore.instance()
    assert "optuna.yaml" in cs.list("hydra/sweeper")
    assert {"tpe.yaml", "random.yaml", "grid.yaml", "cmaes.yaml"} <= set(cs.list("hydra/sweeper/sampler"))
    assert {"median.yaml", "successive_halving.yaml", "nop.yaml"} <= set(cs.list("hydra/sweeper/pruner"))


def test_override_grammar_becomes_distributions() -> None:
    space = parse_search_space(
        [
            "optimizer.lr=tag(log, interval(1e-5, 1e-1))",
            "x=interval(0, 2)",
            "n=tag(int, interval(1, 8))",
            "model=choice(cnn, fcn)",
            "depth=2,3",
            "k=range(1, 9, 3)",
            "data.split=standard",
            "+extra=1",
            "depth=choice(3)",  # later lines (the command line) win
        ]
    )
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert d["x"] == FloatDistribution(0.0, 2.0)
    assert d["n"] == IntDistribution(1, 8)
    assert d["model"] == CategoricalDistribution(["cnn", "fcn"])
    assert d["depth"] == CategoricalDistribution([3])
    assert d["k"] == IntDistribution(1, 7, step=3)  # range excludes stop: 1, 4, 7
    assert space.grid_values["k"] == [1, 4, 7]
    assert space.fixed == {"data.split": "data.split=standard", "+extra": "+extra=1"}
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params\.optimizer\.lr.*GridSampler"):
        space.grid()
    grid = parse_search_space(["a=choice(1e-1, 1e-2)", "b=range(2, 4)", "c=x"]).grid()
    assert grid == {"a": [0.1, 0.01], "b": [2, 3]}


@pytest.mark.parametrize(
    "value",
    [
        "cnn",
        "val/acc_best",
        "sqlite:////tmp/a b/optuna.db",
        "it's",
        "a,b",
        "1",
        "null",
        "true",
        "a\\",
        "${x}",
        "q'\\'",
        "choice(1,2)",
        0.1,
        1e-6,
        3,
        True,
        None,
    ],
)
def test_override_values_round_trip(value: Any) -> None:
    text = format_value(value)
    parsed = OverridesParser.create().parse_override(f"k={text}")
    assert not parsed.is_sweep_override()
    got = OmegaConf.create({"k": parsed.value()}).k  # resolves escaped interpolations
    assert got == value and type(got) is type(value)
    if value == "cnn":
        assert text == "cnn"  # bare: group overrides (model=cnn) need it


def test_objective_values_reject_non_numbers() -> None:
    assert objective_values(0.5, 1) == [0.5]
    assert objective_values([0.5, 2], 2) == [0.5, 2.0]
    with pytest.raises(ValueError, match="the task returned None; set optimized_metric"):
        objective_values(None, 1)
    for bad in ("0.9", True, float("nan"), {"val/acc": 1.0}):
        with pytest.raises(ValueError, match="the task returned"):
            objective_values(bad, 1)
    with pytest.raises(ValueError, match="expected 2 numbers"):
        objective_values([1.0], 2)


def test_job_error_comes_from_results_json(tmp_path: Path) -> None:
    assert job_error(tmp_path) is None  # no results.json
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", "error": None}))
    assert job_error(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "error": "DataError: no MNIST"}))
    assert job_error(tmp_path) == "failed: DataError: no MNIST"


def test_study_name_is_stable_and_tracks_the_command() -> None:
    a = parse_search_space(["lr=interval(0.1, 1)", "data=mnist"])
    b = parse_search_space(["lr=interval(0.1, 1)", "data=mnist"])
    c = parse_search_space(["lr=interval(0.1, 1)", "data=cifar10"])
    assert derived_study_name("train", a, ["maximize"]) == derived_study_name("train", b, ["maximize"])
    assert derived_study_name("train", a, ["maximize"]) != derived_study_name("train", c, ["maximize"])
    assert derived_study_name("train", a, ["maximize"]) != derived_study_name("train", a, ["minimize"])


def test_resume_true_keeps_the_study_name_and_a_given_name_is_a_directory_name() -> None:
    params = {"optimizer.lr": "tag(log, interval(1e-5, 1e-1))", "model.depth": "choice(2, 3)"}
    name = study_name("train", None, "maximize", params, ["hparams_search=tpe", "data=synthetic"])
    for extra in ("resume=true", "logger=wandb", "logger.wandb.offline=true", "tags=[a]"):
        assert name == study_name("train", None, "maximize", params, ["hparams_search=tpe", "data=synthetic", extra])
    assert name != study_name("train", None, "maximize", params, ["hparams_search=tpe", "data=synthetic", "seed=1"])
    assert name != study_name("train", None, "maximize", params, ["hparams_search=tpe", "data=mnist"])
    assert study_name("train", "my-study_2", "maximize", params, []) == "my-study_2"
    for bad in ("a/b", "..", "", "a=b"):
        with pytest.raises(ConfigError, match=r"hydra\.sweeper\.study_name"):
            study_name("train", bad, "maximize", params, [])


def test_search_directory_is_the_studys_and_the_resume_command_names_a_timestamped_one(monkeypatch: Any) -> None:
    cfg = compose_train(["hparams_search=tpe", "data=synthetic"])
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    expected = study_name(cfg.hydra.job.name, None, "maximize", params, ["hparams_search=tpe", "data=synthetic"])
    assert Path(cfg.hydra.sweep.dir).parts[-3:] == ("hparams_tpe", "search", expected)
    named = compose_train(["hparams_search=tpe", "hydra.sweeper.study_name=second"])
    assert Path(named.hydra.sweep.dir).parts[-2:] == ("search", "second")
    assert sweep_dir_is_stable(cfg)
    monkeypatch.setattr(sys, "argv", ["train.py", "hparams_search=tpe", "model=fcn"])
    assert resume_command(cfg, Path("/x")) == "python train.py hparams_search=tpe model=fcn"
    plain = compose_train(["model=fcn"])  # the default sweep dir: time-stamped
    assert not sweep_dir_is_stable(plain)
    assert resume_command(plain, Path("/o/2026")).endswith("model=fcn hydra.sweep.dir=/o/2026")


def compose_train(overrides: list[str]) -> Any:
    """conf/train.yaml composed with its hydra node (no run, no trainer)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from weightshare.config import register_configs

    if not (REPO / "conf" / "train.yaml").is_file():
        pytest.skip("conf/train.yaml is not there")
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_paper_grid_is_appendix_a() -> None:
    cfg = compose_train(["hparams_search=paper_grid", "data=cifar10"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.GridSampler"
    assert (sweeper.direction, sweeper.n_trials, cfg.optimized_metric) == ("maximize", 24, "val/acc_best")
    assert cfg.data.split == "standard" and cfg.data.name == "cifar10"
    assert [cfg.aug.translate, cfg.aug.rotate, cfg.aug.noise, cfg.aug.edge_noise] == [0, 0, 0, 0]
    grid = parse_search_space([f"{k}={v}" for k, v in sweeper.params.items()]).grid()
    assert grid == {
        "optimizer.lr": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
        "model.depth": [2, 3],
        "model": ["cnn", "fcn"],
    }


def test_tpe_search_config() -> None:
    cfg = compose_train(["hparams_search=tpe"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert (sweeper.direction, sweeper.n_trials, sweeper.n_jobs, sweeper.storage) == ("maximize", 20, 1, None)
    space = parse_search_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "model.depth": CategoricalDistribution([2, 3]),
    }


# ---------------------------------------------------------------- sweeps


def test_grid_visits_every_point_once(sweep: Any) -> None:
    lrs, models, depths = [1e-1, 1e-3], ["cnn", "fcn"], [2, 3]
    sweep_dir = sweep(
        [
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.n_trials=100",  # clipped to the 8 grid points
            "optimizer.lr=choice(1e-1, 1e-3)",
            "model=choice(cnn, fcn)",  # a config group: becomes model=cnn / model=fcn
            "model.depth=choice(2, 3)",
            "epochs=1",
        ]
    )
    study = load_study(sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    records = job_records(sweep_dir)
    assert sorted(records) == list(range(8))  # job directory number = trial number
    visited = Counter((r["lr"], r["model"], r["depth"]) for r in records.values())
    assert visited == Counter(itertools.product(lrs, models, depths))  # each point exactly once
    for t in study.trials:
        r = records[t.number]
        # model.name only comes from the group file: the group override reached the job
        assert (r["lr"], r["model"], r["depth"]) == (
            t.params["optimizer.lr"],
            t.params["model"],
            t.params["model.depth"],
        )
        assert t.value == pytest.approx(toy_acc(r["lr"], r["depth"], r["model"], 0))
    assert study.best_params == {"optimizer.lr": 1e-3, "model": "cnn", "model.depth": 3}
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == pytest.approx(0.99 * 0.5)
    assert results.counts.complete == 8


def test_grid_rejects_an_interval(sweep: Any) -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.lr.*choice\(\.\.\.\) or range\(\.\.\.\) with GridSampler"):
        sweep(["hydra/sweeper/sampler=grid", "optimizer.lr=interval(1e-5, 1e-1)", "model.depth=choice(2,3)"])


def test_failed_trial_is_recorded_and_the_sweep_goes_on(sweep: Any) -> None:
    sweep_dir = sweep(
        [
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.max_failure_rate=0.5",
            "optimizer.lr=choice(1e-3, 1e-1, 1e-4, 1e-5)",
            "fail_above_lr=0.01",
            "epochs=1",
        ]
    )
    study = load_study(sweep_dir)
    states = {t.params["optimizer.lr"]: t.state for t in study.trials}
    assert states == {
        1e-3: TrialState.COMPLETE,
        1e-1: TrialState.FAIL,
        1e-4: TrialState.COMPLETE,
        1e-5: TrialState.COMPLETE,
    }
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed.user_attrs[ATTR_ERROR] == "RuntimeError: toy failure: lr=0.1 is above 0.01"
    assert failed.number < max(t.number for t in study.trials)  # later trials still ran


def test_too_many_failures_stop_the_sweep(sweep: Any, tmp_path: Path) -> None:
    with pytest.raises(TooManyFailedTrialsError, match=r"2 of n_trials=6 trials failed.*max_failure_rate=0.25") as err:
        sweep(
            [
                "hydra.sweeper.n_trials=6",
                "hydra.sweeper.max_failure_rate=0.25",  # 1.5 failures allowed
                "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
                "fail_above_lr=0.0",  # every job raises
            ]
        )
    assert "toy failure" in str(err.value)
    study = load_study(tmp_path / "sweep")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2  # stopped at once, not after 6


def test_missing_metric_fails_the_trial_with_a_clear_message(sweep: Any) -> None:
    sweep_dir = sweep(
        [
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.max_failure_rate=1.0",
            "optimized_metric=val/nope",
            "epochs=1",
            "optimizer.lr=interval(1e-4, 1e-2)",
        ]
    )
    study = load_study(sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert {t.user_attrs[ATTR_ERROR] for t in study.trials} == {NONE_MESSAGE}


def test_pruner_stops_a_hopeless_trial_early(sweep: Any) -> None:
    epochs = 6
    common = [
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.study_name=pruning",  # both sweeps below share one study
        f"epochs={epochs}",
    ]
    # two good trials first (the median pruner waits for 2 finished ones), then a hopeless lr
    # in a second sweep of the same study: its job sees the others only through the storage
    sweep([*common, "hydra.sweeper.n_trials=2", "optimizer.lr=tag(log, interval(1e-4, 1e-3))"])
    sweep_dir = sweep([*common, "hydra.sweeper.n_trials=3", "optimizer.lr=tag(log, interval(0.09, 0.1))"])
    study = load_study(sweep_dir)
    good, (bad,) = study.trials[:2], study.trials[2:]
    for t in good:
        assert t.state == TrialState.COMPLETE and len(t.intermediate_values) == epochs
        assert toy_acc(t.params["optimizer.lr"], 3, "cnn", 0) >= toy_acc(1e-4, 3, "cnn", 0) == pytest.approx(0.42)
    lr = bad.params["optimizer.lr"]
    assert 0.09 <= lr <= 0.1
    assert bad.state == TrialState.PRUNED
    # epoch 0: at most 0.35 against a median of at least 0.42 -> pruned at once, 1 of 6 epochs
    assert toy_acc(lr, 3, "cnn", 0) < 0.35
    assert bad.intermediate_values == {0: pytest.approx(toy_acc(lr, 3, "cnn", 0))}
    assert bad.user_attrs[ATTR_PRUNED] is True and bad.user_attrs[ATTR_PRUNED_EPOCH] == 0
    assert job_records(sweep_dir)[bad.number] == {
        "lr": lr,
        "depth": 3,
        "model": "cnn",
        "epochs_run": 1,
        "pruned": True,
    }


def test_cmaes_without_its_package_is_a_clear_error(sweep: Any) -> None:
    try:
        import cmaes  # noqa: F401

        pytest.skip("cmaes is installed")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="pip install cmaes"):
        sweep(["hydra/sweeper/sampler=cmaes", "optimizer.lr=interval(1e-4, 1e-2)"])


# ---------------------------------------------------------------- interrupt and resume


def test_killed_sweep_resumes_without_duplicates(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    n_trials = 4
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.direction=maximize",
        "optimizer.lr=tag(log, interval(1e-5, 1e-1))",
        "model.depth=choice(2, 3)",
        "epochs=3",
        "sleep_s=0.25",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = sweep_dir / "optuna.db"
    killed_number = None
    storage = None
    deadline = time.monotonic() + 40
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:  # read only: never create the tables the sweep is creating
                storage = storage or optuna.storages.RDBStorage(f"sqlite:///{db}", skip_table_creation=True)
                trials = load_study(sweep_dir, storage).trials
            except Exception:  # no database or study yet, or database busy
                continue
            running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
            if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and running:
                killed_number = running[0].number
                proc.send_signal(signal.SIGKILL)  # mid-job: the trial stays RUNNING in the storage
                break
    finally:
        if proc.poll() is None and killed_number is None:
            proc.kill()
        proc.wait()
    assert killed_number is not None, f"the sweep ended before it could be killed: {proc.stderr.read()!r}"
    before = load_study(sweep_dir).trials
    assert before[killed_number].state == TrialState.RUNNING
    killed_params = before[killed_number].params

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    trials = load_study(sweep_dir).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == n_trials  # no point evaluated twice
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == killed_number and ATTR_INTERRUPTED in failed.user_attrs
    (retry,) = [t for t in trials if t.user_attrs.get(ATTR_RETRY_OF) == killed_number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed_params
    # the trials finished before the kill were kept, not run again
    assert all(trials[t.number].state == TrialState.COMPLETE for t in before if t.state == TrialState.COMPLETE)
    assert sorted(job_records(sweep_dir)) == sorted(t.number for t in complete)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_of_a_dead_sweeper_elsewhere_is_retried(sweep: Any, tmp_path: Path) -> None:
    """A RUNNING trial of another host whose heartbeat stopped: failed, its point re-run once."""
    url = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    (tmp_path / "sweep").mkdir()
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    foreign = study.ask({"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)})
    foreign.set_user_attr("sweeper_owner", {"host": "elsewhere", "pid": 1, "token": "x"})
    storage.record_heartbeat(
        storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("shared"), foreign.number)
    )
    time.sleep(2.2)  # the heartbeat is now older than the grace period
    sweep_dir = sweep(
        [
            "hydra.sweeper.study_name=shared",
            "hydra.sweeper.grace_period=1",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=maximize",
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "epochs=1",
        ]
    )
    trials = load_study(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs[ATTR_RETRY_OF] == 0 and trials[1].params == trials[0].params
    assert ATTR_ERROR not in trials[0].user_attrs  # interrupted, not a failure of the job


# ---------------------------------------------------------------- Lightning callback


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_lightning_callback_prunes_through_the_storage(tmp_path: Path) -> None:
    """A Trainer whose val/acc stays at 0.1 is stopped after its first epoch by the median
    pruner of a study where a finished trial reached 0.9 at every epoch."""
    import pytorch_lightning as pl
    import torch

    from weightshare.callbacks.optuna_pruning import OptunaPruningCallback
    from weightshare.trial_protocol import STUDY_ATTR_PRUNER

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cb", storage=open_storage(url), direction="maximize")
    study.set_user_attr(STUDY_ATTR_PRUNER, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values=dict.fromkeys(range(5), 0.9)))
    trial = study.ask()
    trial_cfg = {
        "storage": url,
        "study_name": "cb",
        "trial_number": trial.number,
        "monitor": "val/acc",
        "direction": "maximize",
    }

    class Flat(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return (self.w - batch[0]).pow(2).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val/acc", 0.1)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    callback = OptunaPruningCallback(trial_cfg)
    trainer = pl.Trainer(
        max_epochs=5,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(Flat(), train_dataloaders=data, val_dataloaders=data)

    assert callback.pruned and callback.pruned_epoch == 0
    assert trainer.current_epoch == 1  # stopped after the first of 5 epochs
    frozen = optuna.load_study(study_name="cb", storage=open_storage(url)).trials[trial.number]
    assert frozen.intermediate_values == {0: pytest.approx(0.1)}  # the sanity check was not reported
    assert frozen.user_attrs[ATTR_PRUNED] is True and frozen.user_attrs[ATTR_PRUNED_EPOCH] == 0
    # outside a sweep the callback does nothing
    assert not OptunaPruningCallback({"storage": None, "study_name": None, "trial_number": None}).active
