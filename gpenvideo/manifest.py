"""What makes an output complete and whose it is: input fingerprints, a digest of the settings
that shape the output, the sidecar manifest written beside each finished output, and the lock
that keeps two runs from writing the same output.

A finished output `film_restored.mp4` has `film_restored.mp4.gpenvideo.json` beside it. A later
run with the same input (size, mtime, or failing those the SHA-256) and the same settings skips
it. The lock is an advisory `flock` on `.film_restored.mp4.lock`: the kernel releases it when
its process ends in any way (Ctrl-C, crash, kill -9), so a stale lock never blocks a later run.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RestoreConfig
from .errors import GpenVideoError, InputError, OutputError

MANIFEST_SUFFIX = ".gpenvideo.json"
HASH_CHUNK = 1 << 20
# Settings that change speed but not a single output pixel; left out of the settings digest.
SPEED_ONLY = {("model", "channels_last"), ("model", "compile"),
              ("decode", "threads"), ("pipeline", "queue_size"), ("pipeline", "progress"),
              ("model", "weights_dir"), ("pipeline", "threads")}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_fingerprint(path: Path, with_hash: bool = True) -> dict[str, Any]:
    """Size, mtime (ns) and SHA-256 of a file (the hash only when asked: it reads the file)."""
    st = path.stat()
    doc: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        doc["sha256"] = sha256_of(path)
    return doc


def same_input(path: Path, recorded: dict[str, Any]) -> bool:
    """Whether `path` is still the file `recorded` describes: same size and mtime, or same size
    and content (a copy or a touched file)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return recorded.get("sha256") == sha256_of(path)


def settings_digest(cfg: RestoreConfig, model_files: Sequence[Path] = (),
                    mode: str = "restore") -> str:
    """SHA-256 of everything that shapes the output: the settings (less SPEED_ONLY), the run
    mode, the package version and the model files in use (name, size, mtime of each)."""
    doc = {section: {k: v for k, v in values.items() if (section, k) not in SPEED_ONLY}
           for section, values in dataclasses.asdict(cfg).items()}
    doc["mode"] = mode
    doc["version"] = __version__
    files = []
    for path in model_files:
        st = path.stat()
        files.append([path.name, st.st_size, st.st_mtime_ns])
    doc["model_files"] = files
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + MANIFEST_SUFFIX)


def write_manifest(output: Path, source: Path, settings: str, summary: dict[str, Any]) -> None:
    """Record that `output` is complete for `source` and `settings` (atomically)."""
    st = output.stat()
    doc = {"gpenvideo": __version__, "input": str(source.resolve()),
           "input_file": input_fingerprint(source), "settings": settings,
           "output_file": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}, "summary": summary}
    write_json_atomic(manifest_path(output), doc)


def is_complete(output: Path, source: Path, settings: str) -> bool:
    """Whether `output` exists, is unchanged since its manifest was written, and was made from
    this `source` with these `settings`."""
    try:
        doc = json.loads(manifest_path(output).read_text(encoding="utf-8"))
        st = output.stat()
    except (OSError, ValueError):
        return False
    recorded = doc.get("output_file", {})
    return (doc.get("settings") == settings and st.st_size == recorded.get("size")
            and st.st_mtime_ns == recorded.get("mtime_ns")
            and same_input(source, doc.get("input_file", {})))


def write_json_atomic(path: Path, doc: Any, indent: int | None = 1) -> None:
    """Write JSON so that a crash or power loss leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=indent, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputLock:
    """An exclusive, non-blocking advisory lock on one output. `acquire()` returns False when
    another live process holds it. Released on `release()` or when the process ends."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(f".{output.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            try:  # the holder before us may have removed the file between our open and lock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def filesystem_error(exc: OSError, source: Path, output: Path) -> GpenVideoError | None:
    """A filesystem failure met while restoring `source` into `output` (or writing the lock,
    temporary file, work folder or manifest beside it), as the one line a user acts on: it names
    the input, the output or its folder, never our hidden working names. None when `exc` is not
    such a failure (or concerns some other file)."""
    code = exc.errno
    name = exc.filename if isinstance(exc.filename, str) else None
    if name is not None and Path(name).resolve() == source.resolve():
        if code in NOT_WRITABLE:
            return InputError(f"{source}: cannot read this file ({os.strerror(code)}); "
                              "make it readable")
        return None
    folder = output.parent
    if name is not None and Path(name).resolve() in (folder.resolve(), *folder.resolve().parents):
        if code in NOT_WRITABLE:  # creating the output folder (or one above it) was refused
            return OutputError(f"{name}: cannot create this output folder ({os.strerror(code)}); "
                               f"make {Path(name).parent} writable or choose another output "
                               "folder with -o")
        return None
    if name is not None and Path(name).resolve().parent not in (
            folder.resolve(), folder.resolve() / f".{output.name}.gpenvideo-work"):
        return None  # another file (a model, a cache): not the output's fault
    if code in NOT_WRITABLE:
        return OutputError(f"{folder}: cannot write {output.name} in this folder "
                           f"({os.strerror(code)}); make the folder writable or choose another "
                           "output folder with -o")
    if code == errno.ENOENT and folder.is_dir():  # /proc, /sys: files cannot be created there
        return OutputError(f"{folder}: cannot write {output.name} in this folder (the "
                           "filesystem does not take new files); choose another output folder "
                           "with -o")
    if code in NO_SPACE:
        return OutputError(f"{output}: the disk is full ({os.strerror(code)}); free space on "
                           f"the disk holding {folder}, or write elsewhere with -o")
    if code == errno.EFBIG:
        return OutputError(f"{output}: the file grew larger than the filesystem holding {folder} "
                           "or a file size limit allows (File too large); write it to another "
                           "filesystem with -o (FAT32 holds at most 4 GB per file) or raise "
                           "the limit (ulimit -f)")
    if code == errno.EIO:
        return OutputError(f"{output}: the disk holding {folder} failed to write "
                           f"({os.strerror(code)}); check the disk or write elsewhere with -o")
    return None
