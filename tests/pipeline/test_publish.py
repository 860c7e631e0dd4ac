"""Publishing an export: an artifact is used only with the manifest that describes it, the user's files at
an artifact's name are never deleted, a killed export's staging folder is swept, and the manifest is as
readable as the artifact (issue 15, items 6, 14 and 16)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deploykit import zoo
from deploykit.core.devices import load_device
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import manifest_path
from deploykit.pipeline.evaluate import EvalRequest, run_eval
from deploykit.pipeline.export import ExportRequest, export
from deploykit.pipeline.profile import profile_artifacts

MODEL = "resnet20_cifar"  # 32x32, exports in about a second


def _export(out: Path, weights: Path | None = None, *, force: bool = False):
    return export(ExportRequest(model=MODEL, out_dir=out, weights=weights, random_init=weights is None, force=force))


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory) -> tuple[Path, Path]:
    """The same model exported twice with different weights: (old artifact, new artifact)."""
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(1)
    weights = root / "other.pth"
    torch.save(zoo.create(MODEL).state_dict(), weights)
    return _export(root / "old").artifact, _export(root / "new", weights).artifact


def _images(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / label / f"{i}.png")
    return folder


def test_a_new_manifest_beside_an_old_artifact_is_refused_by_eval_and_profile(two_exports, tmp_path):
    """What a crash between publishing the manifest and renaming the artifact leaves: eval and profile used
    the old artifact with the new manifest's claims (issue 15, item 6)."""
    old, new = two_exports
    mixed = tmp_path / "mixed" / old.name
    mixed.parent.mkdir()
    shutil.copy(old, mixed)
    shutil.copy(manifest_path(new), manifest_path(mixed))
    data = _images(tmp_path / "data")
    with pytest.raises(DeployKitError) as err:
        run_eval(EvalRequest(target=str(mixed), data=data, limit=4))
    assert "is not the artifact its manifest describes" in err.value.message and "re-export" in err.value.fix
    with pytest.raises(DeployKitError, match="is not the artifact its manifest describes"):
        profile_artifacts([mixed], load_device("host-cpu-ort"), runs=1, warmup=0)
    shutil.copy(manifest_path(old), manifest_path(mixed))  # the matching pair is used as before
    assert run_eval(EvalRequest(target=str(mixed), data=data, limit=4)).result.n == 4


def test_a_crash_while_publishing_leaves_a_pair_that_is_never_used(two_exports, tmp_path, monkeypatch):
    """Kill the publish step between its two writes: the next use refuses the half-published pair."""
    old, _ = two_exports
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(old, out / old.name)
    shutil.copy(manifest_path(old), manifest_path(out / old.name))
    real_replace = os.replace

    def replace(src, dst):  # the manifest's own atomic write goes through; the artifact's rename is "killed"
        if Path(dst).name == old.name:
            raise KeyboardInterrupt  # what the process sees of a SIGINT at that moment
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    torch.manual_seed(2)
    weights = tmp_path / "w.pth"
    torch.save(zoo.create(MODEL).state_dict(), weights)
    with pytest.raises(KeyboardInterrupt):
        _export(out, weights, force=True)  # other weights: a different export, replaced on request
    monkeypatch.undo()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # its staging folder went too
    with pytest.raises(DeployKitError, match="is not the artifact its manifest describes"):
        run_eval(EvalRequest(target=str(out / old.name), data=_images(tmp_path / "data"), limit=2))


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_the_users_files_at_an_artifacts_name_are_never_deleted(tmp_path, kind):
    """`export` deleted a folder at the artifact's final name with the user's files in it (item 14). Rule:
    only an artifact whose manifest names it is replaced; anything else is refused, before any work."""
    out = tmp_path / "out"
    final = out / f"{MODEL}.onnx"
    if kind == "folder":
        (final / "notes").mkdir(parents=True)
        (final / "notes" / "thesis.txt").write_text("five years of work")
    else:
        out.mkdir()
        final.write_text("my own graph")
    with pytest.raises(DeployKitError) as err:
        _export(out)
    assert f"{final} exists and is not a deploykit artifact" in err.value.message and "--out" in err.value.fix
    if kind == "folder":
        assert (final / "notes" / "thesis.txt").read_text() == "five years of work"
    else:
        assert final.read_text() == "my own graph"
    assert sorted(p.name for p in out.iterdir()) == [final.name]


def test_a_deploykit_artifact_is_replaced(tmp_path):
    first = _export(tmp_path)
    second = _export(tmp_path)  # its manifest names it: ours to replace
    assert first.artifact == second.artifact and second.manifest.sha256 != first.manifest.sha256  # unseeded init
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{MODEL}.onnx", f"{MODEL}.onnx.manifest.json"]


def test_the_manifest_is_as_readable_as_the_artifact(tmp_path):
    """Manifests were 0600 (mkstemp's mode) beside 0644 artifacts (item 16)."""
    outcome = _export(tmp_path)
    artifact_mode = stat.S_IMODE(outcome.artifact.stat().st_mode)
    manifest_mode = stat.S_IMODE(manifest_path(outcome.artifact).stat().st_mode)
    assert manifest_mode == artifact_mode and manifest_mode & stat.S_IROTH, (oct(manifest_mode), oct(artifact_mode))


def _staging(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".deploykit-"))


def test_a_killed_exports_staging_folder_is_swept_by_the_next(tmp_path):
    """SIGKILL mid-export left `.deploykit-*` folders behind for good (item 16)."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "deploykit", "export", MODEL, "--random-init", "--out",
                             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and _staging(out)):
            assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it staged"
            time.sleep(0.005)
        time.sleep(0.2)  # mid-build (the ONNX export and parity run take a second or more), not mid-mkdir
        assert proc.poll() is None, "the export ended before it was killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    left = _staging(out)
    assert left, "the kill left nothing to sweep"
    _export(out)
    assert _staging(out) == [], left
    assert (out / f"{MODEL}.onnx").is_file()


def test_a_live_staging_folder_is_not_swept(tmp_path):
    """A concurrent export's staging folder holds its lock: the sweep leaves it alone."""
    from deploykit.core.publish import STAGING_PREFIX, staging_dir, sweep_staging

    (tmp_path / ".deploykit-cache").mkdir()  # the pipeline cache's name: never taken for staging
    with staging_dir(tmp_path) as live:
        assert live.name.startswith(STAGING_PREFIX)
        assert sweep_staging(tmp_path) == [] and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".deploykit-cache"]


@pytest.mark.parametrize("case", ["out is a file", "read-only out", "over-long path"])
def test_an_unusable_output_folder_is_one_clear_error(tmp_path, case):
    """`export --out` an existing file, a read-only folder or an over-long path ended as an internal error
    (item 13)."""
    out = tmp_path / "out"
    if case == "out is a file":
        out.write_text("x")
        expected = "is a file"
    elif case == "over-long path":
        out = tmp_path / ("x" * 300)
        expected = "cannot write in .*File name too long"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o555)
        expected = "not writable"
    try:
        with pytest.raises(DeployKitError, match=expected) as err:
            _export(out)
        assert "--out" in err.value.fix
    finally:
        out.chmod(0o755) if os.path.isdir(out) else None
