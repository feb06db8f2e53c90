"""The engine and the segment runs around it: what stages change reaches the output (the Frame
contract), and a resumed run reuses only segments rendered with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip

from gpenvideo import segments
from gpenvideo.config import RestoreConfig
from gpenvideo.frames import Frame

LOSSLESS = RestoreConfig().replace("encode", codec="ffv1")


class Paint:
    """A stage that paints: the whole picture through replace_image, or a patch through paste."""

    name = "paint"
    context = 0

    def __init__(self, patch: tuple[int, int, int, int] | None = None) -> None:
        self.patch = patch  # x0, y0, x1, y1; None: the whole picture black

    def process(self, frame: Frame):
        if self.patch is None:
            frame.replace_image(np.zeros_like(frame.image))
        else:
            x0, y0, x1, y1 = self.patch
            mask = np.ones((y1 - y0, x1 - x0), bool)
            frame.paste(x0, y0, np.full((*mask.shape, 3), 255, frame.image.dtype), mask)
        return (frame,)

    def flush(self):
        return ()


class WritesInPlace(Paint):
    """A stage that breaks the contract: it writes into frame.image."""

    def process(self, frame: Frame):
        frame.image[:] = 0
        return (frame,)


def pictures(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("engine") / "c.mkv", frames=6, size=(64, 48))


def test_a_stage_painting_whole_frames_reaches_the_output(clip, tmp_path):
    out = tmp_path / "black.mkv"
    segments.run(clip, out, LOSSLESS, segments.Recipe(build=lambda info: [Paint()]))
    frames = pictures(out)
    assert len(frames) == 6 and all(f.max() == 0 for f in frames)


def test_a_stage_painting_a_patch_reaches_the_output_and_nothing_else_changes(clip, tmp_path):
    plain, patched = tmp_path / "plain.mkv", tmp_path / "patched.mkv"
    segments.run(clip, plain, LOSSLESS)
    segments.run(clip, patched, LOSSLESS,
                 segments.Recipe(build=lambda info: [Paint((10, 8, 30, 20))]))
    for a, b in zip(pictures(plain), pictures(patched), strict=True):
        inside = np.zeros(a.shape[:2], bool)
        inside[8:20, 10:30] = True
        assert b[inside].min() >= 240 > a[inside].min()  # white, through 4:2:0 chroma
        assert np.array_equal(a[~inside], b[~inside])


def test_writing_into_frame_image_fails_loudly_and_leaves_no_output(clip, tmp_path):
    out = tmp_path / "o.mkv"
    with pytest.raises(ValueError, match="read-only"):
        segments.run(clip, out, LOSSLESS, segments.Recipe(build=lambda info: [WritesInPlace()]))
    assert not out.exists()


def test_frame_image_cannot_be_assigned():
    frame = Frame(0, 0, 0, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(AttributeError, match="replace_image"):
        frame.image = np.ones((4, 4, 3), np.uint8)


class StopAfter:
    """A progress callback that interrupts a run once `frames` frames are done."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __call__(self, progress) -> None:
        if progress.frames_done > self.frames:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("film") / "film.mp4", seconds=4, size=(64, 48),
                     gop=25)


def test_a_library_run_does_not_resume_segments_of_other_settings(film, tmp_path):
    out = tmp_path / "out.mp4"
    coarse = RestoreConfig().replace("pipeline", segment_seconds=1).replace("encode", crf=51)
    with pytest.raises(Exception, match="interrupted"):
        segments.run(film, out, coarse, progress=StopAfter(25))
    work = segments.WorkFolder(out)
    assert list(work.path.glob("seg-*.json"))  # some CRF-51 segments were kept
    fine = coarse.replace("encode", crf=0)
    summary = segments.run(film, out, fine)
    assert summary.segments == 4 and summary.segments_resumed == 0


def test_a_library_run_resumes_segments_of_the_same_settings(film, tmp_path):
    out = tmp_path / "out.mp4"
    cfg = RestoreConfig().replace("pipeline", segment_seconds=1)
    with pytest.raises(Exception, match="interrupted"):
        segments.run(film, out, cfg, progress=StopAfter(25))
    kept = len(list(segments.WorkFolder(out).path.glob("seg-*.json")))
    summary = segments.run(film, out, cfg)
    assert kept and summary.segments_resumed == kept


def test_an_mkv_output_is_the_same_bytes_every_run_and_after_a_resume(film, tmp_path):
    # Matroska writes random segment and track UIDs unless the muxer is told to be bit-exact
    cfg = RestoreConfig().replace("pipeline", segment_seconds=1)
    first, second, resumed = tmp_path / "first.mkv", tmp_path / "second.mkv", tmp_path / "r.mkv"
    segments.run(film, first, cfg, progress=None)
    segments.run(film, second, cfg, progress=None)
    with pytest.raises(Exception, match="interrupted"):
        segments.run(film, resumed, cfg, progress=StopAfter(25))
    assert segments.run(film, resumed, cfg).segments_resumed
    assert first.read_bytes() == second.read_bytes() == resumed.read_bytes()


def test_a_segmented_ffv1_film_is_written_with_every_timestamp(film, tmp_path):
    out = tmp_path / "out.mkv"
    cfg = LOSSLESS.replace("pipeline", segment_seconds=1)
    summary = segments.run(film, out, cfg, progress=None)
    assert summary.segments == 4 and summary.frames == 100
    with av.open(str(film)) as a, av.open(str(out)) as b:
        assert b.streams.video[0].codec_context.name == "ffv1"
        pts_in = sorted(float(f.pts * f.time_base) for f in a.decode(video=0))
        pts_out = sorted(float(f.pts * f.time_base) for f in b.decode(video=0))
    assert pts_out == pytest.approx(pts_in, abs=1e-3)  # Matroska keeps milliseconds


def test_segments_of_a_codec_quicktime_refuses_go_in_mp4():
    from gpenvideo import media

    assert media.segment_container("libx264") == ("mov", ".mov")
    assert media.segment_container("ffv1") == ("mp4", ".mp4")
    assert json.dumps(media.segment_container("prores_ks"))  # mov holds ProRes
