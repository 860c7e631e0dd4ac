"""`deploykit finetune`: train or fine-tune a zoo model (optionally distilling from a teacher), resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from deploykit.cli.app import command, console, plural

SCRATCH_LR, FINETUNE_LR = 0.2, 0.02


@command
def finetune(
    model: str = typer.Argument(..., help="zoo model name (see `deploykit models`)"),
    data: Path = typer.Option(..., help="labelled training images (class folders, dataset.txt, MNIST IDX), "
                                        "or a name under the shared data folder, e.g. cifar10/train"),
    out: Path = typer.Option(..., help="weights file to write (.safetensors); the resumable state goes to "
                                       "<out>.resume.safetensors beside it"),
    weights: Optional[Path] = typer.Option(None, help="starting weights, pruned ones included (their structure "
                                                      "is stored with them); default: a seeded random init"),
    teacher: Optional[str] = typer.Option(None, help="distil from this weights file of MODEL, or 'float': the "
                                                     "unpruned model --weights was pruned from"),
    epochs: int = typer.Option(3, min=1, help="epochs in total (a resumed run counts those already done)"),
    lr: Optional[float] = typer.Option(None, min=0.0, help=f"peak OneCycle learning rate (default {SCRATCH_LR} "
                                                          f"from scratch, {FINETUNE_LR} with --weights)"),
    batch_size: int = typer.Option(128, min=1, help="images per step (the last partial batch is dropped)"),
    weight_decay: float = typer.Option(5e-4, min=0.0, help="L2 on conv/linear weights"),
    label_smoothing: float = typer.Option(0.1, min=0.0, max=0.99, help="on the hard-label loss"),
    temperature: float = typer.Option(4.0, min=0.01, help="distillation temperature"),
    soft_weight: float = typer.Option(0.9, min=0.0, max=1.0, help="weight of the soft (teacher) loss"),
    warmup: float = typer.Option(0.15, min=0.01, max=0.99, help="fraction of steps warming up to the peak lr"),
    augment: bool = typer.Option(True, help="random crop (padding 4) + horizontal flip"),
    seed: int = typer.Option(0, help="seeds the init, the data order and the augmentation"),
    eval_data: Optional[Path] = typer.Option(None, help="measure top-1 here at the end (e.g. cifar10/test)"),
    limit: Optional[int] = typer.Option(None, min=1, help="train on a seeded subset of N images"),
    threads: int = typer.Option(2, min=1, help="torch threads (results are reproducible per thread count)"),
    save_every: Optional[int] = typer.Option(None, min=1, help="also checkpoint every N steps (default: per epoch)"),
    stop_after_epochs: Optional[int] = typer.Option(None, min=1, help="end this session after N epochs; "
                                                                       "rerun the same command to continue"),
    save_dtype: str = typer.Option("float32", help="float32 or float16 for the --out file"),
) -> None:
    """Train MODEL on --data with SGD + OneCycle, distilling from --teacher when given.

    Rerunning the same command after an interruption resumes from the last checkpoint (epoch end, or every
    --save-every steps) and ends with the same weights as an uninterrupted run.
    """
    from deploykit.data.augment import NO_AUGMENT, Augment
    from deploykit.pipeline.finetune import FinetuneRequest, finetune as run_finetune
    from deploykit.training import TrainConfig

    config = TrainConfig(epochs=epochs, lr=lr if lr is not None else (FINETUNE_LR if weights else SCRATCH_LR),
                         batch_size=batch_size, weight_decay=weight_decay, label_smoothing=label_smoothing,
                         warmup_fraction=warmup, temperature=temperature, soft_weight=soft_weight, seed=seed,
                         augment=Augment() if augment else NO_AUGMENT)
    request = FinetuneRequest(model=model, data=data, out=out, config=config, weights=weights, teacher=teacher,
                              eval_data=eval_data, limit=limit, save_every=save_every,
                              stop_after_epochs=stop_after_epochs, save_dtype=save_dtype, threads=threads)
    from deploykit.cli.progress import ProgressDisplay

    with ProgressDisplay() as display:
        outcome = run_finetune(request, progress=display.update)
    _report(outcome)


def _report(outcome) -> None:
    result = outcome.result
    if result.resumed_from:
        console.print(f"resumed from epoch {result.resumed_from['epoch'] + 1}, step {result.resumed_from['step']}",
                      highlight=False)
    if result.stopped_early:
        console.print(f"stopped after {plural(len(result.history), 'epoch')} as asked; rerun the same command to continue",
                      highlight=False)
        return
    console.print(f"[green]wrote[/] {outcome.out}  ({plural(len(result.history), 'epoch')}, {result.seconds / 60:.1f} min "
                  "of training)", highlight=False)
    if outcome.eval_top1 is not None:
        console.print(f"top-1 on {outcome.record['eval_data']}: {100 * outcome.eval_top1:.2f} %", highlight=False)
