"""The only module that wires stages together: threads, bounded queues, shutdown, progress.

    decoder thread ─▶ queue ─▶ stage thread ─▶ queue ─▶ ... ─▶ encoder thread

Every thread puts and gets with a timeout and watches one stop event, so an error in any thread,
or Ctrl-C in the main thread, stops them all; every thread is joined; the first error is raised
in the caller's thread; the partial output is removed. Memory is bounded by the queue sizes and
the stages' own lookahead, whatever the film's length.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import RestoreConfig, validate
from .decoder import Decoder, check_input_path
from .encoder import Encoder, container_for, default_output_suffix
from .errors import Cancelled, InputError, OutputError
from .frames import Frame, VideoInfo

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

    frames_done: int
    frames_total: int  # 0 when unknown
    elapsed: float  # seconds
    faces_done: int = 0

    @property
    def fps(self) -> float:
        return self.frames_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if not self.frames_total or not self.frames_done:
            return None
        return (self.frames_total - self.frames_done) / max(self.fps, 1e-9)


@dataclass
class RunSummary:
    """The outcome of one restore run."""

    input: str
    output: str
    frames: int = 0
    faces: int = 0  # restored face crops
    tracks: int = 0  # confirmed face tracks
    corrupt_packets: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # warnings worth repeating at the end

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def resolve_output(source: Path, output: Path | None, overwrite: bool) -> tuple[Path, list[str]]:
    """Where the output goes: `output`, or `<name>_restored.<ext>` beside the source.

    An input in an old container (AVI, DV, MPEG-PS ...) gets an .mkv output and a note saying so.
    Raises OutputError if the target is the input itself, exists without `overwrite`, or its
    folder does not exist; InputError for an output suffix whose container is not supported.
    """
    notes: list[str] = []
    if output is None:
        suffix = default_output_suffix(source)
        output = source.with_name(f"{source.stem}_restored{suffix}")
        if suffix != source.suffix.lower():
            notes.append(f"writing {output.name}: the {source.suffix or 'source'} container "
                         "cannot hold the re-encoded video with the audio copied; MKV can")
    elif output.is_dir():
        output = output / f"{source.stem}_restored{default_output_suffix(source)}"
    if container_for(output) is None:
        raise InputError(f"{output}: unsupported output type {output.suffix!r}; "
                         "name the output .mkv, .mp4, .mov or .m4v")
    if output.resolve() == source.resolve():
        raise OutputError(f"{output}: is the input file; choose another output name")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: the folder {output.parent} does not exist; create it first")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; pass --overwrite to replace it")
    return output, notes


def temporary_path(output: Path) -> Path:
    """A name beside `output` for writing in progress (renamed over `output` when complete)."""
    return output.with_name(f".{output.stem}.partial-{os.getpid()}{output.suffix}")


StageFactory = Callable[[VideoInfo], list[Stage]]
ProgressCallback = Callable[[Progress], None]


def run(source: str | Path, output: str | Path | None, cfg: RestoreConfig,
        stages: StageFactory | None = None, *, overwrite: bool = False,
        progress: ProgressCallback | None = None,
        size_for: Callable[[VideoInfo], tuple[int, int]] | None = None) -> RunSummary:
    """Decode `source`, pass every frame through the stages, encode to `output`.

    stages: builds the stage list once the source is open (default: none, a plain transcode).
    size_for: the output frame size for a source (default: the source's size).
    Returns a RunSummary. Raises GpenVideoError subclasses (InputError, OutputError, EncodeError,
    Cancelled ...); on any error the partial output is removed and the input is untouched.
    """
    validate(cfg)
    source = Path(source)
    check_input_path(source)
    target, notes = resolve_output(source, Path(output) if output else None, overwrite)
    for note in notes:
        log.warning("%s", note)
    tmp = temporary_path(target)
    started = time.monotonic()
    try:
        with Decoder(source, cfg.decode) as decoder:
            info = decoder.info
            chain = stages(info) if stages else []
            size = size_for(info) if size_for else (info.width, info.height)
            with Encoder(tmp, container_for(target), info, cfg.encode, size) as encoder:
                _run_threads(decoder, chain, encoder, cfg, progress, started)
            summary = RunSummary(input=str(source), output=str(target),
                                 frames=encoder.frames_written,
                                 corrupt_packets=decoder.corrupt_packets,
                                 notes=notes + encoder.notes)
        for stage in chain:
            summary.faces += getattr(stage, "faces_done", 0)
            summary.tracks += getattr(stage, "tracks_confirmed", 0)
            summary.notes += getattr(stage, "notes", [])
        if summary.corrupt_packets:
            summary.notes.append(f"{summary.corrupt_packets} damaged video packets were skipped")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary.seconds = time.monotonic() - started
    return summary


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


def _run_threads(decoder: Decoder, chain: list[Stage], encoder: Encoder, cfg: RestoreConfig,
                 progress: ProgressCallback | None, started: float) -> None:
    workers = _Workers()
    queues = [queue.Queue(maxsize=cfg.pipeline.queue_size) for _ in range(len(chain) + 1)]
    done = {"frames": 0}

    def decode() -> None:
        for frame in decoder.frames():
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
            encoder.write(frame)
            done["frames"] += 1

    workers.start("decode", decode)
    for i, stage in enumerate(chain):
        workers.start(stage.name, stage_loop(stage, queues[i], queues[i + 1]))
    workers.start("encode", encode)

    total = decoder.info.frames
    last_report = 0.0
    try:
        while workers.alive():
            time.sleep(_POLL)
            now = time.monotonic()
            if progress and now - last_report >= 1.0:
                last_report = now
                progress(Progress(done["frames"], total, now - started, _faces(chain)))
    except KeyboardInterrupt:
        workers.stop.set()
        workers.join()
        raise Cancelled(f"{decoder.path}: interrupted; no output was written") from None
    workers.join()
    if workers.errors:
        raise workers.errors[0]
    if progress:
        progress(Progress(done["frames"], total, time.monotonic() - started, _faces(chain)))


def build_restore_stages(cfg: RestoreConfig) -> tuple[StageFactory, int]:
    """The face stages (detect, track, restore, composite) for `cfg`, and the model's size.
    Loads the GPEN checkpoint and the detector now, so a missing file fails before decoding."""
    from .compositor import Compositor
    from .detector import create_detector
    from .models import weights
    from .models.runner import GPENRunner
    from .restorer import DetectStage, RestoreStage
    from .tracker import Tracker

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
    size = runner.size

    def factory(info: VideoInfo) -> list[Stage]:
        return [DetectStage(detector), Tracker(cfg.track),
                RestoreStage(runner.restore, size, runner.batch_size),
                Compositor(cfg.composite, size, strength)]

    return factory, size


def restore_video(source: str | Path, output: str | Path | None = None,
                  cfg: RestoreConfig | None = None, *, overwrite: bool = False,
                  progress: ProgressCallback | None = None) -> RunSummary:
    """Restore every tracked face of `source` with GPEN and write `output` (see `run`)."""
    cfg = validate(cfg or RestoreConfig())
    with Decoder(source, cfg.decode):  # bad input is refused before a model is loaded
        pass
    resolve_output(Path(source), Path(output) if output else None, overwrite)
    if cfg.composite.upscale != 1:
        raise InputError("--upscale other than 1 is not available yet; use --upscale 1")
    factory, _ = build_restore_stages(cfg)
    return run(source, output, cfg, factory, overwrite=overwrite, progress=progress)


def track_video(source: str | Path, cfg: RestoreConfig | None = None) -> dict:
    """Detect and track the faces of `source`. Returns the `gpenvideo track` JSON document:
    {"frames": [{"pts": seconds, "faces": [{"track", "box", "raw", "smoothed", "score"}]}]}."""
    from .detector import create_detector
    from .tracker import Tracker

    cfg = validate(cfg or RestoreConfig())
    detector = create_detector(cfg.detect, cfg.model.weights_dir)
    tracker = Tracker(cfg.track)
    frames_out = []

    def record(frame: Frame) -> None:
        frames_out.append({
            "pts": float(frame.pts * info.time_base),
            "faces": [{"track": f.track_id, "box": [round(float(v), 2) for v in f.box],
                       "raw": None if f.raw is None else np.round(f.raw, 2).tolist(),
                       "smoothed": np.round(f.smoothed, 2).tolist(),
                       "score": round(float(f.score), 4)} for f in frame.faces]})

    with Decoder(source, cfg.decode) as decoder:
        info = decoder.info
        for frame in decoder.frames():
            frame.detections = detector.detect([frame.image])[0]
            for done in tracker.process(frame):
                record(done)
        for done in tracker.flush():
            record(done)
    return {"source": str(source), "width": info.width, "height": info.height,
            "tracks": tracker.tracks_confirmed, "frames": frames_out}


def _faces(chain: list[Stage]) -> int:
    return sum(getattr(stage, "faces_done", 0) for stage in chain)
