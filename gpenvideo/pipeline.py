"""The only module that wires stages together: threads, bounded queues, shutdown, progress.

    decoder thread ─▶ queue ─▶ stage thread ─▶ queue ─▶ ... ─▶ encoder thread

Every thread puts and gets with a timeout and watches one stop event, so an error in any thread,
or Ctrl-C in the main thread, stops them all; every thread is joined; the first error is raised
in the caller's thread; the partial output is removed. Memory is bounded by the queue sizes and
the stages' own lookahead, whatever the film's length.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from . import manifest, segments
from .config import EncodeConfig, RestoreConfig, validate
from .decoder import Decoder, check_input_path
from .encoder import (Encoder, check_encoder, container_for, default_output_suffix,
                      resolve_encode)
from .errors import Cancelled, InputError, OutputError
from .ffmpeg_pipe import FfmpegEncoder, check_ffmpeg, ffmpeg_codec
from .frames import Frame, VideoInfo
from .segments import Segment

log = logging.getLogger(__name__)

_END = object()  # marks the end of a queue's stream
_POLL = 0.1  # seconds between checks of the stop event while blocked


class Stage(Protocol):
    """A per-frame step between decoder and encoder.

    `process` takes frames in order and returns the frames it is done with (possibly none yet,
    possibly several held back earlier); `flush` returns everything still held at the end.
    `lookahead` is how many frames the stage may hold back (it bounds memory and latency).
    """

    name: str
    lookahead: int

    def process(self, frame: Frame) -> Iterable[Frame]: ...

    def flush(self) -> Iterable[Frame]: ...


class IdentityStage:
    """Hands every frame on unchanged."""

    name = "identity"
    lookahead = 0

    def process(self, frame: Frame) -> Iterable[Frame]:
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()


@dataclass
class Progress:
    """What a progress callback receives, about once a second and at the end."""

    frames_done: int  # of the whole film, resumed segments included
    frames_total: int  # 0 when unknown
    elapsed: float  # seconds since this run started
    faces_done: int = 0  # restored faces, resumed segments included
    frames_resumed: int = 0  # of frames_done, those finished by an earlier, interrupted run
    faces_resumed: int = 0  # of faces_done, those finished by an earlier run

    @property
    def fps(self) -> float:
        """Frames per second rendered by this run (resumed frames left out)."""
        rendered = self.frames_done - self.frames_resumed
        return rendered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def faces_per_second(self) -> float:
        """Faces per second restored by this run (resumed faces left out)."""
        rendered = self.faces_done - self.faces_resumed
        return rendered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at this run's rate; None until this run has rendered a frame."""
        if not self.frames_total or self.frames_done <= self.frames_resumed:
            return None
        return max(self.frames_total - self.frames_done, 0) / max(self.fps, 1e-9)


@dataclass
class RunSummary:
    """The outcome of one restore run."""

    input: str
    output: str
    frames: int = 0
    faces: int = 0  # restored face crops
    tracks: int = 0  # confirmed face tracks
    corrupt_packets: int = 0
    seconds: float = 0.0  # time spent
    duration: float = 0.0  # seconds of video
    segments: int = 1  # pieces the film was processed in
    segments_resumed: int = 0  # of those, finished by an earlier, interrupted run
    frames_resumed: int = 0  # of `frames`, those in the resumed segments
    notes: list[str] = field(default_factory=list)  # warnings worth repeating at the end
    # per-track figures (quality.TRACK_FIELDS; "segment" added in segmented runs)
    per_track: list[dict] = field(default_factory=list)
    encoder: str = ""  # the video encoder used (what --codec auto chose)

    @property
    def fps(self) -> float:
        """Frames per second rendered by this run (resumed segments left out)."""
        rendered = self.frames - self.frames_resumed
        return rendered / self.seconds if self.seconds > 0 else 0.0


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
        notes.append(f"writing {name}: the {source.suffix or 'source'} container cannot hold "
                     "the re-encoded video with the audio copied; MKV can")
    return output, notes


