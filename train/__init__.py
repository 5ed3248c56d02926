"""cnnbench training engine: model registry, training loop, metrics, checkpoints, MLflow tracking."""
