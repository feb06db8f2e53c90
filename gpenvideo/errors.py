"""Errors the package raises. The CLI turns them into one line for the user and an exit code.

Every message names the file concerned and says what to do about it.
"""

from __future__ import annotations


class GpenVideoError(Exception):
    """Base class. `exit_code` is what the CLI exits with (1: internal failure)."""

    exit_code = 1


class InputError(GpenVideoError):
    """The input (a file, an option value) is unusable: exit code 2."""

    exit_code = 2


class OutputError(GpenVideoError):
    """The output cannot be written where asked (exists, not writable): exit code 2."""

    exit_code = 2


class WeightsError(GpenVideoError):
    """A checkpoint is missing, corrupt or not the model it claims to be: exit code 2."""

    exit_code = 2


class EncodeError(GpenVideoError):
    """The encoder or muxer failed while writing the output: exit code 1."""


class DeviceError(GpenVideoError):
    """The requested compute device is unusable (no CUDA, bad index): exit code 2."""

    exit_code = 2


class Cancelled(GpenVideoError):
    """The run was interrupted (Ctrl-C or a stop request): exit code 130."""

    exit_code = 130
