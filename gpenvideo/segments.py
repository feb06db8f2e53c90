"""Running one film: its output and its plan (one piece, or segments cut at keyframes), the
work folder that keeps finished segments so that an interrupted run (Ctrl-C, crash, kill -9,
power loss) resumes where it stopped, and the settings digest that decides what may be resumed.

Each segment is decoded from a keyframe `lead` frames before its first frame and on `tail`
frames past its last, so the tracker sees the same history and future there as in one long run
(tracks continue across the boundary), but only the segment's own frames are restored and
written. A finished segment is a video-only file in the work folder; the final output is their
stream-copied concatenation with the audio copied once from the source. The plan depends only on
the source and the settings, so a resumed run writes exactly the frames an uninterrupted run
would; the digest of the settings is computed here, where segments are planned, so every caller
(CLI, batch, library) resumes only segments rendered with the same settings.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import media
from .config import RestoreConfig, validate
from .engine import Clock, Piece, ProgressCallback, RunSummary, StageFactory, run_piece
from .errors import Cancelled, InputError
from .frames import VideoInfo
from .manifest import fsync_dir, input_fingerprint, settings_digest, write_json_atomic
from .outputs import remove_stale_partials, resolve_output, temporary_path

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".mov"  # the suffix of segment files of codecs QuickTime holds (see media)
SHORT_FILM = 1.25  # a film at most this many segment lengths long is processed in one piece


@dataclass(frozen=True)
class Segment:
    """One piece of a film. All timestamps in the source video stream's time base."""

    number: int
    seek: int | None  # decode from the keyframe at or before this pts (None: the file's start)
    first: int | None  # first pts written (None: from the first frame)
    end: int | None  # the next segment's first pts: frames at or past it are not written
    stop: int | None  # decoding ends at the first frame at or past this pts (None: at the end)

    def writes(self, pts: int) -> bool:
        return (self.first is None or pts >= self.first) and (self.end is None or pts < self.end)


def plan(index: media.StreamIndex | None, seconds: float, lead: int, tail: int) -> list[Segment]:
    """Cut at the first keyframe at least `seconds` after the previous cut. Each segment decodes
    from a keyframe at least `lead` frames before its first frame (as far as the file allows)
    and `tail` frames past its end. One segment when `seconds` is 0, the film is short or its
    timestamps start below zero."""
    whole = [Segment(0, None, None, None, None)]
    if index is None or seconds <= 0 or not index.pts or index.pts[0] < 0:
        # (negative timestamps: an MPEG-TS whose clock wrapped; its segments, written with
        # timestamps before zero, did not join up: one piece keeps every frame)
        return whole
    step = seconds / index.time_base
    cuts: list[int] = []
    target = index.pts[0] + step
    for key in index.keyframes:
        if key >= target and key > index.pts[0]:
            cuts.append(key)
            target = key + step
    # a last piece shorter than a quarter of a segment joins the one before it
    while cuts and index.pts[-1] - cuts[-1] < step / 4:
        cuts.pop()
    if not cuts:
        return whole
    segments = []
    bounds: list[int | None] = [None, *cuts, None]
    for n in range(len(bounds) - 1):
        first, end = bounds[n], bounds[n + 1]
        seek = None
        if first is not None:
            i = bisect.bisect_left(index.pts, first)
            if i - lead > 0:
                k = bisect.bisect_right(index.keyframes, index.pts[i - lead]) - 1
                seek = index.keyframes[k] if k >= 0 else None
        stop = None
        if end is not None:
            j = bisect.bisect_left(index.pts, end) + tail
            stop = index.pts[j] if j < len(index.pts) else None
        segments.append(Segment(n, seek, first, end, stop))
    return segments


