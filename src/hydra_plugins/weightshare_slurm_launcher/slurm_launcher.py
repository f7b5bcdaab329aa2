"""``hydra/launcher=slurm``: submitit's SLURM launcher, with outcomes instead of tracebacks.

hydra-submitit-launcher's ``SlurmLauncher`` submits the jobs as one array and returns
``job.results()``; that is kept (same config keys, same folders). What changes:

- inside a job, a SIGTERM (``scancel``, a preemption, the end of a time limit) is recorded
  ``interrupted`` by the task and returned as an outcome, so submitit writes a result and
  the sweep gets its table and exit status 1; the task's ``SystemExit(143)`` would escape
  ``run_job`` and submitit's ``process_job`` and leave the job without a result;
- the launching process waits until SLURM says each job ended (:mod:`weightshare.slurm.wait`):
  a requeued job is waited for again, and one that ended without a result (killed, out of
  memory, a node failure) gets ``failed``/``interrupted`` in its ``results.json`` and an
  outcome, instead of ``UncompletedJobError`` ending the sweep in a traceback;
- submitit's exit after it requeued the job (``SystemExit(-1)``) still escapes: the job
  comes back, and :func:`weightshare.slurm.env.requeued` makes it resume.

This module is imported by Hydra's plugin scan at every start: it imports nothing heavy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

#: exit status of a task stopped by SIGTERM (weightshare.job.SIGTERM_EXIT; not imported: it pulls in torch)
SIGTERM_EXIT = 143


def outcome(overrides: Sequence[str], config: DictConfig | None) -> JobReturn:
    """The ``JobReturn`` of a job that ended without a value; its ``results.json`` says how.

    Status COMPLETED with no value, as a failed job in a multirun returns (the task records
    the failure and the sweep goes on); a FAILED return would make Hydra's sweeper re-raise.
    """
    ret = JobReturn(overrides=list(overrides), working_dir=str(Path.cwd()))
    if config is not None:
        ret.cfg = OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])
        ret.hydra_cfg = OmegaConf.masked_copy(config, ["hydra"]) if "hydra" in config else None
        ret.task_name = str(OmegaConf.select(config, "hydra.job.name", default=""))
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret


class SlurmLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's SLURM launcher with outcomes for interrupted and vanished jobs."""

    _EXECUTOR = "slurm"

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """Inside the SLURM job: ``BaseSubmititLauncher.__call__``, a SIGTERM returned as an outcome."""
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        try:
            return run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key=job_dir_key,
                job_subdir_key="hydra.sweep.subdir",
            )
        except SystemExit as exc:
            if exc.code != SIGTERM_EXIT:
                raise  # submitit's exit after requeueing this job: it comes back and resumes
            log.error("job #%d stopped by SIGTERM: recorded 'interrupted'", job_num)
            return outcome(sweep_overrides, HydraConfig.instance().cfg)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the jobs as one array, wait for SLURM to end them, one ``JobReturn`` per job."""
        import submitit

        from weightshare.job import record_end
        from weightshare.slurm.wait import wait_for

        assert self.config is not None
        params = self.params
        init_params = {"folder": params["submitit_folder"], "slurm_max_num_timeout": params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster="slurm", **init_params)
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"slurm_{k}": v for k, v in params.items()
               if k not in ("submitit_folder", "max_num_timeout")}
        )  # fmt: skip
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep and self.config.hydra.sweep.mode is not None:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for k, overrides in enumerate(job_overrides):
            idx = initial_job_idx + k
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        returns = []
        for (overrides, _, idx, _, _), job, ended in zip(job_params, jobs, wait_for(jobs)):
            if isinstance(ended.result, JobReturn) and ended.result.status == JobStatus.COMPLETED:
                returns.append(ended.result)
                continue
            failure = getattr(ended.result, "_return_value", None)  # a FAILED return raises on .return_value
            error = ended.error or f"{type(failure).__name__}: {failure}"
            config = self._job_config(overrides, idx, job.job_id)
            if config is not None:
                out_dir = Path(str(config.hydra.runtime.output_dir))
                status = ended.status if ended.error else "failed"
                slurm = {"job_id": job.job_id, "state": ended.state, "log": ended.log}
                record_end(out_dir, status, error, extra={"slurm": slurm})
            log.error("job #%d (SLURM job %s, %s): %s", idx, job.job_id, ended.state, error)
            returns.append(outcome(overrides, config))
        return returns

    def _job_config(self, overrides: list[str], idx: int, job_id: str) -> DictConfig | None:
        """The job's config as ``run_job`` sets it up (its output directory), composed here again."""
        assert self.hydra_context is not None and self.config is not None
        saved = HydraConfig.instance().cfg
        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(config):
                config.hydra.job.num = idx
                config.hydra.job.id = job_id
            HydraConfig.instance().set_config(config)
            out = Path(str(config.hydra.sweep.dir))
            subdir = OmegaConf.select(config, "hydra.sweep.subdir")
            if subdir is not None:
                out = out / str(subdir)
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = str(out.absolute())
            return config
        except Exception as exc:  # the record stays as the job left it; the sweep still ends
            log.error("could not compose job #%d to record its end: %s", idx, exc)
            return None
        finally:
            if saved is not None:
                HydraConfig.instance().set_config(saved)
