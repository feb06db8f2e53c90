"""Where the benchmarks find the shared test data (real clips, photos, detector weights, golden
GPEN vectors), here and on a GPU machine that got a copy of the repository."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_SHARED = "GPENVIDEO_SHARED"  # a folder laid out like ../shared (gpen/, media/, weights/)


def shared_dir() -> Path:
    """$GPENVIDEO_SHARED, else a `shared/` folder inside the checkout (what a device machine
    receives), else `../shared` beside it (the development machines). The first that exists
    wins; the last is returned when none does, so messages name the usual place."""
    candidates = [Path(os.environ[ENV_SHARED])] if os.environ.get(ENV_SHARED) else []
    candidates += [ROOT / "shared", ROOT.parent / "shared"]
    for path in candidates:
        if (path / "media").is_dir() or (path / "weights").is_dir() or (path / "gpen").is_dir():
            return path
    return candidates[-1]
