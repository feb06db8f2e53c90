"""Decoder, encoder, audio copy, output safety and bad input, on clips made with PyAV."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip
from conftest import shared_file

from gpenvideo import engine, segments
from gpenvideo.cli import main
from gpenvideo.config import EncodeConfig, RestoreConfig
from gpenvideo.errors import OutputError
from gpenvideo.media.decode import Decoder
from gpenvideo.media.encode import Encoder


def video_pts(path: Path) -> tuple[list[int], Fraction, int | None]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return [f.pts for f in c.decode(v)], v.time_base, v.duration


def video_times(path: Path) -> list[Fraction]:
    """Presentation times in seconds (exact), for comparisons across containers."""
    pts, tb, _ = video_pts(path)
    return [p * tb for p in pts]


def packet_hashes(path: Path, kind: str = "audio") -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        for pk in c.demux(*streams):
            if pk.size:
                out.setdefault(pk.stream.index, []).append(
                    (pk.pts, hashlib.sha256(bytes(pk)).hexdigest()))
    return out


def identity(src: Path, dst: Path | None = None, **kw) -> engine.RunSummary:
    cfg = kw.pop("cfg", RestoreConfig())
    return segments.run(src, dst, cfg, **kw)


def test_vfr_round_trip_keeps_every_pts_duration_and_audio(tmp_path):
    src = make_clip(tmp_path / "vfr.mp4", frames=40, vfr=True, audio=2)
    summary = identity(src)
    out = tmp_path / "vfr_restored.mp4"
    assert Path(summary.output) == out and out.exists()
    pts_in, tb_in, dur_in = video_pts(src)
    pts_out, tb_out, dur_out = video_pts(out)
    assert len(pts_in) == 40
    assert len(set(np.diff(pts_in))) > 1, "the clip should be variable frame rate"
    assert pts_out == pts_in and tb_out == tb_in
    assert dur_out == dur_in
    a_in, a_out = packet_hashes(src), packet_hashes(out)
    assert len(a_in) == 2
    assert [a_out[k] for k in sorted(a_out)] == [a_in[k] for k in sorted(a_in)]


def test_mkv_round_trip_with_audio_and_language_tags(tmp_path):
    src = make_clip(tmp_path / "clip.mkv", frames=25, audio=2, metadata={"title": "Holiday 1994"})
    summary = identity(src)
    out = Path(summary.output)
    assert video_pts(out)[0] == video_pts(src)[0]
    assert list(packet_hashes(out).values()) == list(packet_hashes(src).values())
    with av.open(str(out)) as c:
        assert c.metadata.get("title") == "Holiday 1994"
        assert [s.metadata.get("language") for s in c.streams.audio] == ["eng", "fra"]


def test_no_audio_option(tmp_path):
    src = make_clip(tmp_path / "a.mp4", frames=10, audio=1)
    out = Path(identity(src, cfg=RestoreConfig().replace("encode", audio=False)).output)
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1


def test_rotation_is_applied_for_stages_and_written_back(tmp_path):
    src = make_clip(tmp_path / "phone.mp4", frames=8, size=(160, 96), rotation=90)
    with Decoder(src) as dec:
        assert dec.info.rotation == 90
        assert (dec.info.width, dec.info.height) == (96, 160)
        first = next(dec.frames())
        assert first.image.shape == (160, 96, 3)
    out = Path(identity(src).output)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (160, 96)
        frame = next(c.decode(v))
        assert frame.rotation == 90


def test_color_metadata_and_sample_aspect_ratio_are_kept(tmp_path):
    src = make_clip(tmp_path / "tape.mkv", frames=10, size=(180, 120), colorspace=1,
                    color_range=1, color_primaries=1, color_trc=1, sar=Fraction(8, 9))
    out = Path(identity(src).output)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        f = next(c.decode(v))
        assert (int(f.colorspace), int(f.color_range), int(f.color_primaries),
                int(f.color_trc)) == (1, 1, 1, 1)
        assert v.codec_context.sample_aspect_ratio == Fraction(8, 9)


def test_ten_bit_source_gives_ten_bit_output_and_uint16_frames(tmp_path):
    src = make_clip(tmp_path / "cam.mkv", frames=6, pix_fmt="yuv422p10le")
    with Decoder(src) as dec:
        assert dec.info.bit_depth == 10 and dec.info.chroma == "422"
        assert next(dec.frames()).image.dtype == np.uint16
    # asked for by name, libx264 keeps the depth and chroma (High 4:2:2 10-bit)
    cfg = RestoreConfig().replace("encode", codec="libx264")
    out = Path(identity(src, tmp_path / "x264.mkv", cfg=cfg).output)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv422p10le"


def test_odd_size_source(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", frames=5, size=(161, 97), pix_fmt="yuv444p")
    with Decoder(src) as dec:
        img = next(dec.frames()).image
        assert img.shape == (97, 161, 3)
    # libx264 by name keeps 4:4:4, which holds any size; auto's 4:2:0 needs even sizes
    for codec, size in (("libx264", (161, 97)), ("auto", (162, 98))):
        cfg = RestoreConfig().replace("encode", codec=codec)
        out = Path(identity(src, tmp_path / f"{codec}.mkv", cfg=cfg).output)
        with av.open(str(out)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.width, cc.height) == size
            assert len(list(c.decode(video=0))) == 5


def reencode(src: Path, dst: Path, edit) -> None:
    """Decode `src`, let edit(frame) change it, encode it losslessly (FFV1) to `dst`."""
    with Decoder(src) as dec, Encoder(dst, "matroska", dec.info,
                                      EncodeConfig(codec="ffv1", audio=False)) as enc:
        for frame in dec.frames():
            edit(frame)
            enc.write(frame)


def test_untouched_frames_leave_bit_for_bit(tmp_path):
    # no face in a film: every picture is written from the decoder's own planes
    src = make_clip(tmp_path / "p.mkv", frames=3, size=(64, 48))
    out = Path(identity(src, cfg=RestoreConfig().replace("encode", crf=0)).output)
    before, after = stored_planes(src), stored_planes(out)
    assert len(before) == len(after) == 3
    for a, b in zip(before, after, strict=True):
        assert all(np.array_equal(pa, pb) for pa, pb in zip(a, b, strict=True))


def stored_planes(path: Path) -> list[list[np.ndarray]]:
    """Every decoded picture of the first video stream as its planes (height, width), as stored."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            size = 2 if f.format.name.endswith("le") else 1
            out.append([np.frombuffer(p, f"<u{size}").reshape(p.height, -1)[:, :p.width].copy()
                         for p in f.planes])
    return out


