"""The zoo as static metadata, for `deploykit models`: one JSON file written from the registry.

Listing the zoo must not build 27 models (16 s on this machine, most of it torch's import and the RepVGG-B
builds): `catalog.json` holds what the listing shows, and `scripts/zoo_catalog.py` rewrites it from the
registry. tests/zoo/test_catalog.py recomputes it, so a model added or changed without a new catalog fails
there. Reading it imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path

CATALOG = Path(__file__).resolve().with_name("catalog.json")

# Where a model's default weights come from, and what to pass (the `deploykit models` caption).
WEIGHT_SOURCES = {
    "released": "the publisher's checkpoint, from a pip package (dev requirements); used by default",
    "shared-data": "the publisher's checkpoint in the shared data folder (DEPLOYKIT_DATA); used by default",
    "trained-here": "trained by deploykit (weights/README.md); used by default",
    "none": "pass --weights FILE (a checkpoint in a layout the model loads) or --random-init",
}


def read_catalog() -> list[dict]:
    """The rows of `catalog.json`, in registry order."""
    return json.loads(CATALOG.read_text())["models"]


def weight_source(entry) -> str:
    """One of WEIGHT_SOURCES, from where the entry's default weights file lives (not whether it is there)."""
    from deploykit.core.errors import DeployKitError
    from deploykit.core.paths import data_dir, project_root

    if entry.default_weights is None:
        return "none"
    try:
        path = Path(entry.default_weights()).resolve()
    except DeployKitError:  # a weights package that is not installed: only packages are located this way
        return "released"
    if path.is_relative_to(data_dir().resolve()):
        return "shared-data"
    return "trained-here" if path.is_relative_to(project_root() / "weights") else "released"
