"""A cluster's partitions and nodes (``scontrol show partition|node -o``), and a request checked against them.

Why before submission: SLURM's own answers to a request it cannot satisfy arrive late or
never. ``gpus_per_node=1`` on nodes without GPUs is an ``sbatch`` error that submitit turns
into a traceback after the sweep was composed; 8 CPUs on 2-CPU nodes pends forever
(``Reason=PartitionConfig``) unless the cluster sets ``EnforcePartLimits``; an unknown
partition is a traceback; a time limit shorter than submitit's warning signal counts the
job as timed out at once. The preflight (:mod:`weightshare.hydra_preflight`) turns each into
one line naming the setting, the value and what the partition allows.

The parsers read the one-line-per-record form (``-o``); a value may hold spaces (``OS=Linux
6.1 #1 SMP``), so a token without ``=`` belongs to the value before it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

#: SLURM may send the time-limit warning signal up to this much earlier than asked
#: (its periodic time-limit check); slurm.conf(5), ``--signal``
SIGNAL_JITTER_S = 60


def parse_records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output as one dict per line (``Key=Value`` tokens)."""
    records = []
    for line in text.splitlines():
        record: dict[str, str] = {}
        last = None
        for token in line.split():
            key, eq, value = token.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                record[key] = value
                last = key
            elif last is not None:  # a value with spaces in it
                record[last] += " " + token
        if record:
            records.append(record)
    return records


