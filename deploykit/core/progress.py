"""Progress events: what long-running library code tells whoever shows progress. Library code calls a
`Progress` callback and never prints; the CLI renders the events (deploykit/cli/progress.py): bars on a
terminal, one plain line per stage in a log.

Events are small dicts, so any layer can emit them without importing a display:
- `{"event": "stage", "name": str}`: a named step starts (and the one before it ends);
- `{"event": "step", "epoch", "epochs", "step", "steps", "loss", "top1", "lr"}`: a training batch is done
  (epoch counts from 0, step from 1);
- `{"event": "epoch", "epoch", "epochs", "loss", "train_top1", "seconds", ...}`: a training epoch is done
  (epoch counts from 1: epochs done);
- `{"event": "decode" | "eval", "done", "total"}`: images decoded / evaluated so far.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[dict], None]


def report_stage(progress: Progress | None, name: str) -> None:
    """Tell `progress` (if any) that the step `name` starts."""
    if progress is not None:
        progress({"event": "stage", "name": name})
