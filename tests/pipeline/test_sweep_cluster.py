"""A real two-node Ray cluster on this machine (`ray start --head` + a second node joining it, one CPU
each), a small sweep run on it with `--address`: trials ran on both nodes and score exactly what the
in-process run scores.

The cluster lives in a private network and PID namespace (`unshare -n -p -f --mount-proc`, root): its only
interface is loopback, so none of its processes can listen beyond it (Ray's `--node-ip-address=127.0.0.1`
does not keep it there on Linux), and `ray stop --force`, which kills by process name, sees only this
cluster's processes. The test reads the namespace's listening sockets while the sweep runs and checks them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.pipeline.sweep_helpers import environment, results, start, sweep_command, write_spec
from tests.pipeline.test_sweep_ray import run_to_end

pytest.importorskip("ray", reason='Ray is the sweep extra: pip install "deploykit[sweep]"')
PORT = 6390  # inside the namespace: no other cluster can hold it
SCRIPT = """\
set -u
ip link set lo up
export HOME={home} RAY_USAGE_STATS_ENABLED=0
readlink /proc/self/ns/net > {out}/netns.txt
ip -o addr > {out}/addresses.txt
{ray} start --head --port={port} --num-cpus=1 --include-dashboard=false --disable-usage-stats > {out}/head.log 2>&1
echo $? > {out}/head.rc
{ray} start --address=127.0.0.1:{port} --num-cpus=1 --disable-usage-stats > {out}/node.log 2>&1
echo $? > {out}/node.rc
( while :; do cat /proc/net/tcp /proc/net/tcp6 >> {out}/sockets.txt; sleep 0.5; done ) &
sampler=$!
{sweep} > {out}/sweep.log 2>&1
echo $? > {out}/sweep.rc
kill $sampler
{ray} stop --force > {out}/stop.log 2>&1
"""


def _can_unshare() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private network namespace (unshare -n)"
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)}" if missing else None


def listeners(proc_net: str) -> list[str]:
    """Local addresses of the LISTEN sockets in /proc/net/tcp and tcp6 dumps (hex, as the kernel writes)."""
    found = []
    for line in proc_net.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:
            found.append(_address(parts[1].split(":")[0]))
    return found


def _address(hex_ip: str) -> str:
    if len(hex_ip) == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))
    words = [bytes.fromhex(hex_ip[i:i + 8])[::-1].hex() for i in range(0, 32, 8)]
    return ":".join(w[i:i + 4] for w in words for i in (0, 4))


LOOPBACK_OR_ANY = ("127.", "0.0.0.0", "0000:0000:0000:0000:0000:0000:0000:0001",
                   "0000:0000:0000:0000:0000:ffff:7f", "0000:0000:0000:0000:0000:0000:0000:0000")


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes_with_the_in_process_accuracies(tmp_path, data_dir):
    why = _can_unshare()
    if why:
        pytest.skip(why)
    spec = write_spec(tmp_path)
    env = environment(tmp_path / "home")
    log = tmp_path / "local.log"
    run_to_end(start(sweep_command(spec, tmp_path / "cache-local", tmp_path / "local", "--workers", "2"), env, log),
               log)
    out = tmp_path / "cluster"
    out.mkdir()
    sweep = " ".join(sweep_command(spec, tmp_path / "cache-cluster", out / "results", "--address",
                                   f"127.0.0.1:{PORT}"))
    script = SCRIPT.format(home=tmp_path / "cluster-home", out=out, port=PORT, sweep=sweep,
                           ray=Path(sys.executable).parent / "ray")
    subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", script], env=env, timeout=900,
                   check=True)
    for step in ("head", "node", "sweep"):
        assert (out / f"{step}.rc").read_text().strip() == "0", (out / f"{step}.log").read_text()[-3000:]

    # loopback only: a namespace of its own, with no address but loopback, and nothing listening elsewhere
    assert (out / "netns.txt").read_text().strip() != os.readlink("/proc/self/ns/net")
    addresses = (out / "addresses.txt").read_text()
    assert "127.0.0.1/8" in addresses and all(" lo " in line for line in addresses.splitlines()), addresses
    seen = listeners((out / "sockets.txt").read_text())
    assert len(seen) >= 4, seen  # gcs, two raylets, workers: the sampling saw the cluster
    assert all(a.startswith(LOOPBACK_OR_ANY) for a in seen), sorted(set(seen))

    doc = results(out / "results")
    rows = doc["rows"]
    assert len(doc["summary"]["nodes"]) == 2
    worked = {r[key] for r in rows for key in ("build_node", "eval_node")}
    assert worked == set(doc["summary"]["nodes"]), (worked, doc["summary"]["nodes"])  # both nodes did trials
    assert all(r["status"] == "ok" and r["reused"] == "" for r in rows)  # computed there, not read back
    local = {(r["trial"], r["device"]): (r["top1"], r["agreement"], r["n"]) for r in results(tmp_path / "local")["rows"]}
    assert local == {(r["trial"], r["device"]): (r["top1"], r["agreement"], r["n"]) for r in rows}
    print(textwrap.shorten(f"nodes {doc['summary']['nodes']}; listeners {sorted(set(seen))}", 400))
