"""`deploykit finetune`: train or fine-tune a zoo model (optionally distilling from a teacher), resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from deploykit.cli.app import command, console, plural
from deploykit.cli.options import argument, option, takes, values_for
from deploykit.core.devices import DEFAULT_THREADS

SCRATCH_LR, FINETUNE_LR = 0.2, 0.02


DATA, START, TRAINING, DISTILL, RUN = "Data and output", "Starting point", "Training", "Distillation", "Run"
OPTIONS = (
    argument("model", str, ..., "zoo model name (see `deploykit models`)"),
    option("data", Path, ..., "labelled training images (class folders, dataset.txt, MNIST IDX), or a name under "
           "the shared data folder, e.g. cifar10/train", panel=DATA),
    option("out", Path, ..., "weights file to write (.safetensors); the resumable state goes to "
           "<out>.resume.safetensors beside it", panel=DATA),
    option("eval_data", Optional[Path], None, "measure top-1 here at the end (e.g. cifar10/test)", panel=DATA),
    option("limit", Optional[int], None, "train on a seeded subset of N images", panel=DATA, min=1),
    option("save_dtype", str, "float32", "float32 or float16 for the --out file", panel=DATA),
    option("weights", Optional[Path], None, "starting weights, pruned ones included (their structure is stored "
           "with them); default: a seeded random init", panel=START),
    option("epochs", int, 3, "epochs in total (a resumed run counts those already done)", panel=TRAINING,
           to="config", min=1),
    option("lr", Optional[float], None, f"peak OneCycle learning rate (default {SCRATCH_LR} from scratch, "
           f"{FINETUNE_LR} with --weights)", panel=TRAINING, to="config", min=0.0),
    option("batch_size", int, 128, "images per step (the last partial batch is dropped)", panel=TRAINING,
           to="config", min=1),
    option("weight_decay", float, 5e-4, "L2 on conv/linear weights", panel=TRAINING, to="config", min=0.0),
    option("label_smoothing", float, 0.1, "on the hard-label loss", panel=TRAINING, to="config", min=0.0, max=0.99),
    option("warmup_fraction", float, 0.15, "fraction of steps warming up to the peak lr", panel=TRAINING,
           to="config", flags=("--warmup",), min=0.01, max=0.99),
    option("augment", bool, True, "random crop (padding 4) + horizontal flip", panel=TRAINING, to="config"),
    option("seed", int, 0, "seeds the init, the data order and the augmentation", panel=TRAINING, to="config"),
    option("teacher", Optional[str], None, "distil from this weights file of MODEL, or 'float': the unpruned model "
           "--weights was pruned from", panel=DISTILL),
    option("temperature", float, 4.0, "distillation temperature", panel=DISTILL, to="config", min=0.01),
    option("soft_weight", float, 0.9, "weight of the soft (teacher) loss", panel=DISTILL, to="config", min=0.0,
           max=1.0),
    option("threads", int, DEFAULT_THREADS, "torch threads (results are reproducible per thread count)", panel=RUN,
           min=1),
    option("save_every", Optional[int], None, "also checkpoint every N steps (default: per epoch)", panel=RUN, min=1),
    option("stop_after_epochs", Optional[int], None, "end this session after N epochs; rerun the same command to "
           "continue", panel=RUN, min=1),
)


@command
@takes(OPTIONS)
def finetune(**values) -> None:
    """Train MODEL on --data with SGD + OneCycle, distilling from --teacher when given.

    Rerunning the same command after an interruption resumes from the last checkpoint (epoch end, or every
    --save-every steps) and ends with the same weights as an uninterrupted run.
    """
    from deploykit.cli.progress import ProgressDisplay
    from deploykit.pipeline.finetune import finetune as run_finetune

    with ProgressDisplay() as display:
        outcome = run_finetune(finetune_request(values), progress=display.update)
    _report(outcome)


def finetune_request(values: dict):
    """The FinetuneRequest the command line describes, its training options gathered into a TrainConfig."""
    from deploykit.data.augment import NO_AUGMENT, Augment
    from deploykit.pipeline.finetune import FinetuneRequest
    from deploykit.training import TrainConfig

    config = values_for(OPTIONS, values, "config")
    default_lr = FINETUNE_LR if values["weights"] else SCRATCH_LR
    config.update(lr=default_lr if config["lr"] is None else config["lr"],
                  augment=Augment() if config["augment"] else NO_AUGMENT)
    return FinetuneRequest(**values_for(OPTIONS, values, "request"), config=TrainConfig(**config))


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
