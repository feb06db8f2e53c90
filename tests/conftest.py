"""Shared fixtures: paths to ../shared, small clips, the CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# $GPENVIDEO_SHARED (bench/gpu_check.py sets it on a GPU machine that got ./shared), else ../shared
SHARED = Path(os.environ.get("GPENVIDEO_SHARED") or ROOT.parent / "shared")
sys.path.insert(0, str(Path(__file__).parent))


def shared_file(*parts: str) -> Path:
    """A file under ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared folder beside the checkout provides it)")
    return path


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_gpen(folder: Path) -> Path:
    """The golden tiny GPEN (64 px) saved as a checkpoint file in `folder`, for --weights."""
    import numpy as np
    import torch

    data = np.load(shared_file("gpen", "gpen_tiny64.npz"))
    path = folder / "tiny64.pth"
    torch.save({k[6:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param/")},
               path)
    return path


def talking_head(path: Path, frames: int, size: int = 512, gop: int | None = None,
                 name: str = "sadtalker_WDA_KatieHill_000.mp4") -> Path:
    """The first `frames` frames of a shared talking-head clip (one face, 25 fps), resized to
    `size` x `size`, with an AAC audio track and a keyframe every `gop` frames, written to
    `path`: the real footage, short enough for a test."""
    import av
    import cv2
    from clips import make_clip

    source = shared_file("media", name)
    with av.open(str(source)) as c:
        images = [f.to_ndarray(format="bgr24") for _, f in zip(range(frames), c.decode(video=0))]
    if images and images[0].shape[:2] != (size, size):
        images = [cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA) for i in images]
    return make_clip(path, frames=len(images), size=(size, size), gop=gop, audio=1,
                     image_fn=lambda i: images[i])
