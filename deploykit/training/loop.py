"""The one training loop: SGD (Nesterov) with a OneCycle learning rate, label smoothing, optional knowledge
distillation from a teacher, augmentation from `deploykit.data.augment`, and resumable checkpoints.

Used both to train zoo models from scratch (no teacher) and to fine-tune pruned models (teacher: the
unpruned float model). Deterministic for a given seed and thread count: batches are a pure function of
(seed, epoch, step) (`deploykit.data.pixels`), so a run stopped at any checkpoint and resumed ends with
bit-identical weights to an uninterrupted one. Library code: reports progress by callback, never prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import torch
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.core.progress import Progress  # {"event": "step" | "epoch", ...}
from deploykit.data.augment import Augment
from deploykit.data.pixels import PixelSet, steps_per_epoch, train_batches
from deploykit.training.distill import distillation_loss
from deploykit.training.seeding import seeded
from deploykit.training.state import load_state, save_state


@dataclass(frozen=True)
class TrainConfig:
    """What determines the result. `lr` is OneCycle's peak; it warms up from lr/25 over `warmup_fraction` of
    the steps and anneals (cosine) to lr/25e4. Weight decay applies to conv/linear weights only, not to
    BN parameters or biases. `soft_weight` and `temperature` matter only with a teacher."""

    epochs: int = 3
    lr: float = 0.02
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.15
    temperature: float = 4.0
    soft_weight: float = 0.9
    seed: int = 0
    augment: Augment = field(default_factory=Augment)
    channels_last: bool = True

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "lr": self.lr > 0, "batch_size": self.batch_size >= 1,
                  "weight_decay": self.weight_decay >= 0, "momentum": 0 <= self.momentum < 1,
                  "label_smoothing": 0 <= self.label_smoothing < 1, "warmup_fraction": 0 < self.warmup_fraction < 1,
                  "temperature": self.temperature > 0, "soft_weight": 0 <= self.soft_weight <= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise DeployKitError(f"invalid training settings: {', '.join(f'{b}={getattr(self, b)}' for b in bad)}",
                                 fix="see `deploykit finetune --help` for the allowed ranges")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]  # one record per finished epoch: loss, train_top1, seconds, lr
    resumed_from: dict | None  # {"epoch", "step"} when this run continued a checkpoint
    stopped_early: bool  # `stop_after_epochs` ended this session before the last epoch

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.history)


def train(model: nn.Module, data: PixelSet, preprocess: Preprocess, config: TrainConfig, *, checkpoint: Path,
          teacher: nn.Module | None = None, info: dict | None = None, save_every: int | None = None,
          stop_after_epochs: int | None = None, progress: Progress | None = None) -> TrainResult:
    """Train `model` in place on `data`, continuing from `checkpoint` if it exists (same config required)
    and saving there at every epoch end (and every `save_every` steps). `info` (JSON-able, e.g. the pruned
    structure) is stored in the checkpoint and must match on resume."""
    steps = steps_per_epoch(len(data), config.batch_size)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        teacher = None if teacher is None else teacher.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps, pct_start=config.warmup_fraction,
        cycle_momentum=False)
    run = _Run(model, teacher, optimizer, scheduler, config, Path(checkpoint), info or {}, progress)
    run.data, run.preprocess, run.steps = data, preprocess, steps
    with seeded(None):  # the run's own generator state (seeded, or resumed from the checkpoint) stays inside
        resumed = run.resume() if Path(checkpoint).is_file() else None
        if resumed is None:
            torch.manual_seed(config.seed)
        stopped = run.fit(save_every, stop_after_epochs)
    return TrainResult(model.eval(), run.history, resumed, stopped)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


class _Run:
    """The mutable state of one training run: position, history, and how to checkpoint it."""

    data: PixelSet
    preprocess: Preprocess
    steps: int

    def __init__(self, model, teacher, optimizer, scheduler, config: TrainConfig, checkpoint: Path, info: dict,
                 progress: Progress | None) -> None:
        self.model, self.teacher, self.optimizer, self.scheduler = model, teacher, optimizer, scheduler
        self.config, self.checkpoint, self.info = config, checkpoint, info
        self.progress = progress or (lambda event: None)
        self.epoch, self.step, self.history = 0, 0, []
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    def resume(self) -> dict:
        header = load_state(self.checkpoint, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        for key, ours in (("config", self.config.to_dict()), ("info", self.info), ("steps_per_epoch", self.steps)):
            if header.get(key) != ours:
                raise DeployKitError(f"{self.checkpoint} belongs to a different run ({key} differs)",
                                     fix="delete it to start over, or pass another --out")
        self.epoch, self.step, self.history = header["epoch"], header["step"], header["history"]
        self.partial = header["partial"]
        return {"epoch": self.epoch, "step": self.step}

    def fit(self, save_every: int | None, stop_after_epochs: int | None) -> bool:
        """Run to the end, or until `stop_after_epochs` epochs have finished in this session."""
        finished_here = 0
        while self.epoch < self.config.epochs:
            if stop_after_epochs is not None and finished_here >= stop_after_epochs:
                return True
            self._epoch(save_every)
            finished_here += 1
        return False

    def _epoch(self, save_every: int | None) -> None:
        c = self.config
        self.model.train()
        batches = train_batches(self.data, self.preprocess, c.batch_size, augment=c.augment, seed=c.seed,
                                epoch=self.epoch, start_step=self.step)
        last = time.perf_counter()
        for images, labels in batches:
            loss, correct = self._train_step(torch.from_numpy(images), torch.from_numpy(labels))
            p = self.partial
            p["loss_sum"] += loss * len(labels)
            p["correct"] += correct
            p["seen"] += len(labels)
            now = time.perf_counter()
            p["seconds"] += now - last  # data preparation included; checkpoint writes are not
            last = now
            self.step += 1
            self.progress({"event": "step", "epoch": self.epoch, "epochs": self.config.epochs, "step": self.step,
                           "steps": self.steps,
                           "loss": p["loss_sum"] / p["seen"], "top1": p["correct"] / p["seen"],
                           "lr": self.scheduler.get_last_lr()[0]})
            if save_every and self.step % save_every == 0 and self.step < self.steps:
                self._save()
                last = time.perf_counter()
        self._finish_epoch()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher.eval()(images)
        logits = self.model(images)
        c = self.config
        loss = distillation_loss(logits, teacher_logits, labels, temperature=c.temperature,
                                 soft_weight=c.soft_weight, label_smoothing=c.label_smoothing)
        if not math.isfinite(loss.item()):
            raise DeployKitError(f"training diverged (loss {loss.item()}) at epoch {self.epoch + 1}, step {self.step}",
                                 fix="lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), int((logits.argmax(1) == labels).sum())

    def _finish_epoch(self) -> None:
        p = self.partial
        record = {"epoch": self.epoch + 1, "loss": p["loss_sum"] / p["seen"], "train_top1": p["correct"] / p["seen"],
                  "seconds": p["seconds"], "lr_end": self.scheduler.get_last_lr()[0]}
        self.history.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self._save()
        self.progress({"event": "epoch", **record, "epochs": self.config.epochs})

    def _save(self) -> None:
        info = {"epoch": self.epoch, "step": self.step, "history": self.history, "partial": self.partial,
                "config": self.config.to_dict(), "info": self.info, "steps_per_epoch": self.steps}
        save_state(self.checkpoint, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, info=info)
