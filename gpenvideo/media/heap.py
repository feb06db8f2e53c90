"""Deterministic heap memory for FFmpeg's libraries in this process (glibc's mallopt).

libx264 as built into PyAV's FFmpeg reads memory it never wrote: the same frames encoded twice
in one process, one thread, gave packets of different sizes (26929, 27165, 26962 bytes for 40
frames), so the output followed whatever the heap held, which depends on timing and load
(issue 12). `deterministic_heap` makes malloc fill every block it hands out with a fixed byte,
and blocks above a fixed size always come zero-filled from mmap (glibc otherwise moves that
threshold as the run allocates). It costs a memset per allocation and holds for the whole
process, so it is set when gpenvideo first opens a video (Decoder, Encoder), not when the
package is imported: a program that imports gpenvideo and never restores keeps its malloc.
"""

from __future__ import annotations

import ctypes

# glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_PERTURB = -6
PERTURB_BYTE = 0x5A  # what malloc'd memory holds until written (its complement, 0xA5)
MMAP_THRESHOLD = 128 << 10  # glibc's initial threshold, now fixed (zero-filled above it)


def deterministic_heap() -> bool:
    """Make uninitialised heap memory the same bytes in every run, from now on, for the whole
    process (glibc only: True if set; False where there is no mallopt, e.g. macOS or musl).
    Setting it again is harmless."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_PERTURB, PERTURB_BYTE))
