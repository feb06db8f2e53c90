"""The layout's import rules (tools/imports.py): only gpenvideo/media imports av, no stage
imports another, the leaf modules import nothing of the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import imports


def test_the_package_keeps_its_import_rules():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "imports.py")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert "import rules: all kept" in result.stdout
    graph = imports.graph(ROOT)
    assert "av" in graph["media.decode"][1] and "media.decode" in graph["media.encode"][0]


def test_a_broken_rule_is_reported():
    graph = {"restorer": ({"frames", "detector"}, {"numpy"}),
             "engine": ({"frames"}, {"av"}),
             "frames": ({"config"}, set()),
             "tracker": ({"frames"}, {"numpy", "cv2"})}
    problems = imports.broken_rules(graph)
    assert problems == [
        "stage restorer imports detector", "engine imports av (only gpenvideo.media may)",
        "frames imports config (it may import nothing of the package)",
        "tracker imports cv2 (numpy and scipy only)"]
