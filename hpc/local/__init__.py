"""The local launcher: ``hpc-tf launch --site local`` runs a job on this machine, with no Slurm.

An emulated allocation of N nodes x M tasks, as local processes that get the variables a Slurm step
would give them, started through the same bootstrap, so TF_CONFIG, the GPU mapping and preemption
handling run the code they run on a cluster. Job arrays and dependencies are emulated too, so
campaigns run here (:mod:`hpc.local.scheduler`). ``jobs`` holds the job records, ``scheduler`` submits,
queries and cancels, ``supervisor`` runs one job; the emulated srun is ``hpc.runtime.node.local_step``.
"""