def resolve_output(source: Path, output: Path | None, overwrite: bool) -> tuple[Path, list[str]]:
    """Where the output goes: `output`, or `<name>_restored.<ext>` beside the source, or in the
    folder `output` names (see is_folder_name; `run` creates it when missing).

    Returns the target and notes for the user (see output_name).
    Raises OutputError if the target is the input itself, exists without `overwrite`, or the
    folder of a named output file does not exist; InputError for an output suffix whose
    container is not supported.
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
    if named_file and not output.parent.is_dir():
        raise OutputError(f"{output}: the folder {output.parent} does not exist; create it first")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; pass --overwrite to replace it")
    return output, notes


PARTIAL_MARK = ".partial-"  # in the names of files being written: .NAME.partial-PID.EXT


def temporary_path(output: Path) -> Path:
    """A name beside `output` for writing in progress (renamed over `output` when complete)."""
    return output.with_name(f".{output.stem}{PARTIAL_MARK}{os.getpid()}{output.suffix}")


def remove_stale_partials(output: Path, locked: bool) -> list[Path]:
    """Remove what runs killed while writing `output` left beside it (the temporary output and
    the manifest's temporary file, `.NAME.partial-PID...`): files of processes no longer alive,
    or, when the caller holds the output's lock (so no other run can be writing it), all of
    them except this process's own. Returns the files removed."""
    # (prefix, suffix) of each kind: the output itself and manifest.write_json_atomic's file
    kinds = ((f".{output.stem}{PARTIAL_MARK}", output.suffix),
             (f".{manifest.manifest_path(output).name}{PARTIAL_MARK}", ""))
    removed: list[Path] = []
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        digits = next((path.name[len(pre):len(path.name) - len(suf)] for pre, suf in kinds
                       if path.name.startswith(pre) and path.name.endswith(suf)), "")
        if not digits.isdigit() or int(digits) == os.getpid():
            continue
        if not locked and _pid_alive(int(digits)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


StageFactory = Callable[[VideoInfo], list[Stage]]
SizeFor = Callable[[VideoInfo], tuple[int, int]]
ProgressCallback = Callable[[Progress], None]


def run(source: str | Path, output: str | Path | None, cfg: RestoreConfig,
        stages: StageFactory | None = None, *, overwrite: bool = False,
        progress: ProgressCallback | None = None,
        size_for: SizeFor | None = None, settings: str = "",
        executor: SegmentExecutor | None = None, context: int | None = None) -> RunSummary:
    """Decode `source`, pass every frame through the stages, encode to `output`.

    stages: builds a fresh stage list for a source (default: none, a plain transcode).
    size_for: the output frame size for a source (default: the source's size).
    settings: digest of the settings (manifest.settings_digest); a film longer than
    cfg.pipeline.segment_seconds runs in segments kept in a work folder beside the output, and
    a later run with the same input and settings resumes after the last finished one.
    executor: renders segments elsewhere (e.g. distributed.RayExecutor); the film then always
    runs in segments, and the concatenation happens here.
    context: frames before and after a frame that shape its result (segment lead-in and
    run-out); default: the largest `context` among the stages.
    Returns a RunSummary. Raises GpenVideoError subclasses (InputError, OutputError, EncodeError,
    Cancelled ...); on any error the partial output is removed and the input is untouched.
    """
    validate(cfg)
    source = Path(source)
    check_input_path(source)
    target, notes = resolve_output(source, Path(output) if output else None, overwrite)
    for note in notes:
        log.warning("%s", note)
    target.parent.mkdir(parents=True, exist_ok=True)  # a folder named by -o out/
    remove_stale_partials(target, locked=False)
    started = time.monotonic()
    factory = stages or (lambda info: [])
    with Decoder(source, cfg.decode) as probe:
        info = probe.info
    size = size_for(info) if size_for else (info.width, info.height)
    # ffmpeg: any name, checked by ffmpeg_pipe
    encode, encode_notes = dataclasses.replace(cfg.encode, codec=ffmpeg_codec(cfg.encode)), []
    if cfg.encode.encoder == "pyav":
        encode, encode_notes = resolve_encode(cfg.encode, info, container_for(target), size)
    cfg = dataclasses.replace(cfg, encode=encode)  # auto decided once, for every segment
    for note in encode_notes:
        log.warning("%s", note)
    notes += encode_notes
    if context is None:
        context = max((getattr(stage, "context", 0) for stage in factory(info)), default=0)
    pieces = [Segment(0, None, None, None, None)]
    seconds = cfg.pipeline.segment_seconds
    if cfg.select.faces or cfg.select.skip_faces:
        seconds = _whole_film_for_selection(source, cfg, executor, info, notes)
    if seconds > 0 and (info.duration or 0) > seconds * 1.25:
        pieces = segments.plan(segments.scan(source), seconds, lead=2 * context,
                               tail=context + 1)
    summary = RunSummary(input=str(source), output=str(target), notes=notes,
                         duration=info.duration or 0.0, encoder=encode.codec)
    tmp = temporary_path(target)
    clock = _Clock(started, info.frames, progress)
    try:
        if len(pieces) == 1 and executor is None:
            _run_piece(source, tmp, container_for(target), cfg, cfg.encode, pieces[0], factory,
                       size, clock, summary)
        else:
            _run_segmented(source, info, target, tmp, cfg, pieces, factory, size, clock,
                           settings, summary, executor)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if summary.corrupt_packets:
        summary.notes.append(f"{summary.corrupt_packets} damaged video packets were skipped")
    summary.seconds = time.monotonic() - started
    return summary


def _whole_film_for_selection(source: Path, cfg: RestoreConfig,
                              executor: SegmentExecutor | None, info: VideoInfo,
                              notes: list[str]) -> float:
    """Segment length for a run with --faces/--skip-faces: 0 (one piece). Track ids are those
    of a whole-film tracking pass (`gpenvideo track`); a segment's tracker starts mid-film and
    numbers its tracks afresh, so the ids chosen could name other faces there.
    Raises InputError with an executor (which always renders segments)."""
    if executor is not None:
        raise InputError(f"{source}: --faces/--skip-faces name whole-film track ids, which "
                         "segments rendered on Ray do not share; leave out --ray or the choice")
    seconds = cfg.pipeline.segment_seconds
    if seconds > 0 and (info.duration or 0) > seconds * 1.25:
        notes.append("--faces/--skip-faces: the film runs in one piece (no segments, no "
                     "resume) so that track ids are the whole-film ids `gpenvideo track` shows")
    return 0.0


class _Clock:
    """Progress across the pieces of one run."""

    def __init__(self, started: float, total: int, callback: ProgressCallback | None) -> None:
        self.started, self.total, self.callback = started, total, callback
        self.frames = 0  # frames written by finished pieces
        self.faces = 0
        self.frames_resumed = 0  # of those, frames of pieces an earlier run finished
        self.faces_resumed = 0

    def resumed(self, frames: int, faces: int) -> None:
        """Count a piece finished by an earlier run (done, but not rendered by this one)."""
        self.frames += frames
        self.faces += faces
        self.frames_resumed += frames
        self.faces_resumed += faces

    def report(self, frames: int = 0, faces: int = 0) -> None:
        if self.callback:
            self.callback(Progress(self.frames + frames, self.total,
                                   time.monotonic() - self.started, self.faces + faces,
                                   self.frames_resumed, self.faces_resumed))


def _run_piece(source: Path, path: Path, fmt: str, cfg: RestoreConfig, encode: EncodeConfig,
               piece: Segment, factory: StageFactory, size: tuple[int, int], clock: _Clock,
               summary: RunSummary) -> dict[str, Any]:
    """Decode one segment (or the whole film) through fresh stages into `path`; add its counts
    to `summary` and return them."""
    with Decoder(source, cfg.decode) as decoder:
        chain = factory(decoder.info)
        kind = Encoder if encode.encoder == "pyav" else FfmpegEncoder
        with kind(path, fmt, decoder.info, encode, size) as encoder:
            counts = _run_threads(decoder, piece, chain, encoder, cfg, clock)
        counts["corrupt_packets"] = decoder.corrupt_packets
        notes = (decoder.notes + encoder.notes
                 + [n for stage in chain for n in getattr(stage, "notes", [])])
    counts["per_track"] = [{**row, **({"segment": piece.number} if piece.end is not None
                                      or piece.number else {})}
                           for stage in chain if hasattr(stage, "track_rows")
                           for row in stage.track_rows()]
    _add_counts(summary, counts, notes)
    return counts


def _add_counts(summary: RunSummary, counts: dict[str, Any], notes: list[str]) -> None:
    summary.frames += counts["frames"]
    summary.faces += counts["faces"]
    summary.tracks += counts["tracks"]
    summary.corrupt_packets += counts["corrupt_packets"]
    summary.per_track += counts.get("per_track", [])
    summary.notes += [n for n in notes if n not in summary.notes]


class SegmentExecutor(Protocol):
    """Renders segments somewhere else. `render` yields (segment number, the segment file's
    bytes, its counts) for each of `pieces`, in any order."""

    def render(self, source: Path, pieces: list[Segment], cfg: RestoreConfig,
               size: tuple[int, int]) -> Iterator[tuple[int, bytes, dict[str, Any]]]: ...


def render_segment(source: Path, path: Path, cfg: RestoreConfig, piece: Segment,
                   factory: StageFactory, size: tuple[int, int],
                   clock: _Clock | None = None) -> dict[str, Any]:
    """Write one segment's video (no audio) to `path`; return its counts. What an executor's
    worker runs."""
    summary = RunSummary(input=str(source), output=str(path))
    counts = _run_piece(source, path, segments.SEGMENT_FORMAT, cfg,
                        dataclasses.replace(cfg.encode, audio=False), piece, factory, size,
                        clock or _Clock(time.monotonic(), 0, None), summary)
    return {**counts, "notes": summary.notes}


def _run_segmented(source: Path, info: VideoInfo, target: Path, tmp: Path,
                   cfg: RestoreConfig, pieces: list[Segment], factory: StageFactory, size: tuple[int, int],
                   clock: _Clock, settings: str, summary: RunSummary,
                   executor: SegmentExecutor | None) -> None:
    work = segments.WorkFolder(target)
    if not cfg.pipeline.resume:
        work.remove()
    kept = work.prepare(source, settings, pieces)
    if kept:
        log.info("%s: resuming after %d finished segments of %d", source, kept, len(pieces))
    summary.segments, summary.segments_resumed = len(pieces), 0

    def finished(counts: dict[str, Any]) -> None:
        _add_counts(summary, counts, counts.get("notes", []))
        clock.frames += counts["frames"]
        clock.faces += counts["faces"]

    todo = []
    for piece in pieces:
        counts = work.done(piece.number)
        if counts is None:
            todo.append(piece)
        else:
            _add_counts(summary, counts, counts.get("notes", []))
            clock.resumed(counts["frames"], counts["faces"])
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
                    counts = render_segment(source, partial, cfg, piece, factory, size, clock)
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
    _concatenate(info, tmp, target, cfg, [work.segment_file(p.number) for p in pieces], summary)
    work.remove()


def _concatenate(info: VideoInfo, tmp: Path, target: Path, cfg: RestoreConfig,
                 files: list[Path], summary: RunSummary) -> None:
    """Stream-copy the segments' video into one file, with the audio copied once from the
    source (info.path)."""
    with av.open(str(files[0])) as first:
        template = first.streams.video[0]
        with Encoder(tmp, container_for(target), info, cfg.encode,
                     video_template=template) as encoder:
            for path in files:
                with av.open(str(path)) as piece:
                    for packet in piece.demux(piece.streams.video[0]):
                        if packet.size:
                            encoder.write_packet(packet)
    summary.notes += [n for n in encoder.notes if n not in summary.notes]


class _Stopped(Exception):
    """Raised inside a worker when another thread asked everyone to stop."""


class _Workers:
    """Threads that share one stop event and report their first error."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable[[], None]) -> None:
        def body() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                with self._lock:
                    self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=body, name=f"gpenvideo-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> object:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def drain(self, q: queue.Queue) -> Iterator[object]:
        while (item := self.get(q)) is not _END:
            yield item

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def _run_threads(decoder: Decoder, piece: Segment, chain: list[Stage],
                 encoder: Encoder | FfmpegEncoder,
                 cfg: RestoreConfig, clock: _Clock) -> dict[str, int]:
    """Run one piece through decoder -> stages -> encoder on threads; return its counts."""
    workers = _Workers()
    queues = [queue.Queue(maxsize=cfg.pipeline.queue_size) for _ in range(len(chain) + 1)]
    counts = {"frames": 0, "faces": 0, "tracks": 0}
    inherited: set[int] = set()  # tracks seen in the lead-in: counted by the segment before
    seen: set[int] = set()

    def decode() -> None:
        for frame in decoder.frames(piece.seek, piece.stop):
            frame.emit = piece.writes(frame.pts)
            workers.put(queues[0], frame)
        workers.put(queues[0], _END)

    def stage_loop(stage: Stage, q_in: queue.Queue, q_out: queue.Queue) -> Callable[[], None]:
        def body() -> None:
            for frame in workers.drain(q_in):
                for out in stage.process(frame):
                    workers.put(q_out, out)
            for out in stage.flush():
                workers.put(q_out, out)
            workers.put(q_out, _END)
        return body

    def encode() -> None:
        for frame in workers.drain(queues[-1]):
            ids = {face.track_id for face in frame.faces}
            if not frame.emit:
                if not counts["frames"]:
                    inherited.update(ids)
                continue
            encoder.write(frame)
            seen.update(ids - inherited)
            counts["frames"] += 1
            counts["faces"] += len(frame.faces)

    workers.start("decode", decode)
    for i, stage in enumerate(chain):
        workers.start(stage.name, stage_loop(stage, queues[i], queues[i + 1]))
    workers.start("encode", encode)

    last_report = 0.0
    try:
        while workers.alive():
            time.sleep(_POLL)
            now = time.monotonic()
            if now - last_report >= 1.0:
                last_report = now
                clock.report(counts["frames"], counts["faces"])
    except KeyboardInterrupt:
        workers.stop.set()
        workers.join()
        raise Cancelled(f"{decoder.path}: interrupted; no output was written") from None
    workers.join()
    if workers.errors:
        raise workers.errors[0]
    counts["tracks"] = len(seen)
    clock.report(counts["frames"], counts["faces"])
    return counts


def build_restore_stages(cfg: RestoreConfig) -> tuple[StageFactory, SizeFor]:
    """The face stages (detect, track, restore, composite) for `cfg`, and the output size for a
    source (its size times --upscale). Loads the GPEN checkpoint and the detector now, so a
    missing file fails before decoding."""
    from .compositor import Compositor
    from .detector import create_detector
    from .models import weights
    from .models.runner import GPENRunner
    from .quality import QualityStage, SelectStage, TrackLedger, chooser
    from .register import Registrar
    from .restorer import DetectStage, RestoreStage
    from .tracker import Tracker

    from . import threads

    threads.configure(cfg.pipeline.threads)
    mcfg = cfg.model
    if mcfg.weights:
        checkpoint, strength = Path(mcfg.weights), 1.0
    else:
        entry = weights.lookup(mcfg.model)
        checkpoint, strength = weights.find(mcfg.model, mcfg.weights_dir), entry.strength
    if cfg.composite.strength is not None:
        strength = cfg.composite.strength
    runner = GPENRunner(weights.load_gpen(checkpoint), mcfg.device, mcfg.precision,
                        mcfg.batch_size, mcfg.channels_last, mcfg.compile)
    detector = create_detector(cfg.detect, mcfg.weights_dir, str(runner.device))
    parser = None
    if cfg.composite.mask == "parsing":
        from .parsing import FaceParser

        parser = FaceParser(weights.find("parsenet", mcfg.weights_dir), runner.device)
    size = runner.size
    cuda = runner.device.type == "cuda"  # the face path runs on the GPU with GPEN

    def factory(info: VideoInfo) -> list[Stage]:
        ledger = TrackLedger(chooser(cfg.select.faces, cfg.select.skip_faces),
                             seconds=lambda pts: float(pts * info.time_base))
        return [DetectStage(detector), Tracker(cfg.track), Registrar(cfg.register),
                SelectStage(ledger),
                RestoreStage(runner.restore_on_device if cuda else runner.restore, size,
                             runner.batch_size, runner.device if cuda else None, parser,
                             cfg.composite, strength),
                QualityStage(ledger), Compositor(cfg.composite, size, strength)]

    return factory, output_size(cfg)


def output_size(cfg: RestoreConfig) -> SizeFor:
    """The output frame size for a source: its size times --upscale."""
    scale = cfg.composite.upscale
    return lambda info: (info.width * scale, info.height * scale)


def tracking_context(cfg: RestoreConfig) -> int:
    """The `context` of the restore stages (the tracker's and, on top of it, the crop
    registration's: a frame's crop depends on its neighbours' faces), without loading any
    model."""
    from .register import Registrar
    from .tracker import Tracker

    return Tracker(cfg.track).context + Registrar(cfg.register).context


def model_crop_size(cfg: RestoreConfig) -> int:
    """The size S of the crops the chosen model restores: from the checkpoint's shapes when
    --weights names one (its tensors are read, no model is built), else from the model's entry
    in the weights registry (no file needed). Raises WeightsError for an unusable checkpoint."""
    from .models import weights

    if cfg.model.weights:
        path = cfg.model.weights
        return weights.infer_config(weights.read_state_dict(path), path).size
    return int(weights.lookup(cfg.model.model).size or 512)


def check_restorable(source: str | Path, output: str | Path | None, cfg: RestoreConfig,
                     overwrite: bool = False) -> None:
    """Refuse a bad input or output before a model is loaded (raises what `run` would)."""
    with Decoder(source, cfg.decode):
        pass
    if cfg.encode.encoder == "ffmpeg":
        check_ffmpeg(cfg.encode)
    else:
        check_encoder(cfg.encode)
    resolve_output(Path(source), Path(output) if output else None, overwrite)


def restore_video(source: str | Path, output: str | Path | None = None,
                  cfg: RestoreConfig | None = None, *, overwrite: bool = False,
                  progress: ProgressCallback | None = None) -> RunSummary:
    """Restore every tracked face of `source` with GPEN and write `output` (see `run`)."""
    cfg = validate(cfg or RestoreConfig())
    check_restorable(source, output, cfg, overwrite)
    factory, size_for = build_restore_stages(cfg)
    return run(source, output, cfg, factory, overwrite=overwrite, progress=progress,
               size_for=size_for, context=tracking_context(cfg))


def run_chain(frames: Iterable[Frame], chain: list[Stage]) -> Iterator[Frame]:
    """`frames` through `chain` on this thread, each stage flushed after the last frame."""
    for frame in frames:
        batch = [frame]
        for stage in chain:
            batch = [out for f in batch for out in stage.process(f)]
        yield from batch
    tail: list[Frame] = []
    for stage in chain:
        tail = [out for f in tail for out in stage.process(f)] + list(stage.flush())
    yield from tail


def track_video(source: str | Path, cfg: RestoreConfig | None = None) -> dict:
    """Detect and track the faces of `source` and register their crops. Returns the
    `gpenvideo track` JSON document: {"crop_size": S, "frames": [{"pts": seconds, "faces":
    [{"track", "box", "raw", "smoothed", "score", "transform"}]}]}, where "transform" is the
    2x3 matrix from upright source pixels to the S x S aligned crop the restorer cuts;
    "per_track": [quality.TRACK_FIELDS rows, flicker None]."""
    from .detector import create_detector
    from .register import Registrar, landmark_matrix
    from .quality import QualityStage, TrackLedger
    from .restorer import DetectStage
    from .tracker import Tracker

    from . import threads

    cfg = validate(cfg or RestoreConfig())
    threads.configure(cfg.pipeline.threads)
    crop_size = model_crop_size(cfg)
    detect = DetectStage(create_detector(cfg.detect, cfg.model.weights_dir, cfg.model.device))
    tracker = Tracker(cfg.track)
    frames_out = []

    def record(frame: Frame) -> None:
        frames_out.append({
            "pts": float(frame.pts * info.time_base),
            "faces": [{"track": f.track_id, "box": [round(float(v), 2) for v in f.box],
                       "raw": None if f.raw is None else np.round(f.raw, 2).tolist(),
                       "smoothed": np.round(f.smoothed, 2).tolist(),
                       "score": round(float(f.score), 4),
                       "transform": [[round(float(v), 6) for v in row] for row in
                                     (landmark_matrix(f) if f.matrix is None else f.matrix)
                                     * (crop_size / 512)]} for f in frame.faces]})

    with Decoder(source, cfg.decode) as decoder:
        info = decoder.info
        quality = QualityStage(TrackLedger(seconds=lambda pts: float(pts * info.time_base)))
        chain = [detect, tracker, Registrar(cfg.register), quality]
        for frame in run_chain(decoder.frames(), chain):
            record(frame)
    return {"source": str(source), "width": info.width, "height": info.height,
            "crop_size": crop_size, "tracks": tracker.tracks_confirmed, "frames": frames_out,
            "per_track": quality.track_rows()}

