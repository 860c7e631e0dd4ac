"""Bad input ends in one clear message and a non-zero exit: no traceback, nothing at the output path."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit import zoo


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_exploit(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Exploit(marker)}, f)
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp / "corrupt.pth"
    corrupt.write_bytes(random.Random(1).randbytes(2048))  # seeded: the unpickler's error depends on the bytes
    bad_st = tmp / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    wrong = tmp / "wrong.pth"
    torch.save(zoo.create("mobileone_s0", num_classes=7).state_dict(), wrong)
    exploit = _write_exploit(tmp / "exploit.pth", tmp / "PWNED")
    return {
        "unknown model": (["mobileone_s9"], "unknown model 'mobileone_s9'; did you mean"),
        "missing weights": (["mobileone_s0", "--weights", str(tmp / "nope.pth")], "weights file not found"),
        "corrupt pth": (["mobileone_s0", "--weights", str(corrupt)], "not a readable PyTorch checkpoint"),
        "corrupt safetensors": (["mobileone_s0", "--weights", str(bad_st)], "not a valid safetensors file"),
        "code-executing pickle": (["mobileone_s0", "--weights", str(exploit)], "would run code on load"),
        "wrong shapes": (["mobileone_s0", "--weights", str(wrong)], "shape mismatches: linear.bias (7,) vs model (1000,)"),
        "unknown target": (["mobileone_s0", "--target", "tflite"], "unknown target 'tflite'"),
    }


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return tmp_path_factory.mktemp("bad")


@pytest.mark.parametrize("case", ["unknown model", "missing weights", "corrupt pth", "corrupt safetensors",
                                  "code-executing pickle", "wrong shapes", "unknown target"])
def test_bad_input_fails_cleanly(case, bad_inputs, tmp_path):
    args, expected = _bad_inputs(bad_inputs)[case]
    out = tmp_path / "out"
    proc = run_cli("export", *args, "--input-size", "64", "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    assert not (bad_inputs / "PWNED").exists(), "pickled code was executed"


def test_every_command_has_help(tmp_path):
    for args in (["--help"], ["export", "--help"], ["models", "--help"]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0 and "Usage" in proc.stdout, (args, proc.stderr)


def test_export_end_to_end(tmp_path):
    proc = run_cli("export", "repvgg_a0", "--input-size", "64", "--out", "arts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PASS (fp32)" in proc.stdout and (tmp_path / "arts" / "repvgg_a0.onnx").is_file()
    assert (tmp_path / "arts" / "repvgg_a0.onnx.manifest.json").is_file()


# --- inputs that ended as "internal error ... report it" (issue 15, items 11, 13 and 15) --------------

RECIPE = """\
model: resnet20_cifar
weights: {weights}
data: {{eval: {data}}}
devices: [host-cpu-ort]
stages:
  - name: folded
    passes: [reparameterize, fold_bn]
    options: {options}
"""


def _data(tmp: Path) -> Path:
    from PIL import Image

    (tmp / "data" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp / "data" / "cat" / "0.png")
    return tmp / "data"


def _recipe(tmp: Path, *, weights: str = "random", options: str = "{}", data: Path | None = None) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "r.yaml"
    path.write_text(RECIPE.format(weights=weights, data=data or _data(tmp), options=options))
    return str(path)


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "a-file").write_text("x")
    (tmp / "a-folder").mkdir()
    loop = _data(tmp / "looped")
    (loop / "cat" / "again").symlink_to("..")
    long_out = str(tmp / ("x" * 300))
    return {
        "export --out a file": (["export", "resnet20_cifar", "--random-init", "--out", str(tmp / "a-file")],
                                "is a file"),
        "export --out an over-long path": (["export", "resnet20_cifar", "--random-init", "--out", long_out],
                                           "File name too long"),
        "export --weights /dev/zero": (["export", "resnet20_cifar", "--weights", "/dev/zero"],
                                       "weights file is not a regular file: /dev/zero"),
        "prune --out a folder": (["prune", "resnet20_cifar", "--ratio", "0.3", "--out", str(tmp / "a-folder")],
                                 "is a folder"),
        "prune --out a .pth": (["prune", "resnet20_cifar", "--ratio", "0.3", "--out", str(tmp / "p.pth")],
                               "name it p.safetensors"),
        "run --cache a file": (["run", _recipe(tmp / "c"), "--dry-run", "--cache", str(tmp / "a-file")],
                               "the cache folder"),
        "python tag in options": (["run", _recipe(tmp / "t", options="{opset: !!python/object/apply:os.system "
                                                                   "[touch PWNED]}"), "--dry-run"],
                                  "r.yaml:8: the tag !!python/object/apply:os.system is not allowed"),
        "recursive alias": (["run", _recipe(tmp / "a", options="&o {opset: *o}"), "--dry-run"],
                            "r.yaml:8: the value here holds an alias to itself"),
        "symlink loop in the data": (["run", _recipe(tmp / "l", data=loop), "--dry-run"],
                                     "links back to"),
        "weights: /dev/zero": (["run", _recipe(tmp / "z", weights="/dev/zero"), "--dry-run"],
                               "/dev/zero is neither a regular file nor a folder"),
        "eval --data an over-long path": (["eval", "resnet20_cifar", "--data", long_out], "File name too long"),
    }


CASES = ["export --out a file", "export --out an over-long path", "export --weights /dev/zero",
         "prune --out a folder", "prune --out a .pth", "run --cache a file", "python tag in options",
         "recursive alias", "symlink loop in the data", "weights: /dev/zero", "eval --data an over-long path"]


@pytest.fixture(scope="module")
def more_bad_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("more")
    return tmp, _cases(tmp)


@pytest.mark.parametrize("case", CASES)
def test_more_bad_input_is_one_message_naming_the_fix(case, more_bad_inputs):
    tmp, cases = more_bad_inputs
    args, expected = cases[case]
    proc = run_cli(*args, cwd=tmp)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr and "fix:" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp / "PWNED").exists()
    assert (tmp / "a-folder").is_dir() and list((tmp / "a-folder").iterdir()) == []


def test_an_alias_bomb_in_a_recipe_is_refused_in_bounded_memory(tmp_path):
    """510 bytes of nested aliases in a stage's options took more than 3 GB and ended in "internal error:
    MemoryError" (item 11). Run under a 2 GiB address-space limit, so a regression fails instead of
    swapping the machine."""
    import resource

    bomb = "[" + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]" for i in range(9)) + "]"
    recipe = _recipe(tmp_path, options="{calib_method: " + bomb + "}")
    assert len(Path(recipe).read_text()) < 700

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "deploykit", "run", recipe, "--dry-run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 2 and "r.yaml:8: the value here expands to more than 10000 values" in proc.stderr, \
        proc.stderr[-2000:]