class WorkFolder:
    """`.<output name>.gpenvideo-work/` beside the output: plan.json, and per finished segment
    `seg-NNNNN.mov` (video only; .mp4 for codecs QuickTime cannot hold) with `seg-NNNNN.json`
    (its counts). A segment is finished when its JSON exists; both are written durably (fsync,
    then rename)."""

    def __init__(self, output: Path, suffix: str = SEGMENT_SUFFIX) -> None:
        self.path = output.with_name(f".{output.name}.gpenvideo-work")
        self.suffix = suffix  # of the segment files (media.segment_container)

    def prepare(self, source: Path, settings: str, segments: list[Segment]) -> int:
        """Create the folder for this plan, or keep one left by an interrupted run of the same
        input, settings and plan. Returns how many segments are already finished."""
        doc = {"input": input_fingerprint(source, with_hash=False), "settings": settings,
               "segments": [asdict(s) for s in segments]}
        try:
            old = json.loads((self.path / "plan.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(doc)):
            if old is not None:
                log.warning("%s: an unfinished earlier run with other settings or another "
                            "version of the input was discarded", self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir()
            write_json_atomic(self.path / "plan.json", doc)
            return 0
        for stale in self.path.glob(".seg-*.partial-*"):  # written by a run that was killed
            stale.unlink(missing_ok=True)
        return sum(1 for s in segments if self.done(s.number) is not None)

    def segment_file(self, number: int) -> Path:
        """The finished segment's video file."""
        return self.path / f"seg-{number:05d}{self.suffix}"

    def partial_file(self, number: int) -> Path:
        """A name for the segment while it is written (made final by `commit`)."""
        return self.path / f".seg-{number:05d}.partial-{os.getpid()}{self.suffix}"

    def done(self, number: int) -> dict[str, Any] | None:
        """The counts of a finished segment, or None if it is not finished."""
        try:
            doc = json.loads((self.path / f"seg-{number:05d}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if self.segment_file(number).is_file() else None

    def commit(self, number: int, partial: Path, counts: dict[str, Any]) -> None:
        """Make a written segment file final, then record it as finished."""
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, self.segment_file(number))
        fsync_dir(self.path)
        write_json_atomic(self.path / f"seg-{number:05d}.json", counts)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class Recipe:
    """What a run does to each frame, and what of it the settings digest names."""

    build: StageFactory | None = None  # a fresh stage list for a piece; None: a plain transcode
    scale: int = 1  # output frames are the source's size times this (--upscale)
    # frames before and after a frame that shape its result (segment lead-in and run-out);
    # None: the largest `context` among the built stages
    context: int | None = None
    # what the stages do, for the settings digest; None: "identity" without stages, else the
    # stages' names (give a name that changes with a custom stage's own parameters)
    mode: str | None = None
    model_files: tuple[Path, ...] = ()  # files whose weights shape the output (in the digest)

    def stages(self, info: VideoInfo) -> list:
        """Fresh stages for one piece of the film `info` describes."""
        return self.build(info) if self.build is not None else []

    def digest(self, cfg: RestoreConfig, info: VideoInfo | None = None) -> str:
        """The settings digest of this recipe under `cfg` (manifest.settings_digest)."""
        mode = self.mode
        if mode is None:
            names = [s.name for s in self.stages(info)] if self.build and info else []
            mode = "stages:" + ",".join(names) if self.build else "identity"
        return settings_digest(cfg, self.model_files, mode)


@dataclass
class RunPlan:
    """One film on its way: the source open (checked and probed once; its decoder also decodes
    an unsegmented run and hands on the audio to copy), the target, and the notes for the user.
    Made by `prepare`; close it (or use it as a context manager)."""

    source: Path
    target: Path
    cfg: RestoreConfig
    decoder: media.Decoder  # the source, open
    notes: list[str] = field(default_factory=list)  # about the output's name

    @property
    def info(self) -> VideoInfo:
        return self.decoder.info

    def close(self) -> None:
        self.decoder.close()

    def __enter__(self) -> RunPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare(source: str | Path, output: str | Path | None, cfg: RestoreConfig,
            overwrite: bool = False) -> RunPlan:
    """Open and probe `source` and settle the output (outputs.resolve_output: a named file,
    `<name>_restored.<ext>` beside the source, or in a folder, created here when missing).
    Raises InputError for a bad input, OutputError for an output that cannot be written."""
    validate(cfg)
    source = Path(source)
    decoder = media.Decoder(source, cfg.decode, copy_streams=cfg.encode.audio)
    try:
        media.check_encode(cfg.encode)
        target, notes = resolve_output(source, Path(output) if output else None, overwrite)
        media.check_container(cfg.encode, target)  # before any work: prores_ks in .mp4 ...
        target.parent.mkdir(parents=True, exist_ok=True)  # a folder named by -o out/
    except BaseException:
        decoder.close()
        raise
    return RunPlan(source, target, cfg, decoder, notes)


def run(source: str | Path, output: str | Path | None, cfg: RestoreConfig,
        recipe: Recipe | None = None, *, overwrite: bool = False,
        progress: ProgressCallback | None = None,
        executor: SegmentExecutor | None = None) -> RunSummary:
    """Decode `source`, pass every frame through the recipe's stages, encode to `output`:
    `prepare` then `execute`. Returns a RunSummary; raises what they raise."""
    with prepare(source, output, cfg, overwrite) as plan:
        for note in plan.notes:
            log.warning("%s", note)
        return execute(plan, recipe or Recipe(), progress, executor)


class SegmentExecutor(Protocol):
    """Renders segments somewhere else. `render` yields (segment number, the segment file's
    bytes, its counts) for each of `pieces`, in any order."""

    def render(self, source: Path, pieces: list[Segment], cfg: RestoreConfig,
               size: tuple[int, int]) -> Iterator[tuple[int, bytes, dict[str, Any]]]: ...


def execute(plan: RunPlan, recipe: Recipe, progress: ProgressCallback | None = None,
            executor: SegmentExecutor | None = None) -> RunSummary:
    """Render the film of `plan` into its target. A film longer than
    cfg.pipeline.segment_seconds (and any film given an `executor`, e.g. distributed.RayExecutor)
    runs in segments kept in a work folder beside the output; a later run with the same input
    and settings (the recipe's digest) resumes after the last finished one.
    Returns a RunSummary. Raises GpenVideoError subclasses (InputError, OutputError, EncodeError,
    Cancelled ...); on any error the partial output is removed and the input is untouched."""
    info, target = plan.info, plan.target
    remove_stale_partials(target, locked=False)
    clock = Clock(info.frames, progress)
    size = (info.width * recipe.scale, info.height * recipe.scale)
    encode, encode_notes = media.resolve(plan.cfg.encode, info, target, size)
    for note in encode_notes:
        log.warning("%s", note)
    cfg = plan.cfg = dataclasses.replace(plan.cfg, encode=encode)  # auto decided once
    context = recipe.context
    if context is None:
        context = max((stage.context for stage in recipe.stages(info)), default=0)
    pieces = [Segment(0, None, None, None, None)]
    seconds = cfg.pipeline.segment_seconds
    if cfg.select.faces or cfg.select.skip_faces:
        seconds = _whole_film_for_selection(plan, executor)
    if seconds > 0 and (info.duration or 0) > seconds * SHORT_FILM:
        pieces = plan_segments(media.scan(plan.source), seconds, context)
    summary = RunSummary(input=str(plan.source), output=str(target),
                         notes=[*plan.notes, *encode_notes], duration=info.duration or 0.0,
                         encoder=encode.codec)
    tmp = temporary_path(target)
    try:
        if len(pieces) == 1 and executor is None:
            chain = recipe.stages(info)
            with media.open_encoder(tmp, media.container_for(target), info, cfg.encode, size,
                                    source=plan.decoder) as encoder:
                counts = run_piece(plan.decoder, Piece(), chain, encoder,
                                   cfg.pipeline.queue_size, clock)
            summary.add(counts, plan.decoder.notes + encoder.notes)
        else:
            _run_segmented(plan, recipe, pieces, size, clock, summary, executor)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # a cut-off file: what was written, not what it claims
    if summary.written_pts is not None and summary.written_known:
        first, end = summary.written_pts
        summary.duration = float((end - first) * info.time_base)
    if summary.corrupt_packets:
        summary.notes.append(f"{summary.corrupt_packets} damaged video packets were skipped")
    if recipe.mode == "restore":
        summary.notes += unseen_track_notes(cfg, summary.per_track)
    summary.seconds = time.monotonic() - clock.started
    return summary


def unseen_track_notes(cfg: RestoreConfig, per_track: list[dict]) -> list[str]:
    """Notes for the track ids of --faces/--skip-faces that no track of the film has (so the
    choice selected nothing for them), e.g. "track 5 was not found; the film has tracks 1-2"."""
    chosen = sorted(set(cfg.select.faces) | set(cfg.select.skip_faces))
    seen = sorted({int(row["track"]) for row in per_track})
    unseen = [i for i in chosen if i not in seen]
    if not unseen:
        return []
    if not seen:
        has = "no face tracks"
    elif seen == list(range(seen[0], seen[-1] + 1)) and len(seen) > 1:
        has = f"tracks {seen[0]}-{seen[-1]}"
    else:
        has = ("track " if len(seen) == 1 else "tracks ") + ", ".join(map(str, seen))
    ids = ", ".join(map(str, unseen))
    verb = "was" if len(unseen) == 1 else "were"
    plural = "s" if len(unseen) > 1 else ""
    return [f"track{plural} {ids} {verb} not found; the film has {has} (see gpenvideo track)"]


def _whole_film_for_selection(plan: RunPlan, executor: SegmentExecutor | None) -> float:
    """Segment length for a run with --faces/--skip-faces: 0 (one piece). Track ids are those
    of a whole-film tracking pass (`gpenvideo track`); a segment's tracker starts mid-film and
    numbers its tracks afresh, so the ids chosen could name other faces there. Adds a note
    to plan.notes when the film would have been segmented.
    Raises InputError with an executor (which always renders segments)."""
    if executor is not None:
        raise InputError(f"{plan.source}: --faces/--skip-faces name whole-film track ids, which "
                         "segments rendered on Ray do not share; leave out --ray or the choice")
    seconds = plan.cfg.pipeline.segment_seconds
    if seconds > 0 and (plan.info.duration or 0) > seconds * SHORT_FILM:
        plan.notes.append("--faces/--skip-faces: the film runs in one piece (no segments, no "
                          "resume) so that track ids are the whole-film ids `gpenvideo track` "
                          "shows")
    return 0.0


def plan_segments(index: media.StreamIndex | None, seconds: float, context: int
                  ) -> list[Segment]:
    """The segments of a film whose stages look `context` frames around each frame."""
    return plan(index, seconds, lead=2 * context, tail=context + 1)


def render_segment(source: Path, path: Path, cfg: RestoreConfig, segment: Segment,
                   recipe: Recipe, size: tuple[int, int],
                   clock: Clock | None = None) -> dict[str, Any]:
    """Write one segment's video (no audio) to `path` in the segment container for
    cfg.encode.codec; return its counts and notes. What an executor's worker runs."""
    fmt, _ = media.segment_container(cfg.encode.codec)
    encode = dataclasses.replace(cfg.encode, audio=False)
    piece = Piece(segment.seek, segment.stop, segment.writes)
    with media.Decoder(source, cfg.decode) as decoder:
        chain = recipe.stages(decoder.info)
        with media.open_encoder(path, fmt, decoder.info, encode, size) as encoder:
            counts = run_piece(decoder, piece, chain, encoder, cfg.pipeline.queue_size,
                               clock or Clock())
    if segment.end is not None or segment.number:  # a piece of a film cut in segments
        counts["per_track"] = [{**row, "segment": segment.number} for row in counts["per_track"]]
    return {**counts, "notes": decoder.notes + encoder.notes}


def _run_segmented(plan: RunPlan, recipe: Recipe, pieces: list[Segment], size: tuple[int, int],
                   clock: Clock, summary: RunSummary, executor: SegmentExecutor | None) -> None:
    cfg, source = plan.cfg, plan.source
    _, suffix = media.segment_container(cfg.encode.codec)
    work = WorkFolder(plan.target, suffix)
    if not cfg.pipeline.resume:
        work.remove()
    kept = work.prepare(source, recipe.digest(cfg, plan.info), pieces)
    if kept:
        log.info("%s: resuming after %d finished segments of %d", source, kept, len(pieces))
    summary.segments, summary.segments_resumed = len(pieces), 0

    def finished(counts: dict[str, Any], resumed: bool = False) -> None:
        summary.add(counts, counts.get("notes", []))
        clock.finished(counts["frames"], counts["faces"], resumed)

    todo = []
    for piece in pieces:
        counts = work.done(piece.number)
        if counts is None:
            todo.append(piece)
        else:
            finished(counts, resumed=True)
            summary.segments_resumed += 1
            summary.frames_resumed += counts["frames"]

    try:
        if executor is not None:
            for number, data, counts in executor.render(source, todo, cfg, size):
                partial = work.partial_file(number)
                partial.write_bytes(data)
                work.commit(number, partial, counts)
                finished(counts)
                clock.report()
        else:
            for piece in todo:
                partial = work.partial_file(piece.number)
                try:
                    counts = render_segment(source, partial, cfg, piece, recipe, size, clock)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                work.commit(piece.number, partial, counts)
                finished(counts)
                clock.report()
    except (Cancelled, KeyboardInterrupt):
        done = sum(1 for p in pieces if work.done(p.number) is not None)
        if not done:
            raise Cancelled(f"{source}: interrupted; no output was written") from None
        raise Cancelled(f"{source}: interrupted; {done} of {len(pieces)} segments are kept in "
                        f"{work.path}; run the same command again to resume") from None
    notes = media.concatenate([work.segment_file(p.number) for p in pieces],
                              temporary_path(plan.target), media.container_for(plan.target),
                              plan.info, cfg.encode)
    summary.notes += [n for n in notes if n not in summary.notes]
    work.remove()
