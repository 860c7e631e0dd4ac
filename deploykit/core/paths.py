"""Where deploykit finds things that live outside the package.

The only module that reads environment variables for locations, so a test or a CI job can point the
whole toolkit elsewhere by setting one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "DEPLOYKIT_DATA"


def project_root() -> Path:
    """The directory that holds the `deploykit` package (the repository checkout)."""
    return Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Shared real data and weights: `$DEPLOYKIT_DATA`, else `<project root>/../shared/data`.

    Not checked for existence: callers say what they were looking for when a file is missing.
    """
    override = os.environ.get(DATA_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return project_root().parent / "shared" / "data"


CACHE_ENV_VAR = "DEPLOYKIT_CACHE"


def cache_dir() -> Path:
    """Derived, disposable files (decoded training pixels): `$DEPLOYKIT_CACHE`, else `<tmp>/deploykit-cache`."""
    import tempfile

    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path(tempfile.gettempdir()) / "deploykit-cache"


PIPELINE_CACHE_ENV_VAR = "DEPLOYKIT_PIPELINE_CACHE"
PIPELINE_CACHE_DIR = ".deploykit-cache"


def pipeline_cache_dir(override: Path | None = None) -> Path:
    """Artifacts and measurements of `deploykit run`/`check`, content-addressed: `override` (--cache), else
    `$DEPLOYKIT_PIPELINE_CACHE`, else `.deploykit-cache/` in the working directory (kept with the project)."""
    if override is not None:
        return Path(override).expanduser()
    from_env = os.environ.get(PIPELINE_CACHE_ENV_VAR)
    return Path(from_env).expanduser() if from_env else Path.cwd() / PIPELINE_CACHE_DIR
