"""Renders deploykit.core.progress events on stderr, so stdout keeps only results.

On a terminal: the current stage with a spinner and its elapsed time, a line per finished stage with its
duration, and for a fine-tune an overall bar and a batch bar, each with an ETA. Not on a terminal (CI
logs): one plain line per stage as it starts, a line per tenth of a training epoch and one per epoch, so
a log shows where a long command is while it runs, not only when it ends.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from deploykit.cli.app import err_console

_LINES_PER_EPOCH = 10  # not on a terminal: a line every tenth of an epoch (or of the images to decode)


class _Eta(ProgressColumn):
    """'ETA 0:01:23' once a task with a total has a rate; nothing before (a stage has no total)."""

    def render(self, task) -> Text:
        left = task.time_remaining if task.total else None
        return Text("" if left is None else f"ETA {_clock(left)}", style="progress.remaining")


class _Bar(BarColumn):
    """A bar only for work with a total: a stage's pulsing bar would say nothing the spinner does not."""

    def render(self, task):
        return Text("") if task.total is None else super().render(task)


class ProgressDisplay:
    """A context manager whose `update(event)` is the `Progress` callback the pipeline calls."""

    def __init__(self, title: str | None = None, console: Console = err_console) -> None:
        self.console, self.title, self.live = console, title, console.is_terminal
        # fixed widths that add up to 80 columns: a long stage name is cut here (its ✓ line has it whole)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}", table_column=_fixed(30)), _Bar(bar_width=14),
            TextColumn("{task.fields[count]}", table_column=_fixed(11, "right")), TimeElapsedColumn(), _Eta(),
            console=console, transient=True)
        self.tasks: dict[str, int] = {}
        self.start = self.stage_start = time.monotonic()
        self.stage: str | None = None
        self.logged: set[tuple] = set()
        self.epoch_starts: dict[int, tuple[float, int]] = {}  # epoch -> (when, batches done then)

    def __enter__(self) -> "ProgressDisplay":
        if self.title:
            self._line(self.title)
        if self.live:
            self.progress.__enter__()
        return self

    def __exit__(self, kind, *rest) -> None:
        if kind is None:
            self._finish_stage()
        if self.live:
            self.progress.__exit__(kind, *rest)

    def update(self, event: dict) -> None:
        handler = getattr(self, f"_on_{event['event']}", None)
        if handler is not None:
            handler(event)

    # --- events ------------------------------------------------------------------------------------------

    def _on_stage(self, event: dict) -> None:
        self._finish_stage()
        self.stage, self.stage_start = event["name"], time.monotonic()
        if self.live:
            task = self._task("stage", event["name"], None)
            self.progress.reset(task, description=event["name"], total=None)
        else:
            self._line(f"{event['name']}…")

    def _on_step(self, event: dict) -> None:
        epoch, epochs, step, steps = event["epoch"], event.get("epochs"), event["step"], event["steps"]
        self.epoch_starts.setdefault(epoch, (time.monotonic(), step - 1))
        stats = f"loss {event['loss']:.3f}, acc {100 * event['top1']:.0f} %"
        if self.live:
            if epochs:
                overall = self._task("train", "fine-tune", epochs * steps)
                done = epoch * steps + step
                self.progress.update(overall, completed=done, count=f"{done}/{epochs * steps}",
                                     description=f"fine-tune: epoch {epoch + 1} of {epochs}")
            task = self._task(f"epoch{epoch}", f"epoch {epoch + 1}", steps, completed=step - 1)
            self.progress.update(task, completed=step, count=f"{step}/{steps}",
                                 description=f"epoch {epoch + 1}: {stats}")
        elif _tenth_reached(step, steps):
            of = f"/{epochs}" if epochs else ""
            self._line(f"epoch {epoch + 1}{of}: {step}/{steps} batches, {stats}, "
                       f"ETA {_clock(self._eta_in_epoch(event))} for this epoch")

    def _on_epoch(self, event: dict) -> None:
        line = (f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f}, "
                f"train top-1 {100 * event['train_top1']:.2f} %, {event['seconds']:.0f} s")
        finished = [f"epoch{event['epoch'] - 1}"] + (["train"] if event["epoch"] == event["epochs"] else [])
        for task in filter(None, (self.tasks.pop(key, None) for key in finished)):  # none: resumed there
            if self.live:
                self.progress.remove_task(task)
        self._line(line)

    def _on_decode(self, event: dict) -> None:
        self._count("decoding images", event)

    def _on_eval(self, event: dict) -> None:
        self._count("evaluating", event)

    # --- helpers ---------------------------------------------------------------------------------------

    def _count(self, label: str, event: dict) -> None:
        done, total = event["done"], event["total"]
        if self.live:
            task = self._task(label, label, total)
            self.progress.update(task, completed=done, count=f"{done}/{total}")
            if done >= total:  # done: its bar gives way to what comes next
                self.progress.remove_task(self.tasks.pop(label))
        elif _tenth_reached(done, total) and (label, total, done) not in self.logged:
            self.logged.add((label, total, done))
            self._line(f"{label}: {done}/{total}")

    def _task(self, key: str, description: str, total: int | None, completed: int = 0) -> int:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total, completed=completed, count="")
        return self.tasks[key]

    def _finish_stage(self) -> None:
        if self.stage is not None and self.live:
            self._line(f"[green]✓[/] {self.stage}  [dim]{time.monotonic() - self.stage_start:.1f} s[/]")
        self.stage = None

    def _eta_in_epoch(self, event: dict) -> float:
        """Seconds left in this epoch at the rate since this session first saw it (a resumed epoch too)."""
        began, first = self.epoch_starts[event["epoch"]]
        done = event["step"] - first
        return (time.monotonic() - began) / max(done, 1) * (event["steps"] - event["step"])

    def _line(self, text: str) -> None:
        """A line above the bars on a terminal; in a log, plain text behind the time since the start."""
        if self.live:
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(f"{_clock(time.monotonic() - self.start)}  {text}", highlight=False, markup=False)


def _fixed(width: int, justify: str = "left") -> Column:
    return Column(width=width, min_width=width, max_width=width, no_wrap=True, overflow="ellipsis",
                  justify=justify)


def _tenth_reached(done: int, total: int) -> bool:
    """True when `done` crosses a tenth of `total` (and at the end): a log line every tenth."""
    return total > 0 and done * _LINES_PER_EPOCH // total != (done - 1) * _LINES_PER_EPOCH // total


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
