"""Knowledge distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531): soft targets from a teacher at temperature T, plus the usual hard-label loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor, *,
                      temperature: float, soft_weight: float, label_smoothing: float) -> torch.Tensor:
    """soft_weight * T² * KL(teacher_T || student_T) + (1 - soft_weight) * CE(student, labels).

    The T² keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton, section 2).
    Without a teacher this is plain (label-smoothed) cross-entropy.
    """
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if teacher is None:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return soft_weight * soft + (1.0 - soft_weight) * hard
