"""Many inputs in one run: files, folders (recursive, by video extension) and list files;
`-o DIR` mirrors the input tree; finished outputs are skipped; a bad file is reported and the
batch goes on; each output is locked while it is written; a JSON and a CSV report at the end.

The model is loaded once, on the first file that needs it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import api, engine, manifest, outputs, segments
from .config import RestoreConfig, validate
from .errors import Cancelled, EncodeError, GpenVideoError, InputError, OutputError
from .quality import format_track_table

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".dv", ".mpg", ".mpeg", ".vob", ".ts",
    ".m2ts", ".mts", ".m2t", ".3gp", ".wmv", ".flv", ".mxf", ".ogv", ".qt", ".divx", ".y4m"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path | None  # the output file, or with `into` the folder to write into; None: beside
    into: bool = False  # output is a folder (created when missing)


@dataclass
class Outcome:
    """One row of the batch report."""

    input: str
    # done, skipped (finished earlier), busy (another run holds it), failed, interrupted
    # (Ctrl-C or a stop signal while it ran; the batch stopped there), not started (after
    # the interrupted one)
    status: str
    output: str = ""
    duration: float = 0.0  # seconds of video
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    warnings: list[str] = field(default_factory=list)
    encoder: str = ""  # the video encoder used
    # this run's time on the file, from its start to the output in place: opening the input,
    # loading the model (when this file was the first to need it), rendering and muxing
    seconds: float = 0.0
    fps: float = 0.0  # frames rendered by this run (reused segments left out) / seconds
    segments: int = 0  # pieces the film was processed in (0: not recorded)
    segments_resumed: int = 0  # of those, reused from an earlier, interrupted run
    frames_resumed: int = 0  # of `frames`, those in the reused segments
    error: str = ""  # why it failed, one line
    exit_code: int = 0
    per_track: list[dict] = field(default_factory=list)  # quality.TRACK_FIELDS, one per track
    traceback: str = ""  # of the failure, with --debug


def collect(inputs: list[Path], output: str | Path | None) -> list[Job]:
    """The files to restore and where each goes. Folders are searched recursively for video
    extensions (hidden entries, the output folder and files that are our own outputs are left
    out); a .txt/.lst file lists one path per line (# comments; relative to the list's folder).
    `output` names a folder when outputs.is_folder_name says so (`out/`, `restored`); pass the
    user's text as it was typed, since a Path drops the trailing slash.
    Raises InputError for an input that does not exist or a folder with no video."""
    folder = output is not None and outputs.is_folder_name(output)
    output = Path(output) if output is not None else None
    many = len(inputs) > 1 or any(p.is_dir() or _is_list(p) for p in inputs)
    if many and output is not None and output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file, but several inputs need an output folder; "
                         "give -o a folder")
    if many and output is not None and not folder:  # `-o one.mp4`: a file's name
        raise InputError(f"{output}: several inputs need an output folder, not a file name; "
                         f"give -o a folder (e.g. -o {output.with_suffix('')}/)")
    jobs: list[Job] = []
    for item in inputs:
        if _is_list(item):
            jobs += [Job(p, output, True) if output is not None else Job(p, None)
                     for p in _read_list(item)]
        elif item.is_dir():
            found = _videos_in(item, output)
            if not found:
                raise InputError(f"{item}: no video files found in this folder (looked for "
                                 f"{', '.join(sorted(VIDEO_EXTENSIONS))})")
            for path in found:
                dest = output / path.parent.relative_to(item) if output is not None else None
                jobs.append(Job(path, dest, dest is not None))
        else:
            into = output is not None and (many or folder)
            jobs.append(Job(item, output, into))
    seen: set[Path] = set()
    unique = []
    for job in jobs:
        key = job.source.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(job)
    return unique


def _is_list(path: Path) -> bool:
    return path.suffix.lower() in LIST_EXTENSIONS and path.is_file()


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the list of files ({exc})") from exc
    entries = [line.strip() for line in lines]
    return [(path.parent / e) for e in entries if e and not e.startswith("#")]


def _videos_in(folder: Path, output: Path | None) -> list[Path]:
    skip = output.resolve() if output is not None else None
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if skip is not None and (path.resolve() == skip or skip in path.resolve().parents):
            continue
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS \
                and not manifest.manifest_path(path).exists():  # not one of our outputs
            found.append(path)
    return found


def target_for(job: Job) -> tuple[Path, list[str]]:
    """The output file of a job and the notes to tell the user about its name (an old
    container's input gets an .mkv output: outputs.output_name, as for a single run). The
    folder in job.output is created when missing, by the caller."""
    if job.output is not None and not job.into:
        return job.output, []
    return outputs.output_name(job.source, job.output)


def run_batch(jobs: list[Job], cfg: RestoreConfig, *, identity: bool = False,
              overwrite: bool = False, progress: engine.ProgressCallback | None = None,
              on_start: Callable[[int, int, Path], None] | None = None,
              on_done: Callable[[Outcome], None] | None = None,
              ray_address: str | None = None, debug: bool = False) -> list[Outcome]:
    """Restore every job in turn. A file that fails, whatever the error, is reported
    (Outcome.status "failed" with the one-line cause, logged as an error) and the batch goes
    on; Ctrl-C (KeyboardInterrupt, Cancelled) stops it, the file it stopped in handed to
    on_done as "interrupted" and each later one as "not started". With a single job its
    outcome is handed to on_done and then its error raised: a GpenVideoError (a filesystem
    failure becomes an OutputError naming the user's file or folder), or the unexpected
    exception as it was.
    debug: keep each failure's traceback in Outcome.traceback and in the log.
    ray_address: render segments on a Ray cluster (distributed.RayExecutor; "" starts a local
    one); None renders here. Raises InputError, before Ray is started, for --faces/--skip-faces
    with Ray."""
    cfg = validate(cfg)
    if ray_address is not None and (cfg.select.faces or cfg.select.skip_faces):
        raise InputError("--faces/--skip-faces name whole-film track ids, which segments "
                         "rendered on Ray do not share; leave out --ray or the choice")
    stages: dict[str, Any] = {"ray": ray_address}  # the model or Ray workers, made on first use
    settings = api.settings_digest(cfg, identity)
    outcomes = []
    try:
        for number, job in enumerate(jobs, 1):
            if on_start:
                on_start(number, len(jobs), job.source)
            try:
                outcome, error, _ = _run_job(job, cfg, identity, overwrite, settings, stages,
                                             progress, debug)
            except (Cancelled, KeyboardInterrupt):  # in the table and report, then stop
                # this file, and the later ones too, so the report says what is left
                for status, left in [("interrupted", job), *(("not started", later)
                                                             for later in jobs[number:])]:
                    outcome = Outcome(input=str(left.source), status=status)
                    with contextlib.suppress(Exception):
                        outcome.output = str(target_for(left)[0])
                    outcomes.append(outcome)
                    if on_done:
                        on_done(outcome)
                raise
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
            if error is not None:
                if len(jobs) == 1:
                    raise error
                if debug:
                    log.error("%s\n%s", outcome.error, outcome.traceback.rstrip())
                elif outcome.exit_code == 1:
                    log.error("%s (run again with --debug for the traceback)", outcome.error)
                else:
                    log.error("%s", outcome.error)
    finally:
        if "executor" in stages:
            stages["executor"].close()
    return outcomes


def run_one(job: Job, cfg: RestoreConfig, *, identity: bool = False, overwrite: bool = False,
            progress: engine.ProgressCallback | None = None) -> tuple[Outcome, engine.RunSummary]:
    """Restore one job as the command does (lock, skip when complete, manifest), for the
    library (api.restore_video). Returns the outcome and the run's summary (for a skipped,
    complete output: one made from its manifest, with every segment counted as resumed).
    Raises the job's error (see _user_error); OutputError when another run holds the output."""
    cfg = validate(cfg)
    settings = api.settings_digest(cfg, identity)
    outcome, error, summary = _run_job(job, cfg, identity, overwrite, settings, {"ray": None},
                                       progress, False)
    if error is not None:
        raise error
    if outcome.status == "busy":
        raise OutputError(f"{outcome.output}: another gpenvideo run is writing it; wait for it")
    if summary is None:  # skipped: complete from an earlier run
        summary = engine.RunSummary(input=outcome.input, output=outcome.output,
                                    frames=outcome.frames, faces=outcome.faces,
                                    tracks=outcome.tracks, duration=outcome.duration,
                                    frames_resumed=outcome.frames, segments_resumed=1,
                                    notes=list(outcome.warnings))
    return outcome, summary


def _run_job(job: Job, cfg: RestoreConfig, identity: bool, overwrite: bool, settings: str,
             stages: dict, progress: engine.ProgressCallback | None, debug: bool
             ) -> tuple[Outcome, Exception | None, engine.RunSummary | None]:
    """Restore one job. Returns its outcome, when it failed the error to report (see
    _user_error), and when it ran the summary; Cancelled and KeyboardInterrupt propagate. A failed
    or stopped job leaves nothing behind: no output, temporary file, lock, manifest, work folder
    without a finished segment, nor an output folder this job created (while it is empty)."""
    outcome = Outcome(input=str(job.source), status="failed")
    started = time.monotonic()
    target: Path | None = None
    created: list[Path] = []
    try:
        target, notes = target_for(job)
        outcome.output = str(target)
        created = _make_folders(target)  # `-o out/`, `-o out/film.mkv`: made when missing
        lock = manifest.OutputLock(target)
        if not lock.acquire():
            outcome.status = "busy"
            outcome.warnings.append(f"another gpenvideo run is writing {target}; left to it")
            log.warning("%s: another gpenvideo run is writing %s; skipped", job.source, target)
            return outcome, None, None
        with lock:
            if not overwrite and manifest.is_complete(target, job.source, settings):
                outcome.status = "skipped"
                _fill_from_manifest(outcome, target)
                return outcome, None, None
            outputs.remove_stale_partials(target, locked=True)  # left by a kill -9
            written = False  # the output is in place (its manifest is not yet)
            try:
                summary = _restore_one(job.source, target, cfg, identity, overwrite, stages,
                                       progress, notes)
                written = True
                # one clock for the line, sidecar and report: the file's whole time in this run
                # (opening, the model's loading when this file needed it, rendering, muxing)
                summary.seconds = time.monotonic() - started
                summary.notes[:0] = [n for n in notes if n not in summary.notes]
                doc = _summary_doc(summary)
                manifest.write_manifest(target, job.source, settings, doc)
            except Exception:
                _remove_unfinished(target, written)
                raise
        outcome.status = "done"
        _fill(outcome, doc)
        outcome.seconds = doc["seconds"]  # as in the sidecar
        outcome.fps = round(summary.fps, 2)  # frames rendered by this run / those seconds
    except (Cancelled, KeyboardInterrupt):  # Ctrl-C, SIGTERM: stopped, and nothing left
        _remove_empty_folders(created)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, not fatal
        error = _user_error(exc, job.source, target)
        if isinstance(error, GpenVideoError):
            outcome.error, outcome.exit_code = " ".join(str(error).split()), error.exit_code
        else:
            outcome.error, outcome.exit_code = _internal_line(job.source, error), 1
        if debug:
            outcome.traceback = traceback.format_exc()
        _remove_empty_folders(created)
        return outcome, error, None
    return outcome, None, summary


def _make_folders(target: Path) -> list[Path]:
    """Create the folder of `target` and its missing parents; return those created, outermost
    first (removed again, while empty, when the job fails). Raises OutputError when one of
    them is a file; OSError when the filesystem refuses."""
    folder = target.parent
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    blocking = next((f for f in (folder, *folder.parents) if f.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputError(f"{target}: {blocking} is a file, not a folder; choose another "
                          "output folder")
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders a stopped or failed job created (outermost first in `created`),
    innermost first, while they are empty: one that holds anything (a work folder kept for
    --resume, another job's output) stays, and so do those around it."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def _remove_unfinished(target: Path, written: bool) -> None:
    """After a failure: remove `target` when this run had put it in place but could not record
    it (no manifest), and a work folder that holds no finished segment (one that does is kept
    for a later run to resume)."""
    if written:
        target.unlink(missing_ok=True)
    work = segments.WorkFolder(target)
    if work.path.is_dir() and not any(work.path.glob("seg-*.json")):
        work.remove()


def _user_error(exc: Exception, source: Path, target: Path | None) -> Exception:
    """The error to tell the user about a failed job: a filesystem failure as an OutputError
    or InputError naming the user's file or folder (manifest.filesystem_error); one whose
    message names a hidden temporary file of the output with the output's name instead (an
    EncodeError when it was not a GpenVideoError: it failed writing); else as it was (a
    GpenVideoError, or an internal failure)."""
    if isinstance(exc, OSError) and not isinstance(exc, GpenVideoError) and target is not None:
        error = manifest.filesystem_error(exc, source, target)
        if error is not None:
            error.__cause__ = exc
            return error
    if target is not None:
        text = " ".join(str(exc).split())
        shown = outputs.user_names(text, target)
        if shown != text:  # it names our hidden temporary file: say the user's output instead
            error = (type(exc)(shown) if isinstance(exc, GpenVideoError) else
                     EncodeError(f"writing {target} failed ({type(exc).__name__}: {shown}); "
                                 "run again with --debug for the traceback"))
            error.__cause__ = exc
            return error
    return exc


def _internal_line(source: Path, exc: BaseException) -> str:
    """One line for an unexpected failure of `source`: its type and message, whitespace
    collapsed."""
    text = " ".join(str(exc).split())
    return f"{source}: internal error: {type(exc).__name__}{': ' + text if text else ''}"


def _restore_one(source: Path, target: Path, cfg: RestoreConfig, identity: bool,
                 overwrite: bool, stages: dict, progress: engine.ProgressCallback | None,
                 notes: list[str]) -> engine.RunSummary:
    """Restore one file into `target`; `notes` (about the output's name) are logged once the
    input and output are known to be usable. The source is opened once, before any model is
    loaded (segments.prepare); `stages` keeps the loaded recipe or the Ray executor for the
    next file. When `target` is there already (and not to be overwritten) the model is loaded
    first, so that what is wrong with it (a file that is no checkpoint, --device cuda without
    CUDA) is said before "already exists", and once."""
    if (stages["ray"] is None and not identity and "recipe" not in stages
            and target.exists() and not overwrite):
        stages["recipe"] = api.restore_recipe(cfg)
    with segments.prepare(source, target, cfg, overwrite) as plan:
        for note in notes:
            log.warning("%s", note)
        executor = None
        if stages["ray"] is not None:
            if "executor" not in stages:
                from .distributed import RayExecutor

                stages["executor"] = RayExecutor(cfg, stages["ray"], identity=identity)
            executor = stages["executor"]
            # the workers hold the model; here only the sizes and the digest are needed
            recipe = api.IDENTITY if identity else api.restore_plan_recipe(cfg)
        elif identity:
            recipe = api.IDENTITY
        else:
            if "recipe" not in stages:
                stages["recipe"] = api.restore_recipe(cfg)
            recipe = stages["recipe"]
        return segments.execute(plan, recipe, progress, executor)


def _summary_doc(summary: engine.RunSummary) -> dict:
    return {"duration": summary.duration, "frames": summary.frames, "faces": summary.faces,
            "tracks": summary.tracks, "warnings": summary.notes,
            "seconds": round(summary.seconds, 3), "segments": summary.segments,
            "segments_resumed": summary.segments_resumed,
            "frames_resumed": summary.frames_resumed, "encoder": summary.encoder,
            "per_track": summary.per_track}


def _fill(outcome: Outcome, doc: dict) -> None:
    outcome.duration = round(float(doc.get("duration") or 0.0), 3)
    outcome.frames = int(doc.get("frames", 0))
    outcome.faces = int(doc.get("faces", 0))
    outcome.tracks = int(doc.get("tracks", 0))
    outcome.warnings = list(doc.get("warnings", []))
    outcome.per_track = list(doc.get("per_track", []))
    outcome.encoder = str(doc.get("encoder", ""))
    outcome.segments = int(doc.get("segments", 0))
    outcome.segments_resumed = int(doc.get("segments_resumed", 0))
    outcome.frames_resumed = int(doc.get("frames_resumed", 0))


def _fill_from_manifest(outcome: Outcome, target: Path) -> None:
    try:
        doc = json.loads(manifest.manifest_path(target).read_text(encoding="utf-8"))
        _fill(outcome, doc.get("summary", {}))
    except (OSError, ValueError):
        pass


REPORT_FIELDS = ["input", "status", "output", "duration", "frames", "faces", "tracks",
                 "warnings", "encoder", "seconds", "fps", "error"]
# the CSV's per-track rows (row "track") fill input, output, frames and these
TRACK_COLUMNS = ["row", "track", "segment", "first", "last", "frames_restored", "face_size",
                 "motion", "flicker"]


def _totals(outcomes: list[Outcome]) -> dict[str, int]:
    """How many files ended in each status ("interrupted" and "not started" only when the
    batch was stopped)."""
    totals = {status: sum(1 for o in outcomes if o.status == status)
              for status in ("done", "skipped", "busy", "failed", "interrupted", "not started")}
    for status in ("interrupted", "not started"):
        if not totals[status]:
            del totals[status]
    return totals


def write_report(outcomes: list[Outcome], prefix: Path) -> tuple[Path, Path]:
    """Write `<prefix>.json` and `<prefix>.csv`; return their paths."""
    json_path = prefix.with_name(prefix.name + ".json")
    csv_path = prefix.with_name(prefix.name + ".csv")
    doc = {"created": datetime.now().isoformat(timespec="seconds"), "totals": _totals(outcomes),
           "files": [asdict(o) for o in outcomes],
           "tracks": [{"input": o.input, "output": o.output, **t}
                      for o in outcomes for t in o.per_track]}
    manifest.write_json_atomic(json_path, doc)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, REPORT_FIELDS + TRACK_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for o in outcomes:
            row = asdict(o)
            row["warnings"] = " | ".join(o.warnings)
            writer.writerow({**row, "row": "file"})
            for t in o.per_track:  # one row per track, below its file's
                writer.writerow({"input": o.input, "output": o.output, "row": "track", **t})
    return json_path, csv_path


def default_report_prefix(inputs: list[Path], output: Path | None) -> Path:
    """gpenvideo-report-<time> in the output folder; without `output` (outputs beside their
    sources) in the (first) input folder, where the outputs are. When the output folder is
    not there (a stopped or failed run removed the one it made, as it was left empty), in the
    current folder: an input folder is never written to when the outputs go elsewhere, and a
    folder holding only a report would be left behind by a run that wrote nothing."""
    if output is not None:
        folder = output if output.is_dir() else Path.cwd()
    else:
        first = inputs[0]
        folder = first if first.is_dir() else first.parent
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return folder / f"gpenvideo-report-{stamp}"


def exit_code(outcomes: list[Outcome]) -> int:
    """0 when every file is done or skipped; else the exit code of the first failure."""
    return next((o.exit_code or 1 for o in outcomes if o.status == "failed"), 0)


def _without(error: str, name: str) -> str:
    """`error` less a leading `name: ` (most errors start with the file they are about)."""
    return error[len(name) + 2:] if error.startswith(f"{name}: ") else error


def summary_table(outcomes: list[Outcome]) -> str:
    """The end-of-batch table, one line per file (frames: the whole film's, with those reused
    from an earlier run's segments in brackets; time and fps: this run's)."""
    rows = [("status", "frames", "faces", "tracks", "time", "fps", "file")]
    for o in outcomes:
        name = o.output if o.status in ("done", "skipped") else o.input
        frames = f"{o.frames} ({o.frames_resumed} reused)" if o.frames_resumed else str(o.frames)
        rows.append((o.status, frames, str(o.faces), str(o.tracks),
                     f"{o.seconds:.1f}s" if o.seconds else "-", f"{o.fps:.1f}" if o.fps else "-",
                     name if o.status != "failed" else f"{name}: {_without(o.error, name)}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [rows[0]]
    for r, o in zip(rows[1:], outcomes):
        lines.append(r)
        if o.per_track:
            lines += format_track_table(o.per_track, indent="    ").splitlines()
    lines = [r if isinstance(r, str) else
             "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6] for r in lines]
    lines.append(", ".join(f"{n} {s}" for s, n in _totals(outcomes).items() if n)
                 or "nothing to do")
    return "\n".join(lines)
