"""Publishing an artifact and its manifest into an output folder, and sweeping what a killed export left.

An export builds in a staging folder beside its output (`.deploykit-staging-XXXXXXXX/`, so the final rename
never crosses a file system) and publishes in this order:

1. the manifest, written atomically (temp file + rename), readable like any file the user writes;
2. the artifact, renamed into place.

A crash can therefore leave only a manifest without an artifact (nothing to use), or, when an export replaces
an older one, the new manifest beside the old artifact. The second is caught where artifacts are used:
`manifest.verified_manifest` compares the manifest's sha256 with the artifact's bytes and refuses a pair that
disagrees. A visible deploykit artifact always has its manifest.

Only a deploykit artifact is ever replaced: a file or folder already at the final name without a manifest
naming it (the user's own files) is refused, never deleted.

Each staging folder holds an exclusive `flock` on its `.lock` file while its export runs; the kernel drops
the lock when the process dies, even by SIGKILL, so the next export into the same folder removes staging
folders nobody holds (and never one a concurrent export is using).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, manifest_path

STAGING_PREFIX = ".deploykit-staging-"
LOCK_FILE = ".lock"
# Staging folders of deploykit before the lock file existed: mkdtemp's 8 random characters after ".deploykit-"
# (".deploykit-cache", the pipeline cache, does not match). Without a lock they are judged by age.
_LEGACY_STAGING = re.compile(r"\.deploykit-[a-z0-9_]{8}")
LEGACY_AGE_S = 3600.0


@contextlib.contextmanager
def staging_dir(parent: Path) -> Iterator[Path]:
    """A fresh staging folder in `parent` (created if needed), locked while the block runs, then removed.
    Leftovers of killed exports in `parent` are swept first."""
    parent = ensure_output_dir(parent)
    sweep_staging(parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
    except OSError as exc:
        raise _unwritable(parent, exc) from exc
    lock = _hold_lock(staging)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.close()


@contextlib.contextmanager
def new_folders_removed_on_failure(path: Path) -> Iterator[None]:
    """Folders on the way to `path` that the block creates are removed again (when empty) if it fails, so a
    failed command leaves no empty output folder behind."""
    missing, folder = [], Path(path).absolute()
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for created in missing:  # deepest first; a folder holding anything stays
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


def ensure_output_dir(path: Path) -> Path:
    """`path` as a folder deploykit can write in (created if absent), or one error saying what is wrong."""
    path = Path(path)
    if os.path.exists(path) and not path.is_dir():
        raise DeployKitError(f"the output folder {path} is a file", fix="pass a folder (or a new name) to --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DeployKitError(f"the output folder {path} is not writable",
                             fix="choose a folder you can write in (--out), or fix its permissions")
    return path


def check_output_dir(path: Path) -> Path:
    """What `ensure_output_dir` would refuse, found without creating anything (so a failed export leaves no
    empty folder): a file on the way, an unwritable parent, a name longer than the file system takes."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DeployKitError(f"the output folder {path} is a file" if existing == path else
                             f"the output folder {path} lies under {existing}, which is a file",
                             fix="pass a folder (or a new name) to --out")
    limit = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if any(len(part.encode()) > limit for part in path.relative_to(existing).parts):
        raise DeployKitError(f"cannot write in {path}: File name too long (over {limit} bytes)",
                             fix="choose a writable output folder (--out) with a shorter path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DeployKitError(f"the output folder {existing} is not writable",
                             fix="choose a folder you can write in (--out), or fix its permissions")
    return path


def check_output_file(path: Path, suffix: str, option: str = "--out") -> Path:
    """`path` as a file deploykit can write, of the format its suffix promises, or one error saying why not
    (a `.pth` would hold safetensors bytes that every loader, deploykit's own included, reads as a pickle)."""
    path = Path(path)
    if os.path.isdir(path):
        raise DeployKitError(f"{option} {path} is a folder", fix=f"give a file name, e.g. {path / ('out' + suffix)}")
    if path.suffix != suffix:
        raise DeployKitError(f"{option} {path}: the file holds {suffix} data, and a name ending in "
                             f"{path.suffix or '(no suffix)'} makes every loader, deploykit's own included, read it "
                             "as another format", fix=f"name it {path.with_suffix(suffix).name}")
    ensure_output_dir(path.parent)
    return path


def check_replaceable(final: Path) -> None:
    """Refuse to publish over anything at `final` that deploykit did not publish: a file or folder there is
    replaced only when its manifest names it (`--force` and other overwrite rules are for later; this keeps
    the user's own files)."""
    final = Path(final)
    if not os.path.lexists(final):  # (Path.exists raises on an over-long name)
        return
    if final.is_symlink() or not _is_deploykit_artifact(final):
        kind = "folder" if final.is_dir() and not final.is_symlink() else "file"
        raise DeployKitError(f"{final} exists and is not a deploykit artifact (no manifest beside it names it); "
                             f"refusing to replace the {kind}",
                             fix="move it away, or export into another folder with --out")


def publish_artifact(staged: Path, final: Path, manifest: Manifest) -> None:
    """Manifest first, then the artifact by rename (see the module docstring)."""
    check_replaceable(final)
    manifest.write(manifest_path(final))
    if final.is_dir():  # a directory artifact (.mlpackage) cannot be replaced by rename; it is ours (checked)
        shutil.rmtree(final)
    os.replace(staged, final)


def sweep_staging(parent: Path) -> list[str]:
    """Remove the staging folders in `parent` that no live export holds; their names."""
    removed = []
    for entry in list(Path(parent).iterdir()) if Path(parent).is_dir() else []:
        if entry.is_dir() and not entry.is_symlink() and _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _abandoned(folder: Path) -> bool:
    if folder.name.startswith(STAGING_PREFIX):
        lock = folder / LOCK_FILE
        if lock.is_file():
            return _lock_is_free(lock)
        return _older_than(folder, 60.0)  # created this instant, its lock not taken yet: leave it
    return bool(_LEGACY_STAGING.fullmatch(folder.name)) and _older_than(folder, LEGACY_AGE_S)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return path.stat().st_mtime < time.time() - seconds
    except OSError:
        return False


def _hold_lock(staging: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: leftovers are swept by age only
        return None
    handle = open(staging / LOCK_FILE, "w")  # noqa: SIM115 - held until the export ends
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _lock_is_free(lock: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return _older_than(lock, LEGACY_AGE_S)
    try:
        with open(lock, "r") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # released with the handle; nobody holds it: its export is gone
    except OSError:
        return False


def _is_deploykit_artifact(final: Path) -> bool:
    try:
        return Manifest.read(manifest_path(final)).artifact == final.name
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _unwritable(path: Path, exc: OSError) -> DeployKitError:
    return DeployKitError(f"cannot write in {path}: {exc.strerror or exc}",
                          fix="choose a writable output folder (--out) with a shorter path")


__all__ = ["check_output_dir", "check_output_file", "check_replaceable", "ensure_output_dir", "new_folders_removed_on_failure", "publish_artifact", "staging_dir", "sweep_staging"]
