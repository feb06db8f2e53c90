"""CPU threads set on purpose: the OpenMP wait policy (before torch is imported), torch's
intra-op threads and OpenCV's thread pool, sized from the cores this process may use.

Why: torch's OpenMP workers spin at every barrier by default. When the machine has more
runnable threads than cores (the pipeline's own stage threads, x264's threads, two restores in
one folder, Ray workers on one host) the spinning workers take the cores from the thread they
wait for, and a restore ran 10-30x slower (bench/RESULTS.md, "CPU threads"). Passive waiting
sleeps on a futex instead.

Results do not depend on the thread count (models/gpen.conv2d; tests/test_determinism.py), so
`--threads` is a speed setting and is left out of the settings digest.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Set before torch (and its OpenMP / MKL runtimes) is first imported; a value the user already
# exported wins. PASSIVE: idle OpenMP workers sleep instead of spinning. OMP_DYNAMIC and
# MKL_DYNAMIC off: the runtimes use exactly the threads they are given, whatever the load.
ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_DYNAMIC": "FALSE", "MKL_DYNAMIC": "FALSE",
               "KMP_BLOCKTIME": "0"}
# Cores beyond these go to the threads beside torch (decode, detect, composite, x264).
MAX_TORCH_THREADS = 16


def prepare_environment(env: MutableMapping[str, str] | None = None) -> bool:
    """Put ENVIRONMENT's values into `env` (default os.environ) where not already set.

    Returns False when torch was imported before (its OpenMP runtime read the old values:
    the wait policy then only applies to processes started afterwards)."""
    env = os.environ if env is None else env
    for key, value in ENVIRONMENT.items():
        env.setdefault(key, value)
    return "torch" not in sys.modules


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, lowered by a cgroup CPU quota
    (containers, `docker run --cpus`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota + 0.5)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs quota / period) limit, or None."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@dataclass(frozen=True)
class ThreadPlan:
    torch: int  # torch intra-op threads (GPEN, RetinaFace, ParseNet on the CPU)
    opencv: int  # OpenCV's parallel_for threads (YuNet, warps and resizes of every stage)


def plan(requested: int = 0, cores: int | None = None) -> ThreadPlan:
    """requested: --threads (0: from the cores). Returns the threads torch and OpenCV get.

    torch gets every core up to MAX_TORCH_THREADS: on the CPU GPEN is almost all of the work,
    and with passive waiting its idle workers leave the cores to the stage threads beside it.
    OpenCV gets the same count (its pool is used by one stage at a time per call)."""
    if requested < 0:
        raise ValueError(f"threads must be 0 (automatic) or more, not {requested}")
    n = requested or min(cores or available_cores(), MAX_TORCH_THREADS)
    return ThreadPlan(torch=n, opencv=n)


def configure(requested: int = 0) -> ThreadPlan:
    """Apply plan(requested) to torch and OpenCV in this process; return it."""
    import cv2
    import torch

    chosen = plan(requested)
    if not prepare_environment():
        policy = os.environ.get("OMP_WAIT_POLICY")
        log.debug("torch was imported before gpenvideo; OMP_WAIT_POLICY=%s may not apply", policy)
    torch.set_num_threads(chosen.torch)
    cv2.setNumThreads(chosen.opencv)
    log.info("threads: torch %d, OpenCV %d (of %d cores)", chosen.torch, chosen.opencv,
             available_cores())
    return chosen
