"""`gpenvideo preview`: a look at a few moments of a film, restored exactly as `restore` would,
before the long run.

For each moment a short window is decoded (seeking by keyframe: the cost grows with the number
of moments, not with the film's length): the tracker's `context` frames before the moment and
after it (after the clip, with --clip), so tracking and smoothing see what they see in a full
run. The window runs through the restore stages on this thread; only the moment's frame (and
the clip's frames) are marked to be written (Frame.emit), so GPEN runs on those alone.

Moments: --at gives their times; otherwise `count` spread over the film, each at the tracker's
context after the keyframe nearest its slot (no frame is decoded for nothing); a moment whose
frame shows no face is moved within its slot (up to PROBES tries).

A short film, whose windows would overlap (it has no more frames than the windows together), is
decoded once from start to end instead, every moment marked in that one pass (PickMoments), so
no frame is decoded twice and the full-run estimate is measured on the film itself.

The contact sheet has one row per moment: its time, the whole frame before and after (one
"after" per strength), and each face enlarged, before | after, with its track id beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .config import EncodeConfig, RestoreConfig, validate
from .errors import InputError, OutputError
from .frames import Frame, TrackedFace, VideoInfo, to_uint8
from .media import Decoder, Encoder, check_input_path
from .segments import unseen_track_notes

PROBES = 3  # tries per slot to find a moment with a face (the slot's middle, then either side)
PROBE_OFFSETS = (0.0, 0.3, -0.3)  # where in its slot each try lands (fractions of a slot)
MAX_FACES = 4  # faces shown per row (the largest)
FACE_SCALE = 1.8  # a face cell shows the face box enlarged by this factor (forehead, chin)

# sheet geometry (pixels)
THUMB_H = 216  # height of a whole-frame picture and of a face cell
LABEL_W = 120  # the row's label (time) column
ID_W = 44  # the strip with the track id, left of a face's pictures
TITLE_H = 22  # the caption above each picture
GAP = 6  # between pictures
BACKGROUND = (38, 38, 38)
TEXT = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Moment:
    """One row of the sheet."""

    seconds: float  # time of the moment's frame in the film
    before: np.ndarray  # (H, W, 3) uint8 BGR, the frame as decoded
    after: list[np.ndarray]  # one restored frame per strength (H*u, W*u, 3) uint8 BGR
    faces: list[TrackedFace]  # the frame's tracked faces (left-alone ones too)
    restored_ids: set[int]  # the track ids that were restored


@dataclass
class PreviewResult:
    """What `preview` made and measured."""

    sheet: Path
    clip: Path | None
    moments: list[Moment]
    strengths: list[float]
    decoded: int = 0  # frames decoded, all windows together
    windows: int = 0  # windows decoded (probes that found no face included)
    seconds: float = 0.0  # time spent in all
    estimate: float = 0.0  # seconds a full restore of the film would take at the measured speed
    per_track: list[dict] = field(default_factory=list)  # quality figures of the clip's tracks
    notes: list[str] = field(default_factory=list)


def parse_times(text: str) -> list[float]:
    """'0:12,1:40.5,95' -> [12.0, 100.5, 95.0] seconds (h:m:s, m:s or s). Raises InputError."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            parts = [float(p) for p in item.split(":")]
        except ValueError:
            parts = []
        if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise InputError(f"--at {text!r}: {item!r} is not a time; give m:ss.s or seconds, "
                             "comma-separated (e.g. 0:12,1:40.5)")
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + p
        out.append(seconds)
    return out


