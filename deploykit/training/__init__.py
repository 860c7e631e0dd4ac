"""Training and fine-tuning: one loop (SGD + OneCycle, optional knowledge distillation), resumable
checkpoints, weights files that carry their pruned structure and their training record."""

from deploykit.training.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
