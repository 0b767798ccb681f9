"""Slurm: put an install's image on every node of a job before its `srun` (`sqenv stage`)."""
