"""Typed schema of the whole training config.

Hydra merges every YAML file of ``conf/`` into these dataclasses, so a misspelled key or a
value of the wrong type fails at start with a message naming it. Ranges (an augmentation
level in [0, 1), a positive learning rate, ...) are checked by
:mod:`weightshare.config.validate`, because structured configs only check types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class PathsConfig:
    """Where things live. ``root_dir`` is the project root (where ``conf/`` is)."""

    root_dir: str = MISSING
    data_dir: str = "${paths.root_dir}/data"
    output_dir: str = "${hydra:runtime.output_dir}"
    log_dir: str = "${paths.root_dir}/outputs"


@dataclass
class DataConfig:
    """Dataset, split and loader.

    ``split=kfold`` is the protocol (official train + test concatenated, 5 contiguous folds,
    ``fold`` held out); ``split=standard`` trains on the official train set and validates on
    the official test set (the hyperparameter search).
    """

    name: str = "mnist"
    root: str = "${paths.data_dir}"
    download: bool = True
    split: str = "kfold"
    fold: int = 0
    n_folds: int = 5
    batch_size: int = 256
    eval_batch_size: int | None = None
    limit_train: int | None = None  # use only the first N training examples (quick checks)
    limit_val: int | None = None
    shuffle: bool = True  # shuffle the training order each epoch (seeded)
    verify_checksums: bool = True
    # protocol defaults of this dataset, interpolated into trainer / callbacks / optimizer
    max_epochs: int = 250
    patience: int = 50
    lr: float = 1e-3
    # the paper's hyperparameter search trained for less (Appendix A / protocol.md)
    search_max_epochs: int = 100
    search_patience: int = 25
    # keyword arguments of this dataset's reader (checked against its signature): synthetic
    # ``size``, ``image_size``, ``seed``, ``noise_std``; digits ``image_size``; mnist/cifar10
    # ``checksums``
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DynamicSharingConfig:
    """Dynamic weight sharing (Pogodin et al. 2021; ``layers.dynamic_sharing``), off while ``every`` is null.

    Every ``every`` training steps each position's kernel moves towards the mean of its group:
    ``W_p <- (1 - strength) W_p + strength * mean_q W_q``; the group is every position
    (``radius: null``) or the Chebyshev neighbourhood of ``radius``.
    """

    every: int | None = None
    strength: float = 1.0
    radius: int | None = None


@dataclass
class ModelConfig:
    """The network.

    ``name`` is ``cnn`` or ``fcn`` for the paper's networks (Table A.2), ``resnet`` or
    ``sharesnet`` for the residual networks. ``share_tile`` (FCN only) groups positions into
    t x t tiles sharing one kernel; ``share_penalty`` adds the soft-sharing penalty of
    ``share_penalty_kind``. ``lowrank`` is the paper network with low-rank locally connected
    layers (``rank``, ``combining``); ``dynamic_sharing`` periodically re-shares an FCN.
    """

    name: str = "cnn"
    depth: int = 3
    hidden: int = 1024
    connectivity: float = 0.0
    connectivity_mode: str = "weight"
    fcn_init: str = "conv"
    impl: str = "auto"
    share_tile: int | None = None
    share_penalty: float = 0.0
    penalty_radius: int = 1
    init_from: str | None = None
    compile: bool = False
    # ---- the sharing spectrum (issue #13) ----
    # model=lowrank (layers.lowrank_conv): R basis kernels, full | factorized combining weights
    rank: int | None = None
    combining: str | None = None
    # model=lowrank: the authors' options (null otherwise): basis init glorot | he_uniform,
    # the per-filter bias and the spatial bias as independent switches
    basis_init: str | None = None
    filter_bias: bool | None = None
    spatial_bias: bool | None = None
    # which soft-sharing penalty model.share_penalty weighs: l2_neighbours | l1_all_pairs
    share_penalty_kind: str = "l2_neighbours"
    dynamic_sharing: DynamicSharingConfig = field(default_factory=DynamicSharingConfig)
    # residual networks
    arch: str = "paper"
    widen_factor: int = 1


#: ``optimizer.name`` values (:func:`weightshare.builders.build_optimizer` builds each)
OPTIMIZERS = ("adam", "adamw", "sgd")
#: ``callbacks.progress_bar`` values (:func:`weightshare.console.build_progress_bar` builds each)
PROGRESS_BARS = ("rich", "tqdm", "lines", "none")
#: ``scheduler.name`` values (:func:`weightshare.builders.build_scheduler` builds each)
SCHEDULERS = ("none", "multistep", "cosine")


@dataclass
class OptimizerConfig:
    """Optimiser. ``lr=null`` takes the dataset's protocol default (1e-3 MNIST, 1e-4 CIFAR)."""

    name: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7  # Keras' Adam epsilon
    momentum: float = 0.9
    nesterov: bool = False
    fused: bool | None = None  # null = fused Adam/AdamW kernels (same algorithm, much faster on CPU)


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: ``none``, ``multistep`` (epochs in ``milestones``) or ``cosine``."""

    name: str = "none"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass
class AugConfig:
    """Training augmentations (protocol semantics), each level in [0, 1)."""

    translate: float = 0.0
    rotate: float = 0.0
    noise: float = 0.0
    edge_noise: float = 0.0
    edge_width: int = 5
    faithful_edge_noise: bool = False
    crop_padding: int = 0  # ShaResNet recipe: random crop after zero padding
    hflip: bool = False


@dataclass
class EvalConfig:
    """Evaluation variants run every validation epoch, with their levels."""

    variants: list[str] = field(
        default_factory=lambda: ["clean", "translate", "rotate", "noise", "edge_noise", "quadrant_swap"]
    )
    translate: float = 0.25
    rotate_degrees: float = 45.0
    noise: float = 0.15
    edge_noise: float = 0.15
    edge_width: int = 5
    seed: int = 12345


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val/acc"
    mode: str = "max"
    patience: int = 50
    min_delta: float = 0.0


@dataclass
class CheckpointConfig:
    enabled: bool = True
    monitor: str = "val/acc"
    mode: str = "max"
    save_last: bool = True


@dataclass
class FilterMetricsConfig:
    """Filter distances of FCN layers, logged at init and every ``every_n_epochs`` epochs."""

    enabled: bool = True
    radii: list[int] = field(default_factory=lambda: [1, 4])
    layers: list[str] | None = None  # null = every free layer
    every_n_epochs: int = 1


@dataclass
class FilterImagesConfig:
    """Grid images of one filter across positions, at the listed epochs (-1 = at init)."""

    enabled: bool = True
    epochs: list[int] = field(default_factory=lambda: [-1, 0])
    last: bool = True
    filter_index: int = 0
    layers: list[str] | None = None


@dataclass
class CallbacksConfig:
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    filter_metrics: FilterMetricsConfig = field(default_factory=FilterMetricsConfig)
    filter_images: FilterImagesConfig = field(default_factory=FilterImagesConfig)
    progress_bar: str = "rich"  # rich | tqdm | lines | none (weightshare.console)
    nan_guard: bool = True


@dataclass
class TrainerConfig:
    """Arguments passed to ``lightning.Trainer`` (a subset; add keys here to expose more)."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 250
    min_epochs: int = 1
    max_time: str | None = None
    deterministic: Any = False
    benchmark: bool | None = None
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 50
    enable_model_summary: bool = True
    fast_dev_run: Any = False
    detect_anomaly: bool = False
    profiler: str | None = None


