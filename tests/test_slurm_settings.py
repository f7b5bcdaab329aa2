"""SLURM settings checked before submission, on captured ``scontrol`` text (no cluster needed).

Each bad request is one line naming the setting, its value and what the partition allows:
an unknown partition, GPUs on a partition without any, CPUs or memory beyond its nodes, a
``timeout_min`` too short for ``signal_delay_s``. Also: job states read from ``sacct`` and
``squeue`` text, and what a job reads from SLURM's environment (record, restarts, threads).
"""

from __future__ import annotations

import pytest

from weightshare.slurm import env, wait
from weightshare.slurm.partitions import (
    Request,
    gpu_count,
    minutes,
    parse_cluster,
    parse_records,
    request_problems,
    timing_problem,
)

#: ``scontrol show partition -o`` / ``scontrol show node -o`` of the one-node test cluster (SLURM 22.05)
CPU_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 "
    "RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 "
    "TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=2,mem=24105M,node=1,billing=2\n"
)
CPU_NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=1.47 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=vm NodeHostName=vm Version=22.05.8 "
    "OS=Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=24105 AllocMem=0 FreeMem=14915 Sockets=1 "
    "Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  "
    "BootTime=2026-12-04T08:18:56 SlurmdStartTime=2026-12-04T08:45:29 CfgTRES=cpu=2,mem=24105M,billing=2\n"
)
#: a two-partition cluster: 'cpu' (default) and 'gpu' (4 A100 per node, 4 hours at most)
GPU_PARTITIONS = (
    "PartitionName=cpu Default=YES MaxNodes=UNLIMITED MaxTime=1-00:00:00 MaxCPUsPerNode=UNLIMITED Nodes=c[01-02] "
    "State=UP TotalCPUs=128 TotalNodes=2 MaxMemPerNode=UNLIMITED\n"
    "PartitionName=gpu Default=NO MaxNodes=2 MaxTime=04:00:00 MaxCPUsPerNode=32 Nodes=g01 State=UP TotalCPUs=64 "
    "TotalNodes=1 MaxMemPerNode=256000\n"
)
GPU_NODES = (
    "NodeName=c01 CPUTot=64 Gres=(null) RealMemory=515000 Partitions=cpu State=IDLE\n"
    "NodeName=c02 CPUTot=64 Gres=(null) RealMemory=515000 Partitions=cpu State=IDLE\n"
    "NodeName=g01 CPUTot=64 Gres=gpu:a100:4(S:0-1) RealMemory=1030000 Partitions=gpu State=MIXED\n"
)


def _req(**kw) -> Request:
    return Request(**{"partition": None, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": 4, "timeout_min": 60,
                      "signal_delay_s": 120, **kw})  # fmt: skip


def test_parsing_captured_scontrol_text() -> None:
    parts = parse_cluster(CPU_PARTITIONS, CPU_NODES)
    (debug,) = parts.values()
    assert (debug.name, debug.default, debug.state, debug.max_time_min) == ("debug", True, "UP", None)
    (node,) = debug.nodes
    assert (node.name, node.cpus, node.memory_mb, node.gpus) == ("vm", 2, 24105, 0)
    # a value with spaces stays whole, and the keys after it are still read
    (rec,) = parse_records(CPU_NODES)
    assert rec["OS"] == "Linux 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0" and rec["RealMemory"] == "24105"
    gpu = parse_cluster(GPU_PARTITIONS, GPU_NODES)
    assert [n.gpus for n in gpu["gpu"].nodes] == [4] and len(gpu["cpu"].nodes) == 2
    assert (gpu["gpu"].max_time_min, gpu["gpu"].max_cpus_per_node, gpu["cpu"].max_time_min) == (240, 32, 1440)


@pytest.mark.parametrize(
    ("gres", "n"), [("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2,gpu:v100:1,shard:8", 3)]
)
def test_gpu_count(gres: str, n: int) -> None:
    assert gpu_count(gres) == n


@pytest.mark.parametrize(
    ("text", "mins"),
    [("UNLIMITED", None), ("30", 30), ("04:00:00", 240), ("10:30", 11), ("2-12:00:00", 3600), ("1-0", 1440)],
)
def test_slurm_times_in_minutes(text: str, mins: int | None) -> None:
    assert minutes(text) == mins


def test_a_request_that_fits_has_no_problem() -> None:
    assert request_problems(_req(), parse_cluster(CPU_PARTITIONS, CPU_NODES)) == []
    ok = _req(partition="gpu", gpus_per_node=4, cpus_per_task=32, mem_gb=200, timeout_min=240)
    assert request_problems(ok, parse_cluster(GPU_PARTITIONS, GPU_NODES)) == []


