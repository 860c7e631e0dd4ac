"""The CLI's rendering of progress events (core/progress.py): a line per stage in a log, bars and finished-stage
lines with durations on a terminal (issue 16, item 1)."""

from __future__ import annotations

import io

from rich.console import Console

from deploykit.cli.progress import ProgressDisplay


def _events(steps: int = 20) -> list[dict]:
    events = [{"event": "stage", "name": "calibrate"}, {"event": "stage", "name": "candidate 1 of 6 (minmax)"},
              {"event": "stage", "name": "fine-tune"}]
    events += [{"event": "decode", "done": i, "total": 500} for i in range(1, 501)]
    events += [{"event": "step", "epoch": 0, "epochs": 1, "step": s, "steps": steps, "loss": 1.0, "top1": 0.5,
                "lr": 0.1} for s in range(1, steps + 1)]
    return events + [{"event": "epoch", "epoch": 1, "epochs": 1, "loss": 1.0, "train_top1": 0.5, "seconds": 3}]


def _render(terminal: bool) -> str:
    console = Console(file=io.StringIO(), width=80, force_terminal=terminal, color_system=None)
    with ProgressDisplay("exporting m to onnx", console=console) as display:
        for event in _events():
            display.update(event)
    return console.file.getvalue()


def test_a_log_gets_one_plain_line_per_stage_and_a_line_every_tenth_of_an_epoch():
    lines = _render(terminal=False).splitlines()
    text = "\n".join(lines)
    for stage in ("exporting m to onnx", "calibrate…", "candidate 1 of 6 (minmax)…", "fine-tune…"):
        assert sum(line.endswith(stage) for line in lines) == 1, text
    assert sum("batches" in line for line in lines) == 10 and "epoch 1/1: 20/20 batches" in text
    assert sum("decoding images" in line for line in lines) == 10
    assert "epoch 1/1: loss 1.0000, train top-1 50.00 %, 3 s" in text
    assert "\x1b" not in text and all(len(line) <= 80 for line in lines)


def test_a_terminal_gets_each_finished_stage_with_its_duration():
    text = _render(terminal=True)
    for stage in ("calibrate", "candidate 1 of 6 (minmax)", "fine-tune"):
        assert f"✓ {stage}  " in text
    assert "epoch 1/1: loss 1.0000" in text and "decoding images" in text