@dataclass
class WandbConfig:
    project: str = "weightshare"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    offline: bool = False
    log_model: bool = False


@dataclass
class LoggerConfig:
    """Loggers beside the always-on ``metrics.csv``: any of csv, tensorboard, wandb."""

    names: list[str] = field(default_factory=lambda: ["csv"])
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper for each job, so the job can report to its trial."""

    storage: str | None = None
    study_name: str | None = None
    trial_number: int | None = None
    monitor: str | None = None
    direction: str = "maximize"


@dataclass
class DivergenceConfig:
    """Weight divergence (the follow-up paper): with ``model=fcn`` and ``cnn_epochs > 0`` the
    job first trains the CNN of the same geometry for ``cnn_epochs`` epochs (in
    ``<run>/cnn_stage/``), then unshares it into the FCN and trains on with a fresh optimiser."""

    cnn_epochs: int = 0


@dataclass
class TrainConfig:
    """The whole config of one training run."""

    defaults: list[Any] = field(default_factory=list)
    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    ckpt_path: str | None = None  # a path, or "last" to resume this run directory
    resume: bool = False  # same as ckpt_path=last when ckpt_path is null
    skip_completed: bool = True  # a job whose results.json says completed is not rerun
    train: bool = True
    test: bool = True
    optimized_metric: str | None = "val/acc_best"
    float32_matmul_precision: str = "high"
    threads: int | None = None
    budget: str = "full"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)


def register_configs() -> None:
    """Register the schema so ``conf/train.yaml`` can name it first in its defaults."""
    from weightshare.config.paths import register_root_resolver

    register_root_resolver()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