def test_each_bad_request_is_one_line() -> None:
    cpu = parse_cluster(CPU_PARTITIONS, CPU_NODES)
    assert request_problems(_req(partition="gpu"), cpu) == [
        "hydra.launcher.partition=gpu: no such partition on this cluster (partitions: debug*)"
    ]
    assert request_problems(_req(gpus_per_node=1), cpu) == [
        "hydra.launcher.gpus_per_node=1: partition debug has no GPUs; use gpus_per_node=0 and trainer=cpu "
        "(hydra/launcher=slurm_cpu)"
    ]
    # the README's defaults (8 CPUs, 32 GB) on a 2-CPU, 23.5 GB node: they would pend forever
    assert request_problems(_req(cpus_per_task=8, mem_gb=32), cpu) == [
        "hydra.launcher.cpus_per_task=8: the nodes of partition debug have at most 2 CPUs",
        "hydra.launcher.mem_gb=32: the nodes of partition debug have at most 23.5 GB (mem_gb <= 23)",
    ]
    assert request_problems(_req(cpus_per_task=1, tasks_per_node=4), cpu) == [
        "hydra.launcher.cpus_per_task=1 x tasks_per_node=4: the nodes of partition debug have at most 2 CPUs"
    ]
    gpu = parse_cluster(GPU_PARTITIONS, GPU_NODES)
    assert request_problems(_req(gpus_per_node=1), gpu) == [
        "hydra.launcher.gpus_per_node=1: partition cpu has no GPUs; use gpus_per_node=0 and trainer=cpu "
        "(hydra/launcher=slurm_cpu), or a GPU partition (gpu)"
    ]
    assert request_problems(_req(partition="gpu", gpus_per_node=8, cpus_per_task=48, timeout_min=300), gpu) == [
        "hydra.launcher.gpus_per_node=8: the nodes of partition gpu have at most 4",
        "hydra.launcher.cpus_per_task=48: the nodes of partition gpu have at most 32 CPUs",
        "hydra.launcher.timeout_min=300: partition gpu allows at most 240 minutes",
    ]
    no_default = parse_cluster(GPU_PARTITIONS.replace("Default=YES", "Default=NO"), GPU_NODES)
    assert request_problems(_req(), no_default) == [
        "hydra.launcher.partition=null: this cluster has no default partition; name one of: cpu, gpu"
    ]


@pytest.mark.parametrize(("timeout_min", "delay", "bad"), [(2, 120, True), (3, 120, True), (4, 120, False),
                                                           (2, 30, False), (1, 0, True)])  # fmt: skip
def test_timeout_too_short_for_the_signal(timeout_min: int, delay: int, bad: bool) -> None:
    """SLURM sends the signal signal_delay_s before the limit and up to 60 s early: the job needs more."""
    problem = timing_problem(_req(timeout_min=timeout_min, signal_delay_s=delay))
    assert (problem is not None) == bad
    if bad:
        assert problem.startswith(f"hydra.launcher.timeout_min={timeout_min}: too short for signal_delay_s={delay}")


def test_job_states_from_sacct_and_squeue_text() -> None:
    # sacct lists a requeued job once per start (the last line is now); steps are skipped
    sacct = "41|REQUEUED\n41|RUNNING\n41.batch|CANCELLED\n42_0|COMPLETED\n42_[1-3]|PENDING\n43|CANCELLED by 0\n"
    assert wait.parse_states(sacct) == {
        "41": "RUNNING", "42_0": "COMPLETED", "42_1": "PENDING", "42_2": "PENDING", "42_3": "PENDING",
        "43": "CANCELLED",
    }  # fmt: skip
    assert wait.parse_states("7_0|TIMEOUT\n7_1|RUNNING\n") == {"7_0": "TIMEOUT", "7_1": "RUNNING"}
    assert {s for s in ("TIMEOUT", "PREEMPTED", "CANCELLED") if wait.Ended("1", s).status == "interrupted"} == {
        "TIMEOUT", "PREEMPTED", "CANCELLED"
    }  # fmt: skip
    assert wait.Ended("1", "OUT_OF_MEMORY").status == wait.Ended("1", "FAILED").status == "failed"
    assert "REQUEUED" in wait.UNFINISHED and "PENDING" in wait.UNFINISHED and "COMPLETED" not in wait.UNFINISHED