@pytest.mark.parametrize("pix_fmt,rotation", [("yuv420p", 0), ("yuv420p", 90),
                                              ("yuv422p10le", 0)])
def test_changed_pixels_are_converted_and_the_rest_kept_exactly(tmp_path, pix_fmt, rotation):
    src = make_clip(tmp_path / "r.mkv", frames=4, size=(96, 64), rotation=rotation,
                    pix_fmt=pix_fmt)
    rect = (21, 13, 50, 40)  # x0, y0, x1, y1 in the upright picture (odd edges on purpose)
    painted = np.zeros((96, 64) if rotation else (64, 96), bool)
    painted[rect[1]:rect[3], rect[0]:rect[2]] = True
    painted[20:31, 27:38] = False  # a hole the stage leaves alone, inside its rectangle
    # the stage records the pixels it changed, over a rectangle that reaches past the picture
    region = (-9, rect[1], np.pad(painted[rect[1]:rect[3], :rect[2]], ((0, 0), (9, 0))))

    def edit(frame, whole=False):
        colour = (40, 200, 90) if frame.image.dtype == np.uint8 else (40 * 257, 200 * 257,
                                                                      90 * 257)
        x0, y0, mask = region
        frame.paste(x0, y0, np.full((*mask.shape, 3), colour, frame.image.dtype), mask)
        if whole:
            frame.replace_image(frame.image.copy())

    reencode(src, tmp_path / "patched.mkv", edit)
    reencode(src, tmp_path / "whole.mkv", lambda f: edit(f, whole=True))
    with Decoder(tmp_path / "patched.mkv") as dec:
        assert dec.info.rotation == rotation and dec.info.pix_fmt == pix_fmt
    stored = np.rot90(painted, (-rotation // 90) % 4)  # as the 64 x 96 planes lie
    for a, b, c in zip(stored_planes(src), stored_planes(tmp_path / "patched.mkv"),
                       stored_planes(tmp_path / "whole.mkv"), strict=True):
        assert not np.array_equal(a[0], b[0])
        for pa, pb, pc in zip(a, b, c, strict=True):
            # a plane sample is changed when any pixel it covers was painted
            fy, fx = 64 // pa.shape[0], 96 // pa.shape[1]
            hit = stored.reshape(pa.shape[0], fy, pa.shape[1], fx).any(axis=(1, 3))
            # elsewhere: the decoder's planes; there: what converting the whole picture gives
            assert np.array_equal(pa[~hit], pb[~hit])
            assert np.array_equal(pb[hit], pc[hit])


def test_a_ten_bit_422_tape_picture_converts_the_same_every_time(tmp_path):
    # swscale's slice threads raced on RGB -> 4:2:2 10-bit at 720x480 (chroma changed from
    # one run to the next); the conversions run on one thread
    rng = np.random.default_rng(0)
    picture = (rng.integers(0, 1024, (480, 720, 3)) * 64).astype(np.uint16)
    src = make_clip(tmp_path / "tape.mkv", frames=1, size=(720, 480), pix_fmt="yuv422p10le")

    def edit(frame):
        frame.replace_image(picture.copy())

    outputs = []
    for k in range(4):
        reencode(src, tmp_path / f"o{k}.mkv", edit)
        outputs.append(stored_planes(tmp_path / f"o{k}.mkv")[0])
    for other in outputs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(outputs[0], other, strict=True))


def test_whole_pictures_convert_back_within_a_fraction_of_a_level(tmp_path):
    # frames with no decoder picture behind them (--upscale) are converted whole; the
    # BGR -> YUV step is accurate enough that a round trip barely moves luma
    src = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    out = tmp_path / "k.mkv"
    with Decoder(src) as dec, Encoder(out, "matroska", dec.info,
                                      EncodeConfig(crf=0, audio=False)) as enc:
        for frame in dec.frames():
            if frame.index == 5:
                break
            frame.source = None
            enc.write(frame)
    before, after = stored_planes(src)[:5], stored_planes(out)
    assert len(after) == 5
    for (ya, ua, va), (yb, ub, vb) in zip(before, after, strict=True):
        assert np.abs(ya.astype(int) - yb).mean() < 0.05  # swscale's 8-bit paths: about 1.7
        # chroma, resampled to full resolution and back
        assert np.abs(np.stack([ua, va]).astype(int) - np.stack([ub, vb])).mean() < 0.5


def test_interlaced_source_is_deinterlaced_in_auto_mode(tmp_path):
    src = make_clip(tmp_path / "dv.mkv", frames=12, size=(176, 144), interlaced=True)
    with Decoder(src) as dec:
        assert dec.info.interlaced and dec.info.deinterlaced
        frames = list(dec.frames())
    pts_in, _, _ = video_pts(src)
    assert [f.pts for f in frames] == pts_in
    cfg = RestoreConfig().replace("decode", deinterlace="off")
    with Decoder(src, cfg.decode) as dec:
        assert dec.info.interlaced and not dec.info.deinterlaced
    out = Path(identity(src).output)
    assert video_pts(out)[0] == pts_in


def test_progressive_source_is_not_deinterlaced_in_auto_mode(tmp_path):
    src = make_clip(tmp_path / "p.mp4", frames=4)
    with Decoder(src) as dec:
        assert not dec.info.interlaced and not dec.info.deinterlaced


def test_old_container_gets_mkv_output_with_a_note(tmp_path):
    src = make_clip(tmp_path / "tape.avi", frames=10, codec="mpeg4", audio=1,
                    audio_codec="pcm_s16le")
    summary = identity(src)
    assert summary.output.endswith("tape_restored.mkv")
    assert any("MKV" in n for n in summary.notes)
    def payloads(path):  # the containers' time bases differ: compare the bytes alone
        return [[h for _, h in v] for v in packet_hashes(path).values()]

    assert payloads(Path(summary.output)) == payloads(src)


def dv_clip(path: Path, frames: int = 8) -> Path:
    """An NTSC DV file (720x480 4:1:1, 29.97 fps, PCM audio, a timecode tag) as camcorders
    and capture cards write it."""
    with av.open(str(path), "w", format="dv") as out:
        video = out.add_stream("dvvideo", rate=Fraction(30000, 1001))
        video.width, video.height, video.pix_fmt = 720, 480, "yuv411p"
        audio = out.add_stream("pcm_s16le", rate=48000, layout="stereo")
        for i in range(frames):
            picture = np.full((480, 720, 3), 40 + 20 * i, np.uint8)
            vf = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv411p")
            vf.pts = i
            out.mux(video.encode(vf))
            af = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 1602), np.int16), format="s16",
                                            layout="stereo")
            af.sample_rate, af.pts = 48000, i * 1602
            out.mux(audio.encode(af))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_dv_keeps_its_frame_rate_and_writes_to_mov(tmp_path, suffix):
    # FFmpeg's DV demuxer says 60000 fps (time base 1/60000): given to the encoder, the MOV
    # muxer's timecode track refused it ("fps 60000 is too large") when the file was closed
    src = dv_clip(tmp_path / "camcorder.dv")
    with Decoder(src) as dec:
        assert dec.info.frame_rate == Fraction(30000, 1001)
    summary = identity(src, tmp_path / f"out{suffix}")
    assert summary.frames == 8
    assert video_times(Path(summary.output)) == pytest.approx(video_times(src), abs=5e-4)
    with av.open(summary.output) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
        assert [s.codec_context.name for s in c.streams.audio] == ["pcm_s16le"]


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_pcm_audio_copied_into_mp4_is_noted(tmp_path, suffix):
    # Matroska stores no channel layout for PCM ("2 channels"): MP4's channel box refused it
    src = make_clip(tmp_path / "pcm.mkv", frames=10, audio=1, audio_codec="pcm_s16le")
    summary = identity(src, tmp_path / f"out{suffix}")

    def samples(path: Path) -> bytes:
        with av.open(str(path)) as c:
            return b"".join(bytes(p) for p in c.demux(c.streams.audio[0]) if p.size)

    with av.open(summary.output) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["pcm_s16le"]  # copied
    assert samples(Path(summary.output)) == samples(src)
    noted = [n for n in summary.notes if "copied into MP4 as PCM" in n]
    assert len(noted) == (suffix == ".mp4")
    assert all("write to .mov or .mkv" in n for n in noted)


