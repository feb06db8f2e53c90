"""Where an output goes: the one naming rule for single runs and batches, checks of a target
before anything is written, temporary names for writing in progress, and the clean-up of those
left by killed runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import manifest
from .errors import InputError, OutputError
from .media import container_for, default_output_suffix


def is_folder_name(output: str | Path) -> bool:
    """Whether an output the user gave names a folder: one that exists, or a name ending in a
    slash or without a suffix (`-o out/`, `-o restored`); such a folder is created when missing."""
    text = str(output)
    return (text.endswith(("/", os.sep)) or Path(text).is_dir()
            or (not Path(text).suffix and not Path(text).exists()))


def output_name(source: Path, folder: Path | None = None) -> tuple[Path, list[str]]:
    """The default output of `source`: `<name>_restored.<ext>` in `folder` (default: beside the
    source), and the notes to tell the user about it. An input in an old container (AVI, DV,
    MPEG-PS, WebM ...) gets an .mkv output and a note saying so. The one naming rule, for
    single runs and batches alike."""
    suffix = default_output_suffix(source)
    name = f"{source.stem}_restored{suffix}"
    output = (folder if folder is not None else source.parent) / name
    notes = []
    if suffix != source.suffix.lower():
        kind = source.suffix.lower() or "source"  # e.g. .ts: MPEG-TS output is not supported
        notes.append(f"writing {name}: gpenvideo writes MKV, MP4 or MOV, not {kind}; "
                     f"MKV holds every stream of the {kind}")
    return output, notes


def resolve_output(source: Path, output: Path | None, overwrite: bool) -> tuple[Path, list[str]]:
    """Where the output goes: `output`, or `<name>_restored.<ext>` beside the source, or in the
    folder `output` names (see is_folder_name; segments.prepare creates it when missing).

    Returns the target and notes for the user (see output_name).
    Raises OutputError if the target is the input itself, exists without `overwrite`, or the
    folder of the target is a file; InputError for an output suffix whose container is not
    supported. A missing folder, of a named file too, is created by the caller.
    """
    notes: list[str] = []
    named_file = output is not None and not is_folder_name(output)
    if not named_file:
        output, notes = output_name(source, output)
    if container_for(output) is None:
        raise InputError(f"{output}: unsupported output type {output.suffix!r}; "
                         "name the output .mkv, .mp4, .mov or .m4v, or a folder")
    if output.resolve() == source.resolve():
        raise OutputError(f"{output}: is the input file; choose another output name")
    if output.parent.exists() and not output.parent.is_dir():
        raise OutputError(f"{output}: {output.parent} is a file, not a folder; "
                          "choose another output folder")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; pass --overwrite to replace it")
    return output, notes


PARTIAL_MARK = ".partial-"  # in the names of files being written: .NAME.partial-PID.EXT


def temporary_path(output: Path) -> Path:
    """A name beside `output` for writing in progress (renamed over `output` when complete)."""
    return output.with_name(f".{output.stem}{PARTIAL_MARK}{os.getpid()}{output.suffix}")


def remove_stale_partials(output: Path, locked: bool) -> list[Path]:
    """Remove what runs killed while writing `output` left beside it: the temporary output
    (`.NAME.partial-PID.EXT`), the files its writer kept beside it under its name plus a
    suffix (`.NAME.partial-PID.EXT.video.mov`, the video the ffmpeg encoder writes before
    muxing) and the manifest's temporary file (`.NAME.EXT.gpenvideo.json.partial-PID`): files
    of processes no longer alive, or, when the caller holds the output's lock (so no other run
    can be writing it), all of them except this process's own. Returns the files removed."""
    removed: list[Path] = []
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        pid = partial_pid(path.name, output)
        if pid is None or pid == os.getpid():
            continue
        if not locked and _pid_alive(pid):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def partial_pid(name: str, output: Path) -> int | None:
    """The process id in `name` when it is one of the files a run writing `output` makes
    beside it (see remove_stale_partials), else None."""
    # (prefix, suffix) of each kind: the output itself and manifest.write_json_atomic's file
    kinds = ((f".{output.stem}{PARTIAL_MARK}", output.suffix),
             (f".{manifest.manifest_path(output).name}{PARTIAL_MARK}", ""))
    for prefix, suffix in kinds:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        tail = rest[len(digits):]
        # the file itself, or (the output's only) a file named after it plus a suffix
        if digits and (tail == suffix or (suffix and tail.startswith(suffix + "."))):
            return int(digits)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def user_names(text: str, output: Path) -> str:
    """`text` (an error message) with every hidden name of a file a run writing `output` makes
    beside it (partial_pid), bare or as a path, replaced by `output` as the user named it."""
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        return str(output) if partial_pid(Path(word).name, output) is not None else word

    return re.sub(r"[^\s'\"()\[\]]+", swap, text)