def test_what_a_job_reads_from_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                "SLURM_CPUS_PER_TASK", "SUBMITIT_EXECUTOR"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    assert env.job_record() is None and not env.requeued() and env.torch_threads(None) is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert env.torch_threads(None) is None  # a leftover variable outside a job means nothing
    monkeypatch.setenv("SLURM_JOB_ID", "105")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURMD_NODENAME", "vm")
    assert env.torch_threads(None) == 3 and env.torch_threads(2) == 2  # the config's threads win
    assert env.job_record() == {"job_id": "100_5", "array_job_id": "100", "array_index": 5, "restart_count": 0,
                                "node": "vm", "log": None}  # fmt: skip
    assert not env.requeued()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert env.requeued() and env.job_record()["restart_count"] == 2


def test_a_requeued_job_resumes_its_run_directory(compose, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """SLURM_RESTART_COUNT > 0 means ckpt_path=last; an explicit ckpt_path still wins."""
    from weightshare.checkpoints import atomic_torch_save
    from weightshare.fingerprint import CHECKPOINT_KEY, run_fingerprint
    from weightshare.job import wants_resume
    from weightshare.train import _resolve_ckpt_path

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    cfg = compose(["data=synthetic"], output_dir=tmp_path)
    (tmp_path / "checkpoints").mkdir()  # this run's own last.ckpt (the resume verifies its fingerprint)
    atomic_torch_save({CHECKPOINT_KEY: dict(run_fingerprint(cfg))}, tmp_path / "checkpoints" / "last.ckpt")
    assert not wants_resume(cfg) and _resolve_ckpt_path(cfg, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert wants_resume(cfg) and _resolve_ckpt_path(cfg, tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    cfg.ckpt_path = str(tmp_path / "checkpoints" / "last.ckpt")
    assert not wants_resume(cfg)


def test_submitit_not_requeued_is_interrupted() -> None:
    """The time-limit signal after the last allowed requeue: submitit raises; the job is interrupted."""
    from submitit.core.utils import UncompletedJobError

    from weightshare.job import status_of

    assert status_of(UncompletedJobError("Job not requeued because: timed-out too many times.")) == "interrupted"
    assert status_of(RuntimeError("x")) == "failed"


def test_the_wait_ends_for_requeued_finished_and_forgotten_jobs(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No sweep waits forever: a job is waited for while SLURM has it pending, running or requeued; a
    job SLURM stopped without a result is ``interrupted``; one SLURM forgot (purged) ends as ``failed``."""
    from types import SimpleNamespace

    from submitit.slurm.slurm import SlurmJob

    class Job(SlurmJob):  # only what wait_for reads: the id and the result/log paths
        job_id = ""
        paths = None
        _cancel_at_deletion = False

        def __init__(self, job_id: str) -> None:
            self.job_id = job_id
            self.paths = SimpleNamespace(stdout=tmp_path / f"{job_id}.out", result_pickle=tmp_path / f"{job_id}.pkl")

    polls = iter([{"5_0": "RUNNING", "5_1": "REQUEUED"}, {"5_0": "COMPLETING"}, {"5_0": "TIMEOUT"}, {}])
    monkeypatch.setattr(wait, "query_states", lambda ids: next(polls))
    monkeypatch.setattr(wait.time, "sleep", lambda s: None)
    first, second = wait.wait_for([Job("5_0"), Job("5_1")])
    assert (first.state, first.status, second.state, second.status) == ("TIMEOUT", "interrupted", "UNKNOWN", "failed")
    assert first.error == f"SLURM job 5_0 ended TIMEOUT without a result (log: {tmp_path / '5_0.out'})"
    assert next(polls, "none left") == "none left"  # 5_1 was asked about 3 times after it vanished, then given up


def test_torch_threads_follow_the_cpus_slurm_gave_the_task(compose, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import torch

    from weightshare.builders import build_run

    before = torch.get_num_threads()
    cfg = compose(["data=synthetic", "data.options.size=64", "callbacks=minimal", "eval=clean"], output_dir=tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    try:
        for cpus, threads, expected in [(3, None, 3), (1, None, 1), (3, 2, 2)]:
            monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cpus))
            cfg.threads = threads
            build_run(cfg, tmp_path, loggers=False)
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


def test_the_time_limit_signal_during_a_checkpoint_load_is_not_a_bad_checkpoint(monkeypatch, tmp_path) -> None:
    """submitit's handler raises inside whatever runs; inside torch.load that must not read as a corrupt file."""
    import torch
    from submitit.core.utils import UncompletedJobError

    from weightshare.checkpoints import load_checkpoint
    from weightshare.errors import CheckpointError

    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)

    def stopped(*args, **kwargs):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(torch, "load", stopped)
    with pytest.raises(UncompletedJobError):
        load_checkpoint(path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(EOFError("truncated")))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
