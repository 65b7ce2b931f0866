"""Fine-tuning: data preparation, the training loop with checkpoints, experiment tracking."""
