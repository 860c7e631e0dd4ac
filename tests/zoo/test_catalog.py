"""`deploykit models` reads deploykit/zoo/catalog.json: it must say what the registry computes, and list it
without importing torch (the listing took 16 s when it built every model). Its parameter counts are checked
against the deploy forms in tests/profile/test_cost.py, which computes them anyway."""

from __future__ import annotations

import subprocess
import sys

from deploykit import zoo
from deploykit.zoo.catalog import WEIGHT_SOURCES, read_catalog, weight_source

ROWS = {row["name"]: row for row in read_catalog()}
HEAVY = ("torch", "onnx", "onnxruntime")


def test_catalog_lists_every_registered_model_as_registered():
    assert list(ROWS) == zoo.names(), "rerun `python scripts/zoo_catalog.py`"
    for name, row in ROWS.items():
        entry = zoo.get(name)
        assert (row["family"], row["input"], row["num_classes"]) == (entry.family, entry.input_size,
                                                                     entry.num_classes), name
        assert row["paper_params_m"] == entry.paper.get("params_m"), name
        assert row["layouts"] == [layout.name for layout in entry.layouts], name
        assert row["weights"] == weight_source(entry) and row["weights"] in WEIGHT_SOURCES, name


def test_weight_sources_are_where_the_files_are():
    assert {n: ROWS[n]["weights"] for n in ("resnet56_cifar", "mobileone_s0_cifar", "efficientnet_lite0",
                                            "mobileone_s1")} == {
        "resnet56_cifar": "shared-data", "mobileone_s0_cifar": "trained-here", "efficientnet_lite0": "released",
        "mobileone_s1": "none"}


def test_models_lists_weights_within_80_columns_without_importing_torch():
    probe = ("import sys\nfrom deploykit.cli.app import app, _register_commands\n_register_commands()\n"
             "try:\n    app(['models'])\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', *sorted(set(sys.modules) & set(sys.argv[1:])))")
    out = subprocess.run([sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True, check=True,
                         env={"COLUMNS": "80", "PATH": ""}).stdout
    assert out.splitlines()[-1] == "HEAVY"
    lines = out.splitlines()[:-1]
    assert max(len(line) for line in lines) <= 80
    for name, row in ROWS.items():
        assert any(line.split()[:1] == [name] and row["weights"] in line.split() for line in lines), name
