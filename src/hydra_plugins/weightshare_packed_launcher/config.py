"""Config schema of ``hydra/launcher=packed``, registered in Hydra's ConfigStore.

``conf/hydra/launcher/packed.yaml`` composes this node (``defaults: [weightshare_packed]``)
and documents the options. The submitit settings are those of ``hydra/launcher=slurm``
(same names, same defaults) so a sweep moves between the two launchers unchanged.

This module is imported by Hydra's plugin scan at every start, so it imports nothing heavy.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

PROVIDER = "weightshare_packed_launcher"

#: where the packs run: this process, one SLURM job per pack, or submitit's local processes
EXECUTORS = ("local", "slurm", "submitit_local")


@dataclass
class PackedLauncherConf:
    """``hydra.launcher`` when ``hydra/launcher=packed``.

    - ``pack_size``: most members per pack; null puts all jobs with one pack key in one pack.
    - ``executor``: ``local`` trains the packs one after the other in this process;
      ``slurm`` submits each pack (and each unpackable job) as one submitit job on SLURM;
      ``submitit_local`` runs that code path as local processes.
    - The other keys are submitit's, as in ``hydra/launcher=slurm``; ``executor=local``
      ignores them, ``submitit_local`` uses the executor-independent ones.
    """

    _target_: str = "hydra_plugins.weightshare_packed_launcher.packed_launcher.PackedLauncher"
    pack_size: int | None = None
    executor: str = "local"

    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    timeout_min: int = 240
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int | None = 1
    cpus_per_task: int | None = 8
    mem_gb: int | None = 32
    name: str = "${hydra.job.name}"
    stderr_to_stdout: bool = False
    # SLURM only
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    comment: str | None = None
    exclude: str | None = None
    gres: str | None = None
    signal_delay_s: int = 120
    max_num_timeout: int = 3
    array_parallelism: int = 64
    setup: list[str] | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)


def register() -> None:
    """Store the launcher node (idempotent: the plugin scan may run it again)."""
    ConfigStore.instance().store(
        group="hydra/launcher", name="weightshare_packed", node=PackedLauncherConf, provider=PROVIDER
    )


register()
