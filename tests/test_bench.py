"""bench/gpu_check.py --dry-run: every step of the GPU check run on the CPU with tiny sizes, so
the check works the first time a GPU is lent (there is rarely a second)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, shared_file


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, str]:
    shared = shared_file("media").parent  # the clips, weights and golden vectors it uses
    out = tmp_path_factory.mktemp("gpu_check") / "check.md"
    env = dict(os.environ, GPENVIDEO_SHARED=str(shared))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run",
                           "--out", str(out), "--budget", "400"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    return proc, out.read_text()


def test_dry_run_runs_every_part_and_writes_one_markdown_file(dry_run):
    proc, md = dry_run
    summary = dict(re.findall(r"^\| (\w+) \| (.+) \|$", md.split("## Summary")[-1], re.M))
    assert set(summary) == {"part", "env", "exactness", "gpen", "pipeline", "tests", "detect",
                            "passthrough"}
    failed = {part: status for part, status in summary.items()
              if part != "part" and status != "ok"}
    assert not failed, f"{failed}\n{md[-3000:]}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0


def test_dry_run_measures_what_the_gpu_run_measures(dry_run):
    _, md = dry_run
    # exactness against the golden vectors passes in fp32
    assert re.search(r"\| gpen_tiny64 \| fp32 \| float32 \| [0-9.e-]+ \| .* \| pass", md)
    assert "TF32 off" in md
    # GPEN rows with faces/s, including the naive baseline and a compiled network
    rows = re.findall(r"^\| GPEN-(\d+) \| (\w+) \| (True|False) \| (True|False) \| (\d+) \| "
                      r"([0-9.]+) \|", md, re.M)
    assert {r[0] for r in rows} == {"64", "128"} and any(r[3] == "True" for r in rows)
    assert all(float(r[5]) > 0 for r in rows)
    # end to end on both clips, and the NVENC attempt recorded one way or the other
    for clip in ("1faces.mp4", "4faces.mp4"):
        assert re.search(rf"\| {clip} \| libx264 \| opencv \| \d+ \| [0-9.]+ \|", md)
        assert f"| {clip} | h264_nvenc |" in md
    assert "yunet backend" in md  # detection measured
    assert "```text" in md  # the tests' output is kept
