"""gpenvideo: restore faces in videos with GPEN, keeping audio and timing.

    import gpenvideo
    summary = gpenvideo.restore_video("film.mp4", weights="GPEN-BFR-512.pth")

The front door (see api.py): restore_video(), track_video(), load_gpen(), RestoreConfig.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .threads import prepare_environment  # noqa: E402

prepare_environment()  # OpenMP's wait policy must be in the environment before torch loads

from .api import load_gpen, restore_video, track_video  # noqa: E402
from .config import RestoreConfig, load_config  # noqa: E402
from .engine import RunSummary  # noqa: E402
from .errors import GpenVideoError, InputError  # noqa: E402

__all__ = ["GpenVideoError", "InputError", "RestoreConfig", "RunSummary", "__version__",
           "load_config", "load_gpen", "restore_video", "track_video"]
