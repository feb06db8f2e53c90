"""Media edge cases a user meets first: odd-size and full-range captures, cut-off files,
ProRes sources, encoders that exist (NVENC) and the decoder's colour scale."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip
from test_io import identity, stored_planes

from gpenvideo.cli import main
from gpenvideo.config import DecodeConfig, EncodeConfig, RestoreConfig
from gpenvideo.media.decode import Decoder
from gpenvideo.media.encode import Encoder, probe_encoder


def test_odd_size_full_range_capture_keeps_every_pixel(tmp_path):
    # a capture card's MJPEG (yuvj420p, full range) AVI with PCM audio, odd size
    src = make_clip(tmp_path / "cap.avi", frames=3, size=(161, 97), codec="mjpeg",
                    pix_fmt="yuvj420p", audio=1, audio_codec="pcm_s16le")
    summary = identity(src, cfg=RestoreConfig().replace("encode", crf=0))  # lossless x264
    assert summary.encoder == "libx264"
    assert any("162x98" in n and "161x97" in n for n in summary.notes)
    with av.open(summary.output) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (162, 98)
        assert int(next(c.decode(v)).color_range) == 2  # still full range
    for a, b in zip(stored_planes(src), stored_planes(Path(summary.output)), strict=True):
        assert np.array_equal(a[0], b[0][:97, :161])  # luma exact, and the pad repeats the edge
        assert np.array_equal(b[0][:, 161], b[0][:, 160]) and np.array_equal(b[0][97], b[0][96])
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])  # 81x49 chroma


def test_full_range_source_is_bit_exact_with_ffv1(tmp_path):
    src = make_clip(tmp_path / "cap.avi", frames=3, size=(161, 97), codec="mjpeg",
                    pix_fmt="yuvj420p")
    summary = identity(src, cfg=RestoreConfig().replace("encode", codec="ffv1"))
    assert not any("repeated" in n for n in summary.notes)  # FFV1 keeps the odd size
    before, after = stored_planes(src), stored_planes(Path(summary.output))
    assert len(before) == len(after) == 3
    for a, b in zip(before, after, strict=True):
        assert all(np.array_equal(pa, pb) for pa, pb in zip(a, b, strict=True))


def faststart(src: Path, dst: Path) -> Path:
    """`src` remuxed with the index (moov) first, as web and camera MP4s are."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)
    return dst


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mpg"])
def test_a_cut_off_film_is_restored_as_far_as_it_goes_and_says_so(tmp_path, suffix):
    mpg = suffix == ".mpg"
    whole = make_clip(tmp_path / f"whole{suffix}", frames=150, size=(96, 64),
                      codec="mpeg2video" if mpg else "libx264", audio=0 if mpg else 1)
    if suffix == ".mp4":
        whole = faststart(whole, tmp_path / "fs.mp4")
    complete = identity(whole, tmp_path / "complete.mkv")
    assert not any("cut off" in n for n in complete.notes)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:int(len(data) * 0.3)])
    summary = identity(cut, tmp_path / "restored.mkv")
    assert 10 < summary.frames < 100
    assert Path(summary.output).exists()
    assert sum("cut off" in n for n in summary.notes) == 1, summary.notes


def test_prores_422_ten_bit_source_gets_a_codec_players_open(tmp_path):
    src = make_clip(tmp_path / "edit.mov", frames=3, size=(96, 64), codec="prores_ks",
                    pix_fmt="yuv422p10le")
    as_mov = identity(src)  # beside the source: .mov, ProRes 422 HQ like the source
    with av.open(as_mov.output) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt) == ("prores", "yuv422p10le")
    assert as_mov.encoder == "prores_ks" and any("ProRes" in n for n in as_mov.notes)
    as_mkv = identity(src, tmp_path / "o.mkv")  # elsewhere H.264 High 4:2:0 8-bit
    with av.open(as_mkv.output) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt, cc.profile) == ("h264", "yuv420p", "High")
    assert any("4:2:0 8-bit" in n for n in as_mkv.notes)


