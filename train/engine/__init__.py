"""The training engine: everything one training job needs, and nothing built on top of it.

``loop.run(cfg, dist)`` trains; ``config`` holds the one typed configuration and its flags, ``builders`` the model,
optimiser, schedule and mixed-precision step, ``distributed`` the seam to DDP and Horovod, ``measure``/``breakdown``/
``mfu`` how throughput and its parts are measured, ``gpus`` the run's own GPUs as NVML sees them (memory, energy,
system metrics), ``checkpoint`` atomic checkpoints, ``schema`` every name a run
may log, ``tracking``/``outbox``/``sync`` the MLflow record that survives an absent server, ``launch`` what the
launchers share. The studies (``train.studies``) build on this package; it never imports them.
"""
