"""Full sha256 digests for cache keys: canonical JSON of configs, and file or folder contents.

Keys are always the full 64 hex digits (short ones collide: Olive #1936). Contents are hashed, never
trusted from names, sizes or times; a memo keyed by (path, size, mtime, ctime, inode) only saves re-reading
a file set whose stat signature is unchanged since it was hashed (git's index does the same), and is
ignored for files modified within `RACY_SECONDS` of the hash, whose times could hide a later write. The
ctime is what catches an in-place edit that restores size and mtime (`touch -r`, `os.utime`): no user
call can set it back.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file, write_text_atomic

RACY_SECONDS = 2.0
ScannedFile = tuple[str, str, os.stat_result]  # relative posix path, path, stat


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, tuples as lists, paths as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=True)


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__, **dataclasses.asdict(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot put {type(value).__name__} into a cache key")


def content_digest(path: Path, *, memo: Path | None = None) -> str:
    """sha256 of a file's bytes, or of a folder: its sorted relative paths, each with its file's sha256
    (so a renamed, added, removed or edited file changes the digest; the same digest a folder artifact's
    manifest records)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if not (path.is_file() or path.is_dir()):  # a device (/dev/zero) or a socket: reading it may never end
        raise DeployKitError(f"{path} is neither a regular file nor a folder",
                             fix="point it at a weights file or a data folder")
    files = [(path.name, str(path), path.stat())] if path.is_file() else _scan(path)
    signature = _stat_signature(files)
    remembered = _read_memo(memo).get(str(path.resolve()))
    if remembered and remembered.get("signature") == signature:
        return remembered["sha256"]
    digest = sha256_file(path) if path.is_file() else _folder_digest(files)
    if memo is not None and _settled(files):
        _write_memo(memo, str(path.resolve()), {"signature": signature, "sha256": digest})
    return digest


def _scan(root: Path) -> list[ScannedFile]:
    """(relative posix path, path, stat) of every file under `root`, one stat each, in path-part order.
    Plain strings, not Path objects: a 60,000-image dataset is scanned on every cached run. Linked folders
    are followed (a dataset may link its class folders); a link back up the tree is an error, not a hang."""
    found, pending, prefix = [], [str(root)], len(str(root)) + 1
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    if entry.is_symlink():
                        _check_not_a_loop(entry)
                    pending.append(entry.path)
                elif entry.is_file():
                    found.append((entry.path[prefix:].replace(os.sep, "/"), entry.path, entry.stat()))
    return sorted(found, key=lambda item: item[0].split("/"))


def _check_not_a_loop(link: os.DirEntry) -> None:
    target, here = os.path.realpath(link.path), os.path.realpath(os.path.dirname(link.path))
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        raise DeployKitError(f"{link.path} links back to {target}, a folder it is inside: a symlink loop",
                             fix=f"remove the link {link.path}")


def folder_digest(root: Path, *, skip: tuple[str, ...] = ()) -> str:
    """sha256 of a folder: its sorted relative paths, each with its file's sha256. The one definition: a
    folder artifact's manifest records it (`Manifest.finalize`) and cache keys use it (`content_digest`), so
    the two can never drift apart. `skip`: relative paths left out (files a bundle gains where it runs)."""
    return _folder_digest([f for f in _scan(Path(root)) if f[0] not in skip])


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder artifact (.mlpackage, a TensorRT bundle)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(st.st_size for _, _, st in _scan(path))


def _folder_digest(files: list[ScannedFile]) -> str:
    digest = hashlib.sha256()
    for rel, path, _ in files:
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _stat_signature(files: list[ScannedFile]) -> str:
    digest = hashlib.sha256(b"stat-signature v2\n")
    for rel, _, st in files:
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def _settled(files: list[ScannedFile]) -> bool:
    newest = max((st.st_mtime for _, _, st in files), default=0.0)
    return newest < time.time() - RACY_SECONDS


def _read_memo(memo: Path | None) -> dict:
    if memo is None or not memo.is_file():
        return {}
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}  # a damaged memo only costs a re-hash
    return data if isinstance(data, dict) else {}


def _write_memo(memo: Path, key: str, entry: dict) -> None:
    data = _read_memo(memo)
    data[key] = entry
    try:
        write_text_atomic(memo, json.dumps(data, indent=0, sort_keys=True))
    except OSError:
        pass  # read-only cache: hashing again next time is correct, only slower


__all__ = ["artifact_size", "canonical_json", "content_digest", "folder_digest", "sha256_json"]
