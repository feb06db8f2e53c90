"""--encoder ffmpeg: frames piped to a system ffmpeg keep the PyAV path's timing and audio copy.

Needs an `ffmpeg` program and ffmpeg-python (skipped with the reason when either is missing),
except the test of what happens without the program.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip
from test_io import packet_hashes, stored_planes, video_pts

from gpenvideo import segments
from gpenvideo.cli import main
from gpenvideo.config import EncodeConfig, RestoreConfig
from gpenvideo.media import Decoder, Encoder, FfmpegEncoder

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None,
    reason="no ffmpeg program on PATH (Debian/Ubuntu: apt-get install ffmpeg)")


@pytest.fixture(scope="module", autouse=True)
def ffmpeg_python():
    pytest.importorskip("ffmpeg", reason="ffmpeg-python is not installed "
                                         "(pip install 'gpenvideo[ffmpeg]')")


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    """A variable frame rate clip with B-frames and two audio streams (16 and 22.05 kHz)."""
    return make_clip(tmp_path_factory.mktemp("ffmpeg") / "vfr.mp4", frames=30, size=(96, 64),
                     vfr=True, audio=2)


def stream_facts(path: Path) -> dict:
    """What the output must keep of the source's description: rotation, aspect, colour tags,
    the audio streams and their languages."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        first = next(c.decode(v))
        cc = v.codec_context
        return {"rotation": first.rotation, "sar": cc.sample_aspect_ratio,
                "colorspace": cc.colorspace, "range": cc.color_range,
                "primaries": cc.color_primaries, "trc": cc.color_trc,
                "audio": [(s.codec_context.name, s.metadata.get("language"))
                          for s in c.streams.audio]}


@needs_ffmpeg
def test_ffmpeg_path_keeps_timestamps_time_base_durations_and_audio_packets(vfr, tmp_path):
    pyav = Path(segments.run(vfr, tmp_path / "pyav.mp4", RestoreConfig()).output)
    out = tmp_path / "ffmpeg.mp4"
    assert main(["restore", str(vfr), "-o", str(out), "--identity", "--encoder", "ffmpeg",
                 "--codec", "libx264", "--crf", "20", "--quiet"]) == 0
    pts_src, tb_src, dur_src = video_pts(vfr)
    pts_a, tb_a, dur_a = video_pts(pyav)
    pts_b, tb_b, dur_b = video_pts(out)
    assert len(pts_src) == 30 and len({pts_src[i + 1] - pts_src[i] for i in range(29)}) > 1
    assert (pts_b, tb_b, dur_b) == (pts_a, tb_a, dur_a) == (pts_src, tb_src, dur_src)
    a_pyav, a_ffmpeg = packet_hashes(pyav), packet_hashes(out)
    assert len(a_ffmpeg) == 2
    assert [a_ffmpeg[k] for k in sorted(a_ffmpeg)] == [a_pyav[k] for k in sorted(a_pyav)]
    assert [a_ffmpeg[k] for k in sorted(a_ffmpeg)] == [packet_hashes(vfr)[k]
                                                       for k in sorted(a_ffmpeg)]
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name or ".video." in p.name]


@needs_ffmpeg
def test_ffmpeg_path_keeps_tags_rotation_and_segments_like_the_pyav_path(tmp_path):
    src = make_clip(tmp_path / "tape.mkv", frames=40, size=(80, 48), fps=10, audio=1,
                    rotation=90, colorspace=1, color_range=1, color_primaries=1, color_trc=1,
                    sar=Fraction(4, 3), gop=10)
    cfg = RestoreConfig().replace("pipeline", segment_seconds=1.0)  # 4 s: segments, resumable
    pyav = Path(segments.run(src, tmp_path / "a.mkv", cfg).output)
    summary = segments.run(src, tmp_path / "b.mkv", cfg.replace("encode", encoder="ffmpeg"))
    assert summary.segments > 1
    out = Path(summary.output)
    assert stream_facts(out) == stream_facts(pyav)
    assert video_pts(out) == video_pts(pyav)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    again = segments.run(src, tmp_path / "c.mkv", cfg.replace("encode", encoder="ffmpeg"))
    assert Path(again.output).read_bytes() == out.read_bytes()  # no random Matroska UIDs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv", "b.mkv", "c.mkv", "tape.mkv"]


