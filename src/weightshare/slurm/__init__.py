"""SLURM support: what a job knows about itself, the cluster's partitions, and waiting for jobs.

Three small modules, stdlib only at import time (Hydra's plugin scan imports the launchers
that use them at every start):

- :mod:`.env`: inside a job: its SLURM job id, array index, log path, restart count (a
  requeued job resumes by itself) and the CPUs it was given (torch threads follow them);
- :mod:`.partitions`: ``scontrol show partition/node`` parsed, and a submission's request
  checked against them (the launchers' preflight);
- :mod:`.wait`: waiting for submitted jobs until SLURM says they ended, with or without
  accounting storage, and the outcome of each (a result, or why there is none).
"""
