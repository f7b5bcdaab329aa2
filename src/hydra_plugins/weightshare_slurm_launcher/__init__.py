"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, made to survive a cluster."""
