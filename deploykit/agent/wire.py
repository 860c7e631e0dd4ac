"""What travels between the host and the agent, and the checks both sides apply to it.

Arrays travel as .npy bytes, read with `allow_pickle=False` (never pickle: a pickle runs code on load).
Directory artifacts (.mlpackage, a TensorRT bundle) travel as an uncompressed tar archive, written
deterministically (sorted members, zero times and owners) so the same directory always has the same sha256
and the agent can say "already stored" before any upload. Layout of the archive:

    artifact/...     the directory's files
    manifest.json    the artifact's manifest (optional; runtimes read the precision from it)

The agent checks every member before extracting any: regular files and directories only (no symlinks,
hard links, devices, sparse files), relative names without `..`, inside that layout.
"""

from __future__ import annotations

import io
import math
import os
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

PROTOCOL = 1
TOKEN_HEADER = "Authorization"  # "Bearer <token>"
ELAPSED_HEADER = "X-Deploykit-Elapsed-Ms"  # device-side time of the runs behind a /run answer
NPY_TYPE = "application/x-npy"
ARCHIVE_ROOT = "artifact"
ARCHIVE_MANIFEST = "manifest.json"
MAX_MEMBERS = 10_000
CHUNK = 1 << 20

_SHA256 = re.compile(r"[0-9a-f]{64}")


class WireError(ValueError):
    """Input that breaks the protocol; the agent answers it with a 4xx."""


def is_sha256(text: str) -> bool:
    """Exactly 64 lower-case hex digits (the only strings the store turns into paths)."""
    return isinstance(text, str) and _SHA256.fullmatch(text) is not None


# --- arrays ---------------------------------------------------------------------------------------

def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes, *, ndim: int | None = None) -> np.ndarray:
    """A float32 array from .npy bytes; anything else (pickles, other dtypes, ragged files) is a WireError.

    The header is checked against the bytes before anything is allocated: np.load trusts it, so 100 bytes
    claiming shape (1, 3, 100000, 100000) asked for 120 GB (a MemoryError, answered 500)."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(buffer)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise WireError(f"not a .npy array: {exc}") from exc
    if dtype != np.dtype("<f4"):
        raise WireError(f"expected a float32 array, got {dtype}")
    if ndim is not None and len(shape) != ndim:
        raise WireError(f"expected {ndim} dimensions, got shape {list(shape)}")
    if math.prod(shape) == 0:
        raise WireError(f"empty array of shape {list(shape)}")
    if 4 * math.prod(shape) != len(data) - buffer.tell():
        raise WireError(f"the header says shape {list(shape)} ({4 * math.prod(shape)} bytes) but "
                        f"{len(data) - buffer.tell()} bytes follow it")
    flat = np.frombuffer(data, dtype=np.float32, offset=buffer.tell())
    return np.array(flat.reshape(shape, order="F" if fortran_order else "C"), order="C")


# --- directory archives (host side) ---------------------------------------------------------------

def pack_directory(directory: Path, dest: BinaryIO, *, manifest: Path | None = None,
                   exclude: tuple[str, ...] = ()) -> None:
    """Write `directory` (minus the relative paths in `exclude`) and its manifest as a deterministic tar."""
    with tarfile.open(fileobj=dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            rel = path.relative_to(directory).as_posix()
            if rel in exclude:
                continue
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise WireError(f"{path} is not a regular file or directory; artifacts cannot hold links")
            _add(tar, f"{ARCHIVE_ROOT}/{rel}", path)
        if manifest is not None and manifest.is_file():
            _add(tar, ARCHIVE_MANIFEST, manifest)


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode, info.size = 0o644, path.stat().st_size
    with open(path, "rb") as f:
        tar.addfile(info, f)


def is_tar(path: Path) -> bool:
    """A POSIX/GNU tar starts with a header whose magic "ustar" sits at offset 257."""
    with open(path, "rb") as f:
        head = f.read(262)
    return len(head) == 262 and head[257:262] == b"ustar"


# --- directory archives (agent side) --------------------------------------------------------------

def safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, checked; a WireError names the first that is not a plain file or directory inside
    the archive layout."""
    members, seen = [], set()
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise WireError(f"archive has more than {MAX_MEMBERS} members")
        name = _checked_name(member.name)
        if not (member.isreg() or member.isdir()) or member.issparse():
            raise WireError(f"archive member {member.name!r} is not a regular file or directory")
        if name in seen:
            raise WireError(f"archive member {member.name!r} appears twice")
        seen.add(name)
        members.append(member)
    if not any(m.name.startswith(ARCHIVE_ROOT + "/") for m in members):
        raise WireError(f"archive has no {ARCHIVE_ROOT}/ directory")
    return members


def _checked_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or "\0" in name or path.is_absolute():
        raise WireError(f"archive member {name!r} has an absolute or malformed name")
    if any(part in ("..", "") for part in name.rstrip("/").split("/")) or ".." in path.parts:
        raise WireError(f"archive member {name!r} leaves the archive")
    if path.parts[0] != ARCHIVE_ROOT and name != ARCHIVE_MANIFEST:
        raise WireError(f"archive member {name!r} is outside {ARCHIVE_ROOT}/ and {ARCHIVE_MANIFEST}")
    return path.as_posix()


def extract_checked(archive: Path, dest: Path) -> None:
    """Extract a checked archive into the empty directory `dest`, writing only files we create ourselves
    (no tarfile.extractall: modes, owners and link targets from the archive are not applied)."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = safe_members(tar)
            for member in members:
                _extract_member(tar, member, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WireError(f"cannot extract the archive: {exc}") from exc


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    root = dest.resolve()
    target = (dest / member.name).resolve()
    if root not in target.parents:
        raise WireError(f"archive member {member.name!r} leaves the archive")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_member(tar, member, target)


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        while block := source.read(CHUNK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