@pytest.mark.skipif(probe_encoder("h264_nvenc") is None, reason="NVENC works on this machine")
def test_nvenc_where_there_is_none_is_one_line_naming_what_to_use(tmp_path, capsys):
    src = make_clip(tmp_path / "a.mp4", frames=3, size=(64, 48))
    code = main(["restore", str(src), "--identity", "--codec", "h264_nvenc", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "h264_nvenc" in err[0] and "--codec libx264" in err[0]
    assert not (tmp_path / "a_restored.mp4").exists()
    # auto falls back to libx264, and the end-of-run line says so
    assert main(["restore", str(src), "--identity"]) == 0
    assert "encoded with libx264" in capsys.readouterr().out


def planes_clip(path: Path, y: np.ndarray, u: np.ndarray, v: np.ndarray,
                pix_fmt: str = "yuv420p") -> Path:
    """A one-frame FFV1 clip whose stored planes are exactly y, u, v (uint8)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = y.shape[1], y.shape[0], pix_fmt
        frame = av.VideoFrame(y.shape[1], y.shape[0], pix_fmt)
        for plane, data in zip(frame.planes, (y, u, v), strict=True):
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, -1)
            rows[:, :plane.width] = data
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_grey_levels_decode_to_the_exact_full_range_value(tmp_path):
    # limited-range Y decodes to (Y - 16) * 255 / 219 rounded: swscale's 16-bit RGB scale
    # (white at 255 * 256) must be undone exactly, else pictures come out up to 0.4 levels
    # dark (white 254)
    y = np.repeat(np.arange(16, 236, dtype=np.uint8)[None], 4, 0)  # 220 x 4, every level
    chroma = np.full((2, 110), 128, np.uint8)
    src = planes_clip(tmp_path / "g.mkv", y, chroma, chroma)
    with Decoder(src) as dec:
        image = next(dec.frames()).image
    exact = (y.astype(float) - 16) * 255 / 219
    for k in range(3):  # rounded to the nearest level (swscale's fixed point: within 0.01)
        assert np.abs(image[..., k] - exact).max() < 0.51
    assert image[:, -1].min() == 255 and image[:, 0].max() == 0


@pytest.mark.parametrize("rotation", [0, 90])
def test_pixels_changed_at_the_edge_of_an_odd_picture_are_padded_with_it(tmp_path, rotation):
    # a face pasted against the right and bottom edges of an odd-size 4:2:0 picture: the
    # repeated column and row follow what was pasted, the rest stays as decoded
    src = make_clip(tmp_path / "o.mkv", frames=2, size=(97, 65), codec="ffv1",
                    rotation=rotation)
    out = tmp_path / "x.mkv"
    with Decoder(src) as dec, Encoder(out, "matroska", dec.info,
                                      EncodeConfig(codec="libx264", crf=0, audio=False)) as enc:
        h, w = dec.info.height, dec.info.width
        for frame in dec.frames():
            mask = np.zeros((h, w), bool)
            mask[h // 2:, w // 2:] = True
            frame.paste(0, 0, np.full((h, w, 3), (30, 220, 60), np.uint8), mask)
            enc.write(frame)
    for a, b in zip(stored_planes(src), stored_planes(out), strict=True):
        y_in, y_out = a[0], b[0]
        assert y_out.shape == (66, 98)
        assert np.array_equal(y_out[:, 97], y_out[:, 96]) and np.array_equal(y_out[65], y_out[64])
        assert not np.array_equal(y_in, y_out[:65, :97])  # the paste arrived
        # away from the pasted corner (and its chroma block) the decoder's planes are kept
        untouched = np.ones((65, 97), bool)
        painted = np.zeros((h, w), bool)
        painted[h // 2 - 2:, w // 2 - 2:] = True
        untouched &= ~np.rot90(painted, (-rotation // 90) % 4)
        assert np.array_equal(y_in[untouched], y_out[:65, :97][untouched])


def test_subtitle_packets_are_copied_bit_for_bit_with_the_audio(tmp_path):
    src = make_clip(tmp_path / "talk.mkv", frames=75, size=(64, 48), audio=1, subtitles=True)
    summary = identity(src)

    def packets(path: Path, kind: str) -> list[tuple[int, bytes]]:
        with av.open(str(path)) as c:
            streams = [s for s in c.streams if s.type == kind]
            return [(p.pts, bytes(p)) for p in c.demux(*streams) if p.size]

    subs = packets(src, "subtitle")
    assert [text for _, text in subs] == [b"line 0", b"line 1", b"line 2"]
    assert packets(Path(summary.output), "subtitle") == subs
    assert packets(Path(summary.output), "audio") == packets(src, "audio")


def test_an_unsegmented_run_opens_the_source_once(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "film.mp4", frames=10, size=(64, 48), audio=1)
    opened: list[str] = []
    real_open = av.open

    def counting_open(file, *args, **kwargs):
        if str(file) == str(src):
            opened.append(kwargs.get("mode", args[0] if args else "r"))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    summary = identity(src)
    assert summary.frames == 10
    assert opened == ["r"]  # check, probe, decode and the audio copy share one demuxer


def dv_clip(path: Path, frames: int = 2) -> Path:
    """An NTSC DV AVI (720x480 yuv411p, 30000/1001 fps): a gradient with a moving bar."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("dvvideo", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 720, 480, "yuv411p"
        for i in range(frames):
            image = np.zeros((480, 720, 3), np.uint8)
            image[..., 0] = np.arange(720) % 256
            image[..., 1] = (np.arange(480) % 256)[:, None]
            image[100:200, 40 * i + 100:40 * i + 300, 2] = 220
            frame = av.VideoFrame.from_ndarray(image, "bgr24").reformat(format="yuv411p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_dv_411_source_keeps_its_chroma_bit_for_bit_with_ffv1(tmp_path):
    src = dv_clip(tmp_path / "dv.avi")
    # DV is interlaced: --deinterlace auto would (rightly) change every picture
    cfg = RestoreConfig().replace("decode", deinterlace="off").replace("encode", codec="ffv1")
    summary = identity(src, tmp_path / "dv.mkv", cfg=cfg)
    assert not any("chroma" in n or "interlaced" in n for n in summary.notes)
    with Decoder(tmp_path / "dv.mkv") as dec:
        assert dec.info.pix_fmt == "yuv411p"
    before, after = stored_planes(src), stored_planes(tmp_path / "dv.mkv")
    assert len(before) == len(after) == 2
    for a, b in zip(before, after, strict=True):
        assert all(np.array_equal(pa, pb) for pa, pb in zip(a, b, strict=True))


def test_dv_411_pixels_a_stage_changed_are_patched_into_the_kept_planes(tmp_path):
    src = dv_clip(tmp_path / "dv.avi", frames=1)
    x0, y0, x1, y1 = 203, 61, 250, 90  # x edges off the 4-pixel chroma grid on purpose

    def paint(path: Path) -> None:
        with Decoder(src, DecodeConfig(deinterlace="off")) as dec, \
                Encoder(path, "matroska", dec.info,
                                          EncodeConfig(codec="ffv1", audio=False)) as enc:
            for frame in dec.frames():
                mask = np.ones((y1 - y0, x1 - x0), bool)
                frame.paste(x0, y0, np.full((*mask.shape, 3), (40, 200, 90), np.uint8), mask)
                enc.write(frame)

    paint(tmp_path / "p.mkv")
    (a_y, a_u, a_v), = stored_planes(src)
    (b_y, b_u, b_v), = stored_planes(tmp_path / "p.mkv")
    assert a_u.shape == b_u.shape == (480, 180)  # 4:1:1 kept
    hit = np.zeros((480, 720), bool)
    hit[y0:y1, x0:x1] = True
    chroma_hit = hit.reshape(480, 180, 4).any(axis=2)
    assert not np.array_equal(a_y[hit], b_y[hit])
    assert np.array_equal(a_y[~hit], b_y[~hit])
    assert np.array_equal(a_u[~chroma_hit], b_u[~chroma_hit])
    assert np.array_equal(a_v[~chroma_hit], b_v[~chroma_hit])
    assert not np.array_equal(a_u[chroma_hit], b_u[chroma_hit])


def test_dv_411_source_written_as_h264_says_its_chroma_became_420(tmp_path):
    src = dv_clip(tmp_path / "dv.avi", frames=1)
    summary = identity(src, tmp_path / "dv.mp4", cfg=RestoreConfig().replace("encode",
                                                                             codec="libx264"))
    assert any("yuv411p" in n and "yuv420p" in n and "ffv1" in n for n in summary.notes)
    # DV is interlaced: deinterlaced by default, and the summary says so
    assert any("interlaced" in n and "--deinterlace off" in n for n in summary.notes)
    with Decoder(tmp_path / "dv.mp4") as dec:
        assert dec.info.pix_fmt == "yuv420p"


def video_timestamps(path: Path) -> list[float]:
    """Presentation times (seconds) of every decoded picture of the first video stream."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [float(f.pts * stream.time_base) for f in c.decode(stream)]


@pytest.mark.parametrize("codec,suffix", [("ffv1", ".mkv"), ("libsvtav1", ".mkv"),
                                          ("prores_ks", ".mov")])
def test_segments_of_codecs_quicktime_cannot_hold_join_into_the_film(tmp_path, codec, suffix):
    # FFV1 is not a QuickTime codec and the mov muxer lists AV1 but refuses it: their segments
    # are MP4; the joined film has every frame at the source's time
    src = make_clip(tmp_path / "s.mkv", frames=30, size=(64, 48), gop=10)
    cfg = RestoreConfig().replace("pipeline", segment_seconds=0.4).replace("encode", codec=codec)
    summary = identity(src, tmp_path / f"out{suffix}", cfg=cfg)
    assert summary.encoder == codec
    assert video_timestamps(Path(summary.output)) == video_timestamps(src)


@pytest.mark.parametrize("suffix,audio", [(".ts", 1), (".avi", 0)])
def test_an_old_container_gets_an_mkv_note_that_says_why_without_inventing_audio(
        tmp_path, suffix, audio):
    src = make_clip(tmp_path / f"c{suffix}", frames=3, size=(64, 48), audio=audio,
                    audio_codec="mp2" if audio else "aac")
    summary = identity(src, cfg=RestoreConfig().replace("encode", crf=0))
    assert Path(summary.output).suffix == ".mkv"
    note, = (n for n in summary.notes if "c_restored.mkv" in n)
    assert f"not {suffix}" in note and "MKV holds every stream" in note
    assert "audio" not in note and "cannot hold" not in note


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_still_image_is_refused_in_one_line(tmp_path, capsys, suffix):
    import cv2

    photo = tmp_path / f"photo{suffix}"
    cv2.imwrite(str(photo), np.full((48, 64, 3), 128, np.uint8))
    assert main(["restore", str(photo), "--identity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gpenvideo: error: {photo}: is a still image; gpenvideo restores videos"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [photo.name]
