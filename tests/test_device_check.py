"""scripts/device_check.sh --cpu: the GPU machine's one-command check runs end to end on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("gpu tests", "step benchmark", "host sync", "meta-training throughput")


def test_device_check_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE_CHECK_SKIP_INSTALL": "1"}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "device_check.md").is_file() and (out / "device_check.json").is_file()
    report = json.loads((out / "device_check.json").read_text())
    status = {s["name"]: s["status"] for s in report["sections"]}
    assert set(status) == set(SECTIONS) and all(status.values()), status
    assert status["host sync"] == "skipped: no CUDA"
    assert not any(s.startswith(("error", "failed", "not run")) for s in status.values()), status
    bench = next(s for s in report["sections"] if s["name"] == "step benchmark")
    rows = {r["rule"]: r for r in bench["rows"] if r["task"] == "fmnist17"}
    for rule in ("ff", "pna"):
        assert rows[rule]["rule_ms"] > 0 and rows[rule]["adam_ms"] > 0 and rows[rule]["fwd_bwd_ms"] > 0
        assert rows[rule]["peak_mib_added"] == "n/a"
    md = (out / "device_check.md").read_text()
    assert all(f"| {name} |" in md for name in SECTIONS) and "torch" in md
    assert elapsed < 200, f"device_check.sh --cpu took {elapsed:.0f} s"