def parse_strengths(text: str) -> list[float]:
    """'0.5,0.8,1' -> [0.5, 0.8, 1.0]. Raises InputError for values outside 0..1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise InputError(f"--strength {text!r} is not valid: give values from 0 to 1, "
                         "comma-separated (e.g. 0.5,0.8,1)")
    return values


def clock(seconds: float) -> str:
    """m:ss.ss (h:mm:ss.ss past an hour)."""
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:05.2f}" if h else f"{int(m)}:{s:05.2f}"


def preview_paths(source: Path, output: Path | None, clip: float,
                  overwrite: bool) -> tuple[Path, Path | None]:
    """The sheet (default <name>_preview.png beside the source) and the clip (the sheet's name
    with .mp4). Raises OutputError for an existing file without `overwrite`, a missing folder,
    or a sheet name that is not .png."""
    sheet = output or source.with_name(f"{source.stem}_preview.png")
    if sheet.is_dir():
        sheet = sheet / f"{source.stem}_preview.png"
    if sheet.suffix.lower() != ".png":
        raise OutputError(f"{sheet}: the contact sheet is a PNG; name it .png")
    movie = sheet.with_suffix(".mp4") if clip > 0 else None
    for path in (sheet, movie):
        if path is None:
            continue
        if not path.parent.is_dir():
            raise OutputError(f"{path}: the folder {path.parent} does not exist; create it first")
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    return sheet, movie


class _Timed:
    """A stage wrapped so the time spent in it is added up (for the full-run estimate)."""

    def __init__(self, stage, seconds: dict[str, float]) -> None:
        self.stage, self.seconds = stage, seconds
        self.name = stage.name
        self.context = stage.context

    def _timed(self, fn: Callable[[], Iterable[Frame]]) -> list[Frame]:
        start = time.perf_counter()
        out = list(fn())
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + time.perf_counter() - start
        return out

    def process(self, frame: Frame) -> list[Frame]:
        return self._timed(lambda: self.stage.process(frame))

    def flush(self) -> list[Frame]:
        return self._timed(self.stage.flush)


FRAME_STAGES = ("detect", "track", "select")  # stages whose cost every frame of a full run pays


def preview(source: str | Path, output: str | Path | None = None,
            cfg: RestoreConfig | None = None, *, count: int = 6, at: list[float] | None = None,
            strengths: list[float] | None = None, clip: float = 0.0, overwrite: bool = False,
            stages=None, context: int | None = None,
            tracks: str | Path | None = None) -> PreviewResult:
    """Write the contact sheet of `source` (and with `clip` seconds, a side-by-side MP4).

    stages: a segments.Recipe whose stages end with the compositor (default:
    api.restore_recipe(cfg), loading the model).
    context: frames decoded before and after each moment (default: the tracker's context).
    strengths: one "after" column per value (default: the strength restore would use).
    tracks: a `gpenvideo track` JSON of this film: faces are relabelled with its whole-film
    track ids (matched by box at the same time; 0 where none matches) before the stage named
    "select", so cfg.select (--faces/--skip-faces) chooses by those ids, as restore does.
    Raises InputError (bad input, --at past the end, --faces/--skip-faces without `tracks`),
    OutputError (see preview_paths), and what the stages raise.
    """
    from . import api, engine

    started = time.monotonic()
    cfg = validate(cfg or RestoreConfig())
    source = Path(source)
    check_input_path(source)
    if count < 1 and not at:
        raise InputError(f"--count {count} is not valid: give 1 or more")
    if clip < 0:
        raise InputError(f"--clip {clip:g} is not valid: give seconds above 0")
    sheet_path, clip_path = preview_paths(source, Path(output) if output else None, clip,
                                          overwrite)
    with Decoder(source, cfg.decode) as probe:
        info = probe.info
    duration = info.duration or 0.0
    if at:
        late = [t for t in at if duration and t >= duration]
        if late:
            raise InputError(f"{source}: --at {clock(late[0])} is past the end of the film "
                             f"({clock(duration)})")
    if (cfg.select.faces or cfg.select.skip_faces) and not tracks:
        raise InputError(f"{source}: --faces/--skip-faces take whole-film track ids and a "
                         "preview tracks each moment afresh (its own ids); add --tracks "
                         "TRACKS.json, made by gpenvideo track FILM -o TRACKS.json")
    film_ids = load_track_index(Path(tracks), info) if tracks else None
    factory = (stages or api.restore_recipe(cfg)).stages
    context = api.tracking_context(cfg) if context is None else context
    fps = float(info.frame_rate) if info.frame_rate else 25.0
    face_costs: list[float] = []  # per window: restore, quality, paste seconds per frame written
    frame_seconds = 0.0  # detect, track and select, all windows
    result = PreviewResult(sheet=sheet_path, clip=clip_path, moments=[], strengths=[])
    counters: dict = {"frames": 0, "decode": 0.0}

    def make_chain(timings: dict[str, float]) -> list:
        """A fresh restore chain, each stage timed into `timings`; with a track file, the
        whole-film ids are given before the selection (the figures and compositor stay last)."""
        chain = [_Timed(stage, timings) for stage in factory(info)]
        if film_ids is not None:
            at = next((i for i, s in enumerate(chain) if s.name == "select"),
                      max(len(chain) - 2, 0))
            chain.insert(at, _FilmIds(film_ids, info))
        return chain

    def run_window(seek: float, exact: bool, clip_frames: int) -> Moment | None:
        """Decode and restore one window; the moment is at `seek` (exact) or `context` frames
        after the keyframe before it."""
        timings: dict[str, float] = {}
        chain = make_chain(timings)
        compositor = chain[-1].stage
        result.strengths = strengths or [compositor.strength]
        emitted: list[tuple[Frame, np.ndarray]] = []
        result.windows += 1
        with Decoder(source, cfg.decode) as decoder:
            frames = _window(decoder, seek, exact, context, clip_frames, fps, result, counters)
            for frame in engine.run_chain(frames, chain[:-1]):
                if frame.emit:
                    emitted.append((frame, frame.image.copy()))
        if not emitted:
            _count_frame_stages(timings)
            return None
        return finish(chain, timings, emitted, [emitted[0]], emitted if clip_frames else [])[0]

    def _count_frame_stages(timings: dict[str, float]) -> None:
        nonlocal frame_seconds
        frame_seconds += sum(timings.get(n, 0.0) for n in FRAME_STAGES)

    def finish(chain: list[_Timed], timings: dict[str, float],
               emitted: list[tuple[Frame, np.ndarray]], chosen: list[tuple[Frame, np.ndarray]],
               clip_frames: list[tuple[Frame, np.ndarray]]) -> list[Moment]:
        """The moments of one decoded run (`chosen` of its `emitted` frames, each pasted
        once per strength), its costs added up, and the clip written from `clip_frames`."""
        _count_frame_stages(timings)
        compositor = chain[-1].stage
        moments = []
        for first, before in chosen:
            moment = Moment(seconds=float(first.pts * info.time_base), before=to_uint8(before),
                            after=[], faces=list(first.faces),
                            restored_ids={r.track_id for r in first.restored})
            for s in result.strengths:
                comp = copy.copy(compositor)
                comp.strength = s
                start = time.perf_counter()
                moment.after.append(to_uint8(_composited(comp, first)))
                timings["composite"] = timings.get("composite", 0.0) + time.perf_counter() - start
            moments.append(moment)
        pasted = len(result.strengths) * len(chosen)
        if any(first.restored for first, _ in chosen):  # restoring (every frame written),
            # pasting (the moments', per strength)
            restoring = sum(v for n, v in timings.items() if n not in FRAME_STAGES + ("composite",))
            face_costs.append(restoring / len(emitted) + timings["composite"] / pasted)
        if clip_frames:
            result.per_track = chain[-2].stage.track_rows() if hasattr(
                chain[-2].stage, "track_rows") else []
            _write_clip(clip_path, info, clip_frames, compositor, result.strengths[0],
                        cfg.encode)
            counters["clip_moment"] = moments[0]
        return moments

    def run_pass(slots: list[list[int]] | None, clip_frames: int) -> list[Moment]:
        """The whole film decoded once, the moments marked in passing: with `slots` (frame
        indices to try per moment, see PickMoments) the first of each slot's with a face, else
        the frame at or after each --at time."""
        timings: dict[str, float] = {}
        chain = make_chain(timings)
        result.strengths = strengths or [chain[-1].stage.strength]
        picker = PickMoments(slots or [], clip_frames)
        names = [t.name for t in chain]
        at_restore = names.index("restore") if "restore" in names else len(chain) - 1
        stages_run = chain[:at_restore] + ([picker] if slots else []) + chain[at_restore:-1]
        result.windows += 1
        emitted: list[tuple[Frame, np.ndarray]] = []
        with Decoder(source, cfg.decode) as decoder:
            frames = _whole_film(decoder, None if slots else at, clip_frames, result, counters,
                                 picker.picked)
            for frame in engine.run_chain(frames, stages_run):
                if frame.emit:
                    emitted.append((frame, frame.image.copy()))
        picked = sorted(set(picker.picked))
        chosen = [e for e in emitted if e[0].index in picked]
        if not chosen:
            _count_frame_stages(timings)
            return []
        first = chosen[0][0].index
        clip = [e for e in emitted if first <= e[0].index < first + clip_frames]
        return finish(chain, timings, emitted, chosen, clip)

    total = info.frames or round(duration * fps)
    wanted = len(at) if at else count
    if total and total <= wanted * (2 * context + 1) + _clip_frames(clip, fps):
        # a short film: its windows would overlap; decode it once
        slots = None if at else moment_slots(total, count)
        result.moments = run_pass(slots, _clip_frames(clip, fps))
        for moment in result.moments:
            if not moment.faces and not at:
                result.notes.append(f"no face found near {clock(moment.seconds)}")
    elif at:
        for i, t in enumerate(at):
            moment = run_window(t, True, _clip_frames(clip, fps) if i == 0 else 0)
            if moment is not None:
                result.moments.append(moment)
    else:
        slot = duration / count if duration else 0.0
        for i in range(count):
            chosen = None
            for offset in PROBE_OFFSETS[:PROBES]:
                t = max(0.0, slot * (i + 0.5 + offset))
                moment = run_window(t, False, _clip_frames(clip, fps) if not result.moments
                                    and chosen is None else 0)
                if moment is None or any(abs(m.seconds - moment.seconds) < 1e-6
                                         for m in result.moments):
                    continue  # past the end, or the same keyframe as an earlier moment
                if chosen is None:
                    chosen = moment
                if moment.faces:
                    chosen = moment
                    break
            if chosen is None:
                continue
            if not chosen.faces:
                result.notes.append(f"no face found near {clock(chosen.seconds)}")
            result.moments.append(chosen)
    if not result.moments:
        raise InputError(f"{source}: no frame could be decoded at the moments asked for")
    if not at and len(result.moments) < count:
        why = f"it has {total} frames" if total < count else "too few keyframes for more"
        result.notes.append(f"{len(result.moments)} moments, not {count}: {why}")
    result.moments.sort(key=lambda m: m.seconds)
    if film_ids is not None:
        result.notes += unseen_track_notes(cfg, [{"track": i} for i in film_ids.ids])
    _write_png(sheet_path, render_sheet(result.moments, result.strengths))
    result.seconds = time.monotonic() - started
    result.estimate = _estimate(info, frame_seconds, face_costs, counters, result.moments)
    return result


class TrackIndex:
    """The faces of a `gpenvideo track` document by time, to give a preview's faces the
    whole-film track ids."""

    def __init__(self, frames: dict[int, list[tuple[int, np.ndarray]]], step: float) -> None:
        self.frames = frames  # time in 1/1000 s -> [(track id, box)]
        self.step = step  # half a frame, 1/1000 s: how far apart two times may be and match

    @property
    def ids(self) -> list[int]:
        """The film's track ids, ascending."""
        return sorted({i for faces in self.frames.values() for i, _ in faces})

    def relabel(self, faces: list[TrackedFace], seconds: float) -> list[TrackedFace]:
        """`faces` (of the frame at `seconds` in the film) with the whole-film track ids, each
        matched by box overlap with the file's faces of that frame; 0 where none overlaps by
        half."""
        from .tracker import iou

        key = int(round(seconds * 1000))
        near = min(self.frames, key=lambda k: abs(k - key), default=None)
        known = self.frames.get(near, []) if near is not None and \
            abs(near - key) <= self.step else []
        out = []
        for face in faces:
            best = max(known, key=lambda t: iou(face.box, t[1]), default=None)
            good = best is not None and iou(face.box, best[1]) >= 0.5
            out.append(dataclasses.replace(face, track_id=best[0] if good else 0))
        return out


class _FilmIds:
    """Preview stage before the selection: every frame's faces get the whole-film track ids of
    a TrackIndex, so --faces/--skip-faces, the sheet's labels and the clip's figures use them."""

    name = "film ids"
    context = 0

    def __init__(self, index: TrackIndex, info: VideoInfo) -> None:
        self.index, self.info = index, info

    def process(self, frame: Frame) -> Iterable[Frame]:
        frame.faces = self.index.relabel(frame.faces, float(frame.pts * self.info.time_base))
        return (frame,)

    def flush(self) -> Iterable[Frame]:
        return ()


def load_track_index(path: Path, info: VideoInfo) -> TrackIndex:
    """Read a `gpenvideo track` JSON. Raises InputError when it cannot be read or was made
    from another film (its frame size differs)."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        frames = {int(round(f["pts"] * 1000)): [(int(face["track"]),
                                                 np.asarray(face["box"], np.float64))
                                                for face in f["faces"]]
                  for f in doc["frames"]}
        size = (doc["width"], doc["height"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a `gpenvideo track` file ({exc}); make it with "
                         "gpenvideo track FILM -o TRACKS.json") from exc
    if size != (info.width, info.height):
        raise InputError(f"{path}: was made from a {size[0]}x{size[1]} film, not {info.path}; "
                         "run gpenvideo track on this film")
    fps = float(info.frame_rate) if info.frame_rate else 25.0
    return TrackIndex(frames, 500.0 / fps)


def moment_slots(total: int, count: int) -> list[list[int]]:
    """Per moment of a film of `total` frames decoded once, the frame indices to try in
    order (as the windows probe: the slot's middle, then either side); slots that would
    repeat an earlier slot's frames are left out (more moments than frames)."""
    slot = total / count
    slots, used = [], set()
    for i in range(count):
        tries = []
        for offset in PROBE_OFFSETS[:PROBES]:
            k = min(total - 1, max(0, int(slot * (i + 0.5 + offset))))
            if k not in tries and k not in used:
                tries.append(k)
        if tries:
            slots.append(tries)
            used.update(tries)
    return slots


class PickMoments:
    """A stage just before the restorer in the one pass over a short film: marks the frames
    to write (Frame.emit), so GPEN runs on those alone. For each slot (frame indices in the
    order tried) the frames are held until its last try has arrived; the first try whose
    frame has a tracked face is the moment, else the first try. From the first moment on,
    `clip_frames` frames are written for the clip. `picked` lists the moments' indices."""

    name = "pick"
    context = 0

    def __init__(self, slots: list[list[int]], clip_frames: int) -> None:
        self.slots = slots
        self.clip_frames = clip_frames
        self.picked: list[int] = []  # frame index of each moment, in slot order
        self._held: list[Frame] = []  # frames from the current slot's earliest try on
        self._slot = 0  # the slot not decided yet

    def process(self, frame: Frame) -> list[Frame]:
        frame.emit = False
        self._held.append(frame)
        return self._release(final=False)

    def flush(self) -> list[Frame]:
        return self._release(final=True)

    def _release(self, final: bool) -> list[Frame]:
        while self._slot < len(self.slots):
            tries = self.slots[self._slot]
            if not final and (not self._held or self._held[-1].index < max(tries)):
                break
            held = {f.index: f for f in self._held}
            present = [i for i in tries if i in held]
            if present:
                pick = next((i for i in present if held[i].faces), present[0])
                held[pick].emit = True
                self.picked.append(pick)
            self._slot += 1
        bound = min(self.slots[self._slot]) if self._slot < len(self.slots) else None
        out = []
        while self._held and (final or bound is None or self._held[0].index < bound):
            frame = self._held.pop(0)
            first = self.picked[0] if self.picked else None
            if first is not None and first <= frame.index < first + self.clip_frames:
                frame.emit = True
            out.append(frame)
        return out


def _whole_film(decoder: Decoder, at: list[float] | None, clip_frames: int,
                result: PreviewResult, counters: dict, picked: list[int]) -> Iterator[Frame]:
    """Every frame of the film, numbered from 0. With `at`, the first frame at or after each
    time is written (its index added to `picked`), and `clip_frames` frames from the first of
    them; without, nothing is marked here (PickMoments does it)."""
    info = decoder.info
    pending = sorted(round(t / info.time_base) for t in at) if at else []
    first = None
    clock_start = time.perf_counter()
    for index, frame in enumerate(decoder.frames()):
        result.decoded += 1
        counters["decode"] += time.perf_counter() - clock_start
        counters["frames"] += 1
        frame.index = index
        frame.emit = False
        if at is not None:
            hit = False
            while pending and frame.pts >= pending[0]:
                pending.pop(0)
                hit = True
            if hit:
                picked.append(index)
                first = index if first is None else first
            frame.emit = hit or (first is not None and index < first + clip_frames)
        yield frame
        clock_start = time.perf_counter()


def _clip_frames(clip: float, fps: float) -> int:
    return int(round(clip * fps)) if clip > 0 else 0


def _window(decoder: Decoder, seek: float, exact: bool, context: int, clip_frames: int,
            fps: float, result: PreviewResult, counters: dict) -> Iterator[Frame]:
    """The frames of one window, renumbered from 0, `emit` set on the moment (and the clip).
    exact: the moment is the first frame at or after `seek` seconds, `context` frames are fed
    before it (decoding starts at the keyframe before those); otherwise the moment is `context`
    frames after the keyframe at or before `seek`."""
    info = decoder.info
    lead = max(0.0, seek - context / fps) if exact else seek
    start_pts = int(lead / info.time_base)
    moment_pts = int(round(seek / info.time_base))
    moment = None  # window index of the moment's frame
    index = 0
    clock_start = time.perf_counter()
    for frame in decoder.frames(start_pts if start_pts > 0 else None):
        result.decoded += 1
        counters["decode"] += time.perf_counter() - clock_start
        if exact and frame.pts < start_pts and moment is None:
            clock_start = time.perf_counter()
            continue  # between the keyframe and the window
        if moment is None and (not exact or frame.pts >= moment_pts) and \
                (exact or index >= context):
            moment = index
        last = None if moment is None else moment + max(clip_frames, 1) - 1
        frame.index = index
        frame.emit = moment is not None and index <= last
        counters["frames"] += 1
        yield frame
        if last is not None and index >= last + context:
            return
        index += 1
        clock_start = time.perf_counter()


def _composited(compositor, frame: Frame) -> np.ndarray:
    """The frame with its restored faces pasted by `compositor` (on a copy)."""
    twin = dataclasses.replace(frame, image=frame.image.copy(), restored=list(frame.restored),
                               changed=[])
    out = list(compositor.process(twin))
    return out[0].image


def _write_clip(path: Path | None, info: VideoInfo, emitted: list[tuple[Frame, np.ndarray]],
                compositor, strength: float, encode: EncodeConfig) -> None:
    """Side by side (before | after) of the clip's frames, as H.264 in an MP4."""
    if path is None:
        return
    comp = copy.copy(compositor)
    comp.strength = strength
    pairs = [(to_uint8(before), to_uint8(_composited(comp, frame))) for frame, before in emitted]
    h, w = pairs[0][1].shape[:2]
    width, height = 2 * w + (2 * w) % 2, h + h % 2
    flat = dataclasses.replace(info, rotation=0, width=width, height=height, bit_depth=8,
                               chroma="420", sample_aspect_ratio=None)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    base = emitted[0][0].pts
    try:
        with Encoder(tmp, "mp4", flat, dataclasses.replace(encode, audio=False),
                     (width, height)) as encoder:
            for (frame, _), (before, after) in zip(emitted, pairs):
                if before.shape != after.shape:
                    before = cv2.resize(before, (w, h), interpolation=cv2.INTER_CUBIC)
                side = np.zeros((height, width, 3), np.uint8)
                side[:h, :w], side[:h, w:2 * w] = before, after
                encoder.write(Frame(index=frame.index, pts=frame.pts - base,
                                    duration=frame.duration, image=side))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _estimate(info: VideoInfo, frame_seconds: float, face_costs: list[float], counters: dict,
              moments: list[Moment]) -> float:
    """Seconds a full restore would take: every frame pays decoding, detection and tracking as
    measured here; frames with faces (the share of moments that had one) pay restoring and
    pasting at the median cost per frame of the windows (the median leaves out the model's
    first, slow call). Encoding is not included."""
    frames = info.frames or int(round((info.duration or 0) * float(info.frame_rate or 25)))
    per_frame = (counters["decode"] + frame_seconds) / max(counters["frames"], 1)
    face_share = sum(1 for m in moments if m.faces) / max(len(moments), 1)
    per_face_frame = float(np.median(face_costs)) if face_costs else 0.0
    return frames * (per_frame + face_share * per_face_frame)


# -- the sheet ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on the sheet (pixels)."""

    thumb_w: int  # width of a whole-frame picture (height THUMB_H)
    afters: int  # "after" columns per picture (one per strength)
    faces: int  # face slots per row (the most faces of any row, at most MAX_FACES)
    rows: int

    @property
    def row_h(self) -> int:
        return TITLE_H + THUMB_H + GAP

    @property
    def frame_x(self) -> list[int]:
        """x of each whole-frame picture: before, then one per strength."""
        return [LABEL_W + k * (self.thumb_w + GAP) for k in range(1 + self.afters)]

    def face_x(self, slot: int) -> list[int]:
        """x of face slot `slot`'s pictures (before, afters); its id strip is ID_W left."""
        x0 = self.frame_x[-1] + self.thumb_w + GAP + slot * (ID_W + (1 + self.afters) * (
            THUMB_H + GAP)) + ID_W
        return [x0 + k * (THUMB_H + GAP) for k in range(1 + self.afters)]

    @property
    def width(self) -> int:
        return (self.face_x(self.faces)[0] - ID_W) if self.faces else \
            self.frame_x[-1] + self.thumb_w + GAP

    @property
    def height(self) -> int:
        return GAP + self.rows * self.row_h

    def row_y(self, row: int) -> int:
        """y of a row's pictures (its captions are TITLE_H above)."""
        return GAP + row * self.row_h + TITLE_H


def sheet_layout(frame_size: tuple[int, int], afters: int, faces_per_row: list[int]
                 ) -> SheetLayout:
    """The layout for frames of `frame_size` (w, h), `afters` strengths, and the rows' faces."""
    w, h = frame_size
    return SheetLayout(thumb_w=max(1, round(THUMB_H * w / h)), afters=afters,
                       faces=min(MAX_FACES, max(faces_per_row, default=0)),
                       rows=len(faces_per_row))


def _shown_faces(moment: Moment) -> list[TrackedFace]:
    """The faces a row shows: the largest MAX_FACES, left to right."""
    faces = sorted(moment.faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return sorted(faces[:MAX_FACES], key=lambda f: f.box[0])


def render_sheet(moments: list[Moment], strengths: list[float]) -> np.ndarray:
    """(H, W, 3) uint8 BGR contact sheet of `moments` (see sheet_layout for the geometry)."""
    h, w = moments[0].before.shape[:2]
    layout = sheet_layout((w, h), len(strengths), [len(_shown_faces(m)) for m in moments])
    sheet = np.full((layout.height, layout.width, 3), BACKGROUND, np.uint8)
    titles = ["after" if len(strengths) == 1 else f"after {s:g}" for s in strengths]
    for row, moment in enumerate(moments):
        y = layout.row_y(row)
        _text(sheet, clock(moment.seconds), (GAP, y + 24), 0.6)
        shown = _shown_faces(moment)
        if len(moment.faces) > len(shown):
            _text(sheet, f"+{len(moment.faces) - len(shown)} faces", (GAP, y + 50), 0.45)
        if not moment.faces:
            _text(sheet, "no face", (GAP, y + 50), 0.45)
        marked = _mark_faces(moment.before, moment.faces)
        for x, picture, title in zip(layout.frame_x, [marked] + moment.after,
                                     ["before"] + titles):
            _put(sheet, picture, x, y, layout.thumb_w, THUMB_H)
            _text(sheet, title, (x, y - 6), 0.5)
        for slot, face in enumerate(shown):
            xs = layout.face_x(slot)
            _text(sheet, f"#{face.track_id}", (xs[0] - ID_W + 2, y + THUMB_H // 2 + 8), 0.6)
            left_alone = face.track_id not in moment.restored_ids
            for k, (x, picture) in enumerate(zip(xs, [moment.before] + moment.after)):
                scale = picture.shape[1] / w
                _put(sheet, face_cell(picture, face.box * scale), x, y, THUMB_H, THUMB_H)
                title = "before" if k == 0 else ("left alone" if left_alone else titles[k - 1])
                _text(sheet, title, (x, y - 6), 0.5)
    return sheet


def face_cell(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A square cut of `image` around `box` (x1, y1, x2, y2), FACE_SCALE times its larger side,
    the part outside the frame filled with BACKGROUND."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(8.0, FACE_SCALE * max(box[2] - box[0], box[3] - box[1]))
    m = np.array([[THUMB_H / side, 0, THUMB_H / 2 - cx * THUMB_H / side],
                  [0, THUMB_H / side, THUMB_H / 2 - cy * THUMB_H / side]], np.float64)
    shrink = side > THUMB_H
    src = image
    if shrink:  # area-average first so a large face is not aliased
        f = THUMB_H / side
        src = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m = np.array([[1, 0, THUMB_H / 2 - cx * f], [0, 1, THUMB_H / 2 - cy * f]], np.float64)
    return cv2.warpAffine(src, m, (THUMB_H, THUMB_H), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND)


def _mark_faces(image: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    """The frame with each face's box and track id drawn (line width fit for the thumbnail)."""
    out = image.copy()
    thick = max(1, round(image.shape[0] / THUMB_H))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (60, 220, 60), thick)
        cv2.putText(out, f"#{face.track_id}", (x1, max(12 * thick, y1 - 4 * thick)), FONT,
                    0.5 * thick, (60, 220, 60), thick, cv2.LINE_AA)
    return out


def _put(sheet: np.ndarray, picture: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    interp = cv2.INTER_AREA if picture.shape[0] > h else cv2.INTER_CUBIC
    sheet[y:y + h, x:x + w] = cv2.resize(picture, (w, h), interpolation=interp)


def _text(sheet: np.ndarray, text: str, at: tuple[int, int], scale: float) -> None:
    cv2.putText(sheet, text, at, FONT, scale, TEXT, 1, cv2.LINE_AA)


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write atomically (a temporary name beside `path`, renamed). Raises OutputError."""
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.png")
    try:
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise OutputError(f"{path}: could not encode the contact sheet")
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the contact sheet ({exc})") from exc
