"""gpenvideo: restore faces in videos with GPEN, keeping audio and timing.

    import gpenvideo
    summary = gpenvideo.restore_video("film.mp4", weights="GPEN-BFR-512.pth")

The front door (see api.py): restore_video(), track_video(), load_gpen(), RestoreConfig.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import load_gpen, restore_video, track_video
from .config import RestoreConfig, load_config
from .engine import RunSummary
from .errors import GpenVideoError, InputError

__all__ = ["GpenVideoError", "InputError", "RestoreConfig", "RunSummary", "__version__",
           "load_config", "load_gpen", "restore_video", "track_video"]
