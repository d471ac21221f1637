"""Training: the config, the pure jitted steps, the one loop, tasks (losses and metrics), checkpoints,
the workdir, TensorBoard and multi-host set-up."""
