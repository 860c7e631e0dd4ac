"""The README's commands run as written and print what the README shows (issue 16, item 4).

Every command block of README.md is classified below, so a new block must say how it is tested. A block
runs verbatim in a fresh folder (recipes/ and scripts/ linked in, data names resolving under the shared data
folder), `deploykit` and `.venv/bin/...` being this interpreter; its key figures must appear both in the
README and in what the command printed, so neither can drift alone."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FAST, SLOW = "fast", "slow"

# first line of the block (prefix) -> (how it runs, key figures, or why it is not run here)
BLOCKS = {
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && .venv/bin/deploykit export":
        (SLOW, ["43 Conv, 0 BatchNormalization, fp32", "PASS (fp32)"]),
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && .venv/bin/python -m pytest":
        ("skip", "it is this test suite"),
    "$ deploykit export mobileone_s1 --target onnx":
        (FAST, ["(19.0 MB, 43 Conv, 0 BatchNormalization, fp32)", "weights: random init (untrained)",
                "PASS (fp32)", "top-1 agreement 100.0%", "43 blocks folded (43 protocol), 0 conv/linear-BN pairs"]),
    "$ deploykit export timm/mobileone_s1 --random-init":
        (SLOW, ["(19.0 MB, 43 Conv, 0 BatchNormalization, fp32)", "39 blocks folded (39 graph), 4 conv/linear-BN"]),
    "deploykit export resnet56_cifar --int8 --calib cifar10/train            # for ONNX Runtime":
        ("skip", "the int8 exports take minutes each (tests/cli/test_int8_cli.py runs them smaller)"),
    "deploykit prune resnet56_cifar": ("skip", "a fine-tune on 50,000 images: hours on 2 cores"),
    "deploykit export resnet56_cifar --target onnx": ("skip", "the profile of 1,000 images on two runtimes "
                                                              "takes minutes (tests/cli/test_profile_cmd.py)"),
    "openssl rand -hex 32": ("skip", "needs a device running the agent"),
    "export DEPLOYKIT_AGENT_TOKEN": ("skip", "needs a Jetson"),
    "- uses: actions/cache@v4": ("skip", "GitHub Actions configuration"),
    'pip install -q "deploykit[sweep]"': ("skip", "installs; the sweeps run for minutes (tests/pipeline/test_sweep_*)"),
    'pip install -q "deploykit[litert,executorch]"': ("skip", "installs the optional edge extras; the LiteRT and "
                                                       "ExecuTorch exports are tested where they are installed"),
    "import torch": (SLOW, []),
}


def _blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in re.findall(r"```(\w+)\n(.*?)```", README, re.S)]


def _kind(body: str):
    """(how it runs, detail), or None for a block BLOCKS does not classify (exactly once)."""
    matches = [v for k, v in BLOCKS.items() if body.splitlines()[0].startswith(k)]
    return matches[0] if len(matches) == 1 else None


def test_every_readme_block_is_classified():
    unclassified = [body.splitlines()[0] for _, body in _blocks() if _kind(body) is None]
    assert not unclassified, f"classify these README blocks in tests/test_readme.py BLOCKS: {unclassified}"


def _commands(lang: str, body: str) -> list[str]:
    """Shell lines of a block: `$ ` lines of an output block, else every line (continuations joined)."""
    if lang == "python":
        return [f"{shlex.quote(sys.executable)} -c {shlex.quote(body)}"]
    text = body.replace("\\\n", " ")
    lines = [ln[2:] for ln in text.splitlines() if ln.startswith("$ ")] if lang == "text" else text.splitlines()
    commands = []
    for line in lines:
        line = line.split("python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && ")[-1]
        line = re.sub(r"\s+# .*$", "", line).strip()
        python = shlex.quote(sys.executable)
        line = re.sub(r"(^|&& )(\.venv/bin/)?(deploykit|python) ",
                      lambda m: f"{m[1]}{python} {'-m deploykit ' if m[3] == 'deploykit' else ''}", line)
        commands.append(line)
    return [c for c in commands if c]


def _run_block(lang: str, body: str, tmp_path: Path) -> str:
    for folder in ("recipes", "scripts", "devices"):
        (tmp_path / folder).symlink_to(REPO / folder)
    env = {**os.environ, "DEPLOYKIT_DATA": str(DATA_DIR), "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = []
    for command in _commands(lang, body):
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, f"README command failed: {command}\n{done.stderr[-2000:]}"
        out.append(done.stdout)
    return "\n".join(out)


def _params():
    for lang, body in filter(lambda block: _kind(block[1]) is not None, _blocks()):
        kind, detail = _kind(body)
        first = body.splitlines()[0][:60]
        if kind == "skip":
            yield pytest.param(lang, body, detail, id=first, marks=pytest.mark.skip(reason=detail))
        else:
            yield pytest.param(lang, body, detail, id=first, marks=[pytest.mark.slow] if kind == SLOW else [])


@pytest.mark.parametrize(("lang", "body", "figures"), list(_params()))
def test_readme_block_runs_and_prints_its_figures(lang, body, figures, tmp_path):
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR}")
    printed = " ".join(_run_block(lang, body, tmp_path).split())  # a figure may wrap in the output
    for figure in figures:
        assert figure in README, f"key figure {figure!r} is no longer in the README"
        assert figure in printed, f"README shows {figure!r}; the command printed:\n{printed[-3000:]}"