@needs_ffmpeg
def test_unknown_codec_is_one_line_exit_2_and_no_output(vfr, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["restore", str(vfr), "-o", str(out), "--identity", "--encoder", "ffmpeg",
                 "--codec", "h264_nosuch", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h264_nosuch" in err[0] and "ffmpeg -encoders" in err[0]
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_ffmpeg_failing_is_its_last_line_naming_the_users_file(vfr, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["restore", str(vfr), "-o", str(out), "--identity", "--encoder", "ffmpeg",
                 "--ffmpeg-args", "-pix_fmt nosuch", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gpenvideo: error: x.mp4: ffmpeg failed to encode with libx264 (")
    assert "partial" not in err[0]
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_program_names_what_to_install(vfr, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "x.mp4"
    assert main(["restore", str(vfr), "-o", str(out), "--identity", "--encoder", "ffmpeg",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install ffmpeg" in err[0], err
    assert not out.exists()


@needs_ffmpeg
@pytest.mark.parametrize("pix_fmt,rotation", [("yuv420p", 90), ("yuv422p10le", 0)])
def test_ffmpeg_gets_the_pyav_paths_pictures_bit_for_bit(tmp_path, pix_fmt, rotation):
    # lossless FFV1 both ways: the decoded planes show exactly what each encoder was given
    src = make_clip(tmp_path / "r.mkv", frames=4, size=(96, 64), rotation=rotation,
                    pix_fmt=pix_fmt)

    def paint(frame):  # a stage's patch, recorded, in the upright picture
        mask = np.ones((17, 23), bool)
        level = 200 if frame.image.dtype == np.uint8 else 200 * 257
        frame.paste(21, 11, np.full((17, 23, 3), level, frame.image.dtype), mask)

    outputs = {}
    for kind in ("pyav", "ffmpeg"):
        outputs[kind] = tmp_path / f"{kind}.mkv"
        cfg = EncodeConfig(codec="ffv1", audio=False, encoder=kind)
        writer = Encoder if kind == "pyav" else FfmpegEncoder
        with Decoder(src) as dec, writer(outputs[kind], "matroska", dec.info, cfg) as enc:
            for frame in dec.frames():
                paint(frame)
                enc.write(frame)
    pyav, ffmpeg = stored_planes(outputs["pyav"]), stored_planes(outputs["ffmpeg"])
    assert len(pyav) == len(ffmpeg) == 4
    assert not np.array_equal(pyav[0][0], stored_planes(src)[0][0])  # the patch is there
    for a, b in zip(pyav, ffmpeg, strict=True):
        assert all(np.array_equal(pa, pb) for pa, pb in zip(a, b, strict=True))
    assert video_pts(outputs["ffmpeg"]) == video_pts(outputs["pyav"])


@needs_ffmpeg
def test_odd_sizes_are_padded_for_the_codec_as_the_pyav_path_pads_them(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", frames=3, size=(95, 63), codec="ffv1")
    sizes, notes = [], []
    for kind in ("pyav", "ffmpeg"):
        cfg = RestoreConfig().replace("encode", codec="libx264", encoder=kind)
        summary = segments.run(src, tmp_path / f"{kind}.mkv", cfg)
        with av.open(summary.output) as c:
            sizes.append((c.streams.video[0].width, c.streams.video[0].height))
        notes.append([n for n in summary.notes if "95x63" in n])
    assert sizes == [(96, 64), (96, 64)]
    assert notes[0] and notes[1] == notes[0]


# A run that kills itself with SIGKILL (as kill -9 would) once ffmpeg has started writing its
# video file beside the temporary output (ffmpeg opens it after probing ~5 s of its input),
# in a segmented run once the first segment is finished: argv source, output, segment seconds.
KILLED_RUN = """
import os, signal, sys, time
from pathlib import Path
from gpenvideo import segments
from gpenvideo.config import RestoreConfig

class KillOnceFfmpegWrites:
    name, context = "kill", 0
    def __init__(self, folder, segmented):
        self.folder, self.segmented = folder, segmented
    def armed(self):
        return not self.segmented or any(self.folder.rglob("seg-00000.json"))
    def writing(self):
        return self.armed() and any(p.name.endswith(".video.mov")
                                    for p in self.folder.rglob(".*"))
    def process(self, frame):
        if self.writing():
            os.kill(os.getpid(), signal.SIGKILL)
        return (frame,)
    def flush(self):
        if not self.armed():
            return ()
        deadline = time.monotonic() + 60
        while not self.writing():
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

source, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = RestoreConfig().replace("encode", encoder="ffmpeg").replace(
    "pipeline", segment_seconds=float(sys.argv[3]))
segmented = cfg.pipeline.segment_seconds > 0
# frames pass through untouched: an identity run's settings digest (the next run resumes it)
recipe = segments.Recipe(build=lambda info: [KillOnceFfmpegWrites(out.parent, segmented)],
                         mode="identity")
segments.run(source, out, cfg, recipe)
"""


@needs_ffmpeg
@pytest.mark.parametrize("segment_seconds", [0.0, 6.0])
def test_the_video_file_of_a_run_killed_with_kill_9_is_removed_by_the_next(tmp_path,
                                                                          segment_seconds):
    src = make_clip(tmp_path / "film.mp4", frames=375, size=(64, 48), gop=25)  # 15 s
    out = tmp_path / "out.mp4"
    child = subprocess.run([sys.executable, "-c", KILLED_RUN, str(src), str(out),
                            str(segment_seconds)], timeout=120, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = [p.name for p in tmp_path.rglob(".*") if p.name.endswith(".video.mov")]
    assert len(left) == 1  # ffmpeg's video file beside the (segment's) temporary output

    cfg = RestoreConfig().replace("encode", encoder="ffmpeg").replace(
        "pipeline", segment_seconds=segment_seconds)
    summary = segments.run(src, out, cfg)  # the next run, identity (the library's: no lock)
    assert summary.frames == 375
    assert summary.segments_resumed == (1 if segment_seconds else 0)  # resumed, not redone
    assert [p.name for p in tmp_path.rglob(".*")] == []  # nothing of either run is left