def test_audio_the_container_cannot_hold_is_transcoded_to_aac(tmp_path):
    src = make_clip(tmp_path / "pcm.mkv", frames=10, audio=1, audio_codec="pcm_u8")
    summary = identity(src, tmp_path / "out.mp4")
    with av.open(summary.output) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
    assert any("transcoded to AAC" in n for n in summary.notes)


@pytest.mark.parametrize("codec", ["libx265", "ffv1", "prores_ks", "libsvtav1"])
def test_other_codecs(tmp_path, codec):
    src = make_clip(tmp_path / "c.mkv", frames=6, size=(128, 96))
    cfg = RestoreConfig().replace("encode", codec=codec)
    out = tmp_path / ("o.mov" if codec == "prores_ks" else "o.mkv")
    summary = identity(src, out, cfg=cfg)
    assert video_times(Path(summary.output)) == video_times(src)


def test_existing_output_is_refused_without_overwrite(tmp_path):
    src = make_clip(tmp_path / "a.mp4", frames=4)
    out = tmp_path / "a_restored.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        identity(src)
    assert out.read_bytes() == b"keep me"
    identity(src, overwrite=True)
    assert out.stat().st_size > 100


def test_input_is_never_overwritten(tmp_path):
    src = make_clip(tmp_path / "a.mp4", frames=4)
    data = src.read_bytes()
    with pytest.raises(OutputError, match="input"):
        identity(src, src, overwrite=True)
    assert src.read_bytes() == data


