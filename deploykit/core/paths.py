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