def gpu_count(gres: str) -> int:
    """GPUs in a node's ``Gres`` (``gpu:4``, ``gpu:a100:4(S:0-1),shard:8``, ``(null)``)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            last = parts[-1]
            total += int(last) if last.isdigit() else 1
    return total


def minutes(value: str) -> int | None:
    """A SLURM time (``UNLIMITED``, ``30``, ``04:00:00``, ``2-12:00:00``, ``1-0``) in minutes; None: unlimited."""
    if value.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
    parts = [int(p) for p in value.split(":")] if value else [0]
    if days:  # days-hours[:minutes[:seconds]]
        h, m, s = [*parts, 0, 0, 0][:3]
    elif len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:  # minutes:seconds
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + (1 if s else 0)


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: tuple[str, ...]


@dataclass
class Partition:
    name: str
    default: bool
    state: str
    max_time_min: int | None
    max_nodes: int | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    nodes: list[Node] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name}*" if self.default else self.name


def parse_cluster(partition_text: str, node_text: str) -> dict[str, Partition]:
    """Partitions by name, each with its nodes, from ``scontrol show partition -o`` and ``... node -o``."""
    nodes = [
        Node(
            name=r.get("NodeName", "?"),
            cpus=int(r.get("CPUTot") or r.get("CPUs") or 0),
            memory_mb=int(r.get("RealMemory") or 0),
            gpus=gpu_count(r.get("Gres", "(null)")),
            partitions=tuple(p for p in r.get("Partitions", "").split(",") if p),
        )
        for r in parse_records(node_text)
    ]
    partitions = {}
    for r in parse_records(partition_text):
        name = r.get("PartitionName", "?")
        partitions[name] = Partition(
            name=name,
            default=r.get("Default", "NO").upper() == "YES",
            state=r.get("State", "UP").upper(),
            max_time_min=minutes(r.get("MaxTime", "UNLIMITED")),
            max_nodes=_number(r.get("MaxNodes")),
            max_cpus_per_node=_number(r.get("MaxCPUsPerNode")),
            max_mem_per_node_mb=_number(r.get("MaxMemPerNode")),
            nodes=[n for n in nodes if name in n.partitions],
        )
    return partitions


def query_cluster() -> dict[str, Partition]:
    """This cluster's partitions (runs ``scontrol``); raises ``RuntimeError`` with its message when it fails."""

    def show(what: str) -> str:
        proc = subprocess.run(["scontrol", "show", what, "-o"], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
            raise RuntimeError(f"scontrol show {what}: {first}")
        return proc.stdout

    return parse_cluster(show("partition"), show("node"))


@dataclass
class Request:
    """What one submitted job asks for (the launcher's submitit settings)."""

    partition: str | None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 60
    signal_delay_s: int = 120


def timing_problem(req: Request) -> str | None:
    """``timeout_min`` too short for ``signal_delay_s``: the job would count as timed out at once."""
    if req.timeout_min * 60 <= req.signal_delay_s + SIGNAL_JITTER_S:
        least = -(-(req.signal_delay_s + SIGNAL_JITTER_S + 1) // 60)
        return (
            f"hydra.launcher.timeout_min={req.timeout_min}: too short for signal_delay_s={req.signal_delay_s} "
            f"(SLURM sends the time-limit signal signal_delay_s before the limit, up to {SIGNAL_JITTER_S} s "
            f"early); use timeout_min >= {least} or a smaller signal_delay_s"
        )
    return None


def request_problems(req: Request, partitions: dict[str, Partition]) -> list[str]:
    """Each way ``req`` cannot run on ``partitions``, one line each (empty: it can)."""
    problems = [p for p in [timing_problem(req)] if p]
    names = ", ".join(p.label for p in partitions.values()) or "none"
    if req.partition is None:
        part = next((p for p in partitions.values() if p.default), None)
        if part is None:
            return [*problems, f"hydra.launcher.partition=null: this cluster has no default partition; "
                               f"name one of: {names}"]  # fmt: skip
    else:
        part = partitions.get(req.partition)
        if part is None:
            return [*problems, f"hydra.launcher.partition={req.partition}: no such partition on this cluster "
                               f"(partitions: {names})"]  # fmt: skip
    where = f"partition {part.name}"
    if part.state not in ("UP",):
        problems.append(f"hydra.launcher.partition={part.name}: the partition is {part.state}, not UP")
    nodes = part.nodes
    gpus = req.gpus_per_node or 0
    most_gpus = max((n.gpus for n in nodes), default=0)
    if gpus > most_gpus:
        gpu_parts = [p.name for p in partitions.values() if any(n.gpus for n in p.nodes)]
        if most_gpus == 0:
            problems.append(
                f"hydra.launcher.gpus_per_node={gpus}: {where} has no GPUs; use gpus_per_node=0 and "
                f"trainer=cpu (hydra/launcher=slurm_cpu)"
                + (f", or a GPU partition ({', '.join(gpu_parts)})" if gpu_parts else "")
            )
        else:
            problems.append(f"hydra.launcher.gpus_per_node={gpus}: the nodes of {where} have at most {most_gpus}")
    cpus = (req.cpus_per_task or 1) * req.tasks_per_node
    most_cpus = max((n.cpus for n in nodes), default=0)
    if part.max_cpus_per_node is not None:
        most_cpus = min(most_cpus, part.max_cpus_per_node)
    if cpus > most_cpus:
        asked = f"cpus_per_task={req.cpus_per_task or 1}" + (
            f" x tasks_per_node={req.tasks_per_node}" if req.tasks_per_node > 1 else ""
        )
        problems.append(f"hydra.launcher.{asked}: the nodes of {where} have at most {most_cpus} CPUs")
    if req.mem_gb:
        most_mb = max((n.memory_mb for n in nodes), default=0)
        if part.max_mem_per_node_mb is not None:
            most_mb = min(most_mb, part.max_mem_per_node_mb)
        if req.mem_gb * 1024 > most_mb:
            problems.append(
                f"hydra.launcher.mem_gb={req.mem_gb:g}: the nodes of {where} have at most "
                f"{most_mb / 1024:.1f} GB (mem_gb <= {most_mb // 1024})"
            )
    if req.nodes > len(nodes) or (part.max_nodes is not None and req.nodes > part.max_nodes):
        most = len(nodes) if part.max_nodes is None else min(len(nodes), part.max_nodes)
        problems.append(f"hydra.launcher.nodes={req.nodes}: {where} allows at most {most}")
    if part.max_time_min is not None and req.timeout_min > part.max_time_min:
        problems.append(
            f"hydra.launcher.timeout_min={req.timeout_min}: {where} allows at most {part.max_time_min} minutes"
        )
    return problems


def missing_commands(commands: Sequence[str] = ("sbatch", "srun", "scontrol")) -> list[str]:
    """The SLURM commands a submission needs that are not on ``PATH``."""
    import shutil

    return [c for c in commands if shutil.which(c) is None]