class Boom(RuntimeError):
    pass


class FailingStage:
    name = "failing"
    context = 0

    def __init__(self, at: int) -> None:
        self.at = at

    def process(self, frame):
        if frame.index == self.at:
            raise Boom("stage failed")
        return (frame,)

    def flush(self):
        return ()


def test_an_exception_in_a_stage_leaves_no_output(tmp_path):
    src = make_clip(tmp_path / "a.mp4", frames=60, audio=1)
    with pytest.raises(Boom):
        identity(src, recipe=segments.Recipe(build=lambda info: [FailingStage(30)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_corrupt_packets_in_the_middle_are_skipped_and_counted(tmp_path):
    src = make_clip(tmp_path / "a.mkv", frames=50, size=(128, 96))
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 2
    for i in rng.integers(start, start + 2000, 300):
        data[i] = rng.integers(0, 256)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    summary = identity(bad)
    assert summary.frames > 10
    assert summary.corrupt_packets > 0
    assert f"{summary.corrupt_packets} damaged video packets were skipped" in summary.notes
    assert Path(summary.output).exists()


BAD_INPUTS = {
    "missing": None,
    "folder": "dir",
    "empty.mp4": b"",
    "text.mp4": b"this is not a video, just some text\n" * 20,
    "random.mkv": bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
}


@pytest.mark.parametrize("name", [*BAD_INPUTS, "truncated.mp4", "audio_only.m4a"])
def test_bad_input_gets_one_line_exit_2_and_no_output(tmp_path, name, capsys):
    path = tmp_path / name
    content = BAD_INPUTS.get(name)
    if name == "folder":
        path.mkdir()
    elif name == "truncated.mp4":
        whole = make_clip(tmp_path / "whole.mp4", frames=30).read_bytes()
        (tmp_path / "whole.mp4").unlink()
        path.write_bytes(whole[:600])  # the header and a few packets, cut off
    elif name == "audio_only.m4a":
        with av.open(str(path), "w", format="mp4") as out:
            a = out.add_stream("aac", rate=16000)
            for packet in a.encode(None):
                out.mux(packet)
    elif content is not None:
        path.write_bytes(content)
    before = set(tmp_path.iterdir())
    code = main(["restore", str(path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("gpenvideo: error:")
    assert str(path) in err[0]
    assert set(tmp_path.iterdir()) == before


def test_unknown_option_value_exits_2(tmp_path, capsys):
    src = make_clip(tmp_path / "a.mp4", frames=2)
    assert main(["restore", str(src), "--codec", "divx"]) == 2  # any name for --encoder ffmpeg
    assert "divx" in capsys.readouterr().err


def test_cli_identity_end_to_end(tmp_path):
    src = make_clip(tmp_path / "a.mp4", frames=10, audio=1)
    result = subprocess.run([sys.executable, "-m", "gpenvideo", "restore", str(src),
                             "--identity", "-o", str(tmp_path / "out.mkv")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    # MP4 -> MKV: Matroska cannot store the AAC priming's negative timestamps, so the muxer
    # shifts every stream by the same amount; the spacing of all frames stays exact.
    t_in, t_out = video_times(src), video_times(tmp_path / "out.mkv")
    assert [t - t_in[0] for t in t_in] == [t - t_out[0] for t in t_out]


def _peak_rss_kb(src: Path, tmp: Path) -> int:
    code = (
        "import resource, sys\n"
        "from gpenvideo import segments\n"
        "from gpenvideo.config import RestoreConfig\n"
        f"segments.run({str(src)!r}, {str(tmp)!r}, RestoreConfig(), overwrite=True)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.strip())


@pytest.mark.slow
def test_memory_does_not_grow_with_film_length(tmp_path):
    # 250 against 1500 frames: small frames (a held frame or packet would still add up to far
    # more than the margin over the 1250 extra frames), the same lengths as ever
    short = make_clip(tmp_path / "s.mp4", seconds=10, size=(160, 120), audio=1)
    long = make_clip(tmp_path / "l.mp4", seconds=60, size=(160, 120), audio=1)
    rss_short = _peak_rss_kb(short, tmp_path / "so.mkv")
    rss_long = _peak_rss_kb(long, tmp_path / "lo.mkv")
    assert rss_long - rss_short < 8 * 1024, (rss_short, rss_long)


def late_start_clip(path: Path, frames: int = 30) -> Path:
    """A QuickTime clip (time base 1/90000, as MPEG-PS/TS have) whose first frame is not at a
    whole millisecond (an edit list counted in the track's own timescale)."""
    with av.open(str(path), "w", options={"movie_timescale": "90000"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        stream.time_base = stream.codec_context.time_base = Fraction(1, 90000)
        for i in range(frames):
            img = np.full((48, 64, 3), (i * 8) % 256, np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            vf.pts = 48003 + i * 3600
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("suffix", [".mov", ".mp4"])
@pytest.mark.parametrize("segment_seconds", [0.0, 0.4])
def test_mp4_and_mov_keep_a_late_first_frame_exactly(tmp_path, suffix, segment_seconds):
    # the edit list delaying the first frame counted in 1/1000 s: 48003/90000 came out 47970
    src = late_start_clip(tmp_path / "tape.mov")
    times = video_times(src)
    assert times[0] * 1000 != int(times[0] * 1000)  # not at a whole millisecond
    cfg = RestoreConfig().replace("pipeline", segment_seconds=segment_seconds)
    summary = identity(src, tmp_path / f"out{suffix}", cfg=cfg)
    assert summary.segments == (1 if not segment_seconds else 3)
    assert video_times(Path(summary.output)) == times  # every frame at its instant, exactly


def test_segments_of_an_mpeg_ts_film_keep_every_frame(tmp_path):
    # MPEG-TS seeks by byte position and landed past the keyframe asked for (a camcorder's
    # .MTS): a segment came out empty and the run stopped; frames could have been skipped
    src = make_clip(tmp_path / "camcorder.ts", frames=40, size=(64, 48), gop=10)
    cfg = RestoreConfig().replace("pipeline", segment_seconds=0.4)
    summary = identity(src, tmp_path / "out.mkv", cfg=cfg)
    assert summary.segments >= 3 and summary.frames == 40
    assert video_times(Path(summary.output)) == pytest.approx(video_times(src), abs=5e-4)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_pixel_aspect_an_mkv_cannot_mark_for_ffv1_is_said(tmp_path, suffix):
    # Matroska marks it in a stream header PyAV cannot set; FFV1 does not carry it itself
    src = make_clip(tmp_path / "tape.mp4", frames=5, size=(64, 48), sar=Fraction(8, 9))
    cfg = RestoreConfig().replace("encode", codec="ffv1")
    summary = identity(src, tmp_path / f"out{suffix}", cfg=cfg)
    with av.open(summary.output) as c:
        kept = c.streams.video[0].sample_aspect_ratio == Fraction(8, 9)
    said = any("pixel aspect ratio 8/9" in n for n in summary.notes)
    assert (kept, said) == ((False, True) if suffix == ".mkv" else (True, False))
