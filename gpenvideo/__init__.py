"""gpenvideo: restore faces in videos with GPEN, keeping audio and timing.

Public API: restore_video(), load_gpen(), RestoreConfig.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .threads import prepare_environment  # noqa: E402

prepare_environment()  # OpenMP's wait policy must be in the environment before torch loads

from .config import RestoreConfig, load_config  # noqa: E402
from .errors import GpenVideoError, InputError  # noqa: E402

__all__ = ["GpenVideoError", "InputError", "RestoreConfig", "__version__", "load_config"]
