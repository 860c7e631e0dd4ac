"""Rewrite deploykit/zoo/catalog.json (what `deploykit models` lists) from the zoo registry.

Usage: python scripts/zoo_catalog.py    (run it after adding or changing a zoo model; a test checks it)
"""

from __future__ import annotations

import json

from deploykit.core.fsutil import write_text_atomic
from deploykit.pipeline.zoo_cost import build_catalog
from deploykit.zoo.catalog import CATALOG


def main() -> None:
    write_text_atomic(CATALOG, json.dumps(build_catalog(), indent=1) + "\n")
    print(f"wrote {CATALOG}")


if __name__ == "__main__":
    main()
