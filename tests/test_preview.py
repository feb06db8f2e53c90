"""`gpenvideo preview`: moments, windows decoded, the contact sheet's layout, the clip."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest
from clips import TWO_FACE_SOURCES, make_clip, two_face_clip
from conftest import SHARED, shared_file, tiny_gpen

from gpenvideo import preview as pv
from gpenvideo.api import track_video, tracking_context
from gpenvideo.cli import main
from gpenvideo.compositor import Compositor
from gpenvideo.config import CompositeConfig, DetectConfig, RestoreConfig
from gpenvideo.detector import DetectStage, YuNetDetector
from gpenvideo.errors import InputError, OutputError
from gpenvideo.quality import QualityStage, SelectStage, TrackLedger, chooser
from gpenvideo.restorer import RestoreStage
from gpenvideo.segments import Recipe
from gpenvideo.tracker import Tracker

CONTEXT = tracking_context(RestoreConfig())


class NoFaces:
    batch_size = 1

    def detect(self, images):
        return [[] for _ in images]


def stages(detector, size=64, cfg: RestoreConfig | None = None):
    """A Recipe like api.restore_recipe's (the faces chosen by cfg.select), with an inverting
    restorer (fast)."""
    select = (cfg or RestoreConfig()).select

    def factory(info):
        ledger = TrackLedger(chooser(select.faces, select.skip_faces))
        return [DetectStage(detector), Tracker(), SelectStage(ledger),
                RestoreStage(lambda c: 255 - np.asarray(c), size, 8), QualityStage(ledger),
                Compositor(CompositeConfig(color_match=False), size, 1.0)]
    return Recipe(build=factory)


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                         DetectConfig())


@pytest.fixture(scope="module")
def sheet(tmp_path_factory, yunet):
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    out = tmp_path_factory.mktemp("sheet") / "sheet.png"
    result = pv.preview(clip, out, count=2, strengths=[0.5, 1.0], stages=stages(yunet))
    return result, cv2.imread(str(out))


def test_the_sheet_has_a_row_per_moment_and_a_column_per_strength(sheet):
    result, image = sheet
    assert len(result.moments) == 2 and result.strengths == [0.5, 1.0]
    assert all(len(m.faces) == 1 and len(m.after) == 2 for m in result.moments)
    layout = pv.sheet_layout((512, 512), 2, [1, 1])
    assert image.shape == (layout.height, layout.width, 3)
    assert layout.thumb_w == pv.THUMB_H  # a square film gives square thumbnails
    # frame: before, after 0.5, after 1; the face: before, after 0.5, after 1
    assert len(layout.frame_x) == 3 and len(layout.face_x(0)) == 3
    assert layout.width == layout.face_x(0)[-1] + pv.THUMB_H + pv.GAP
    for row in range(2):
        y = layout.row_y(row)
        frames = [image[y:y + pv.THUMB_H, x:x + layout.thumb_w] for x in layout.frame_x]
        faces = [image[y:y + pv.THUMB_H, x:x + pv.THUMB_H] for x in layout.face_x(0)]
        for picture in frames + faces:
            assert picture.std() > 10  # a picture, not the background
        before, half, full = (f.astype(int) for f in faces)
        # the restorer inverts the face: half strength lies between before and full
        assert np.abs(full - before).mean() > np.abs(half - before).mean() > 5
    # the moments are spread over the film, each at a decoded frame's time
    assert 0 < result.moments[0].seconds < 4 < result.moments[1].seconds < 8


def test_a_preview_decodes_its_windows_only(sheet):
    result, _ = sheet
    keyframe_interval = 12  # frames between keyframes in the shared clips
    assert result.windows == 2
    assert result.decoded <= result.windows * (2 * CONTEXT + 1 + keyframe_interval)
    assert result.decoded < 200 * 0.6  # the film has 200 frames


def test_moments_without_faces_are_probed_within_their_slot_and_noted(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", seconds=40, size=(96, 64), gop=25)
    result = pv.preview(clip, tmp_path / "s.png", count=2, stages=stages(NoFaces()))
    assert result.windows == 2 * pv.PROBES and len(result.moments) == 2
    assert all("no face" in n for n in result.notes) and len(result.notes) == 2
    assert result.decoded <= result.windows * (2 * CONTEXT + 1 + 25)
    assert result.decoded < 1000 / 2
    assert result.estimate > 0


def test_at_gives_exact_moments(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", seconds=8, size=(96, 64), gop=25)
    result = pv.preview(clip, tmp_path / "s.png", at=[2.0, 5.52], stages=stages(NoFaces()))
    assert [m.seconds for m in result.moments] == [2.0, 5.52]
    assert result.decoded <= 2 * (2 * CONTEXT + 1 + 25)
    with pytest.raises(InputError, match="past the end"):
        pv.preview(clip, tmp_path / "t.png", at=[9.0], stages=stages(NoFaces()))


def test_parse_times_and_strengths():
    assert pv.parse_times("0:12,1:40.5, 95,1:00:01") == [12.0, 100.5, 95.0, 3601.0]
    assert pv.parse_strengths("0.5,0.8,1") == [0.5, 0.8, 1.0]
    for bad in ("x", "1:2:3:4", "-1"):
        with pytest.raises(InputError):
            pv.parse_times(bad)
    with pytest.raises(InputError):
        pv.parse_strengths("0.5,2")


def test_an_existing_sheet_is_not_replaced_without_overwrite(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=10, size=(96, 64))
    (tmp_path / "c_preview.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        pv.preview(clip, None, count=1, stages=stages(NoFaces()))
    with pytest.raises(OutputError, match="PNG"):
        pv.preview(clip, tmp_path / "s.jpg", count=1, stages=stages(NoFaces()))


def test_faces_get_the_whole_film_ids_of_a_track_file(sheet, tmp_path):
    result, _ = sheet
    moment = result.moments[0]
    box = moment.faces[0].box
    doc = {"width": 512, "height": 512, "frames": [
        {"pts": moment.seconds + 0.01, "faces": [{"track": 7, "box": [float(v) for v in box]},
                                                  {"track": 9, "box": [0, 0, 5, 5]}]}]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    info = type("Info", (), {"width": 512, "height": 512, "frame_rate": 25, "path": "x"})
    index = pv.load_track_index(path, info)
    assert [f.track_id for f in index.relabel(moment.faces, moment.seconds)] == [7]
    assert index.ids == [7, 9]
    doc["width"] = 640
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="gpenvideo track"):
        pv.load_track_index(path, info)


TWO_FACE_FRAMES = 16


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """A 320 x 160 clip of two real faces side by side, and a `gpenvideo track` file of it
    whose ids are moved up by 4 (as if a longer film had four faces before): (clip, tracks
    file, left face's id, right face's id)."""
    folder = tmp_path_factory.mktemp("two")
    clip = two_face_clip(folder / "two.mp4", [shared_file("media", n) for n in TWO_FACE_SOURCES],
                         TWO_FACE_FRAMES)
    doc = track_video(clip, weights_dir=str(SHARED / "weights"))
    for frame in doc["frames"]:
        for face in frame["faces"]:
            face["track"] += 4
    tracks = folder / "tracks.json"
    tracks.write_text(json.dumps(doc))
    faces = sorted(doc["frames"][TWO_FACE_FRAMES // 2]["faces"], key=lambda f: f["box"][0])
    return clip, tracks, faces[0]["track"], faces[1]["track"]


@pytest.mark.parametrize("choice", ["faces", "skip_faces"])
def test_faces_and_skip_faces_choose_by_the_whole_film_ids(two_faces, yunet, tmp_path, choice):
    clip, tracks, left, right = two_faces
    assert {left, right} == {5, 6}  # not the ids the preview's own tracker gives (1, 2)
    # --faces LEFT,3 restores the left face only; --skip-faces LEFT,3 the right one only
    cfg = RestoreConfig().replace("select", **{choice: (left, 3)})
    result = pv.preview(clip, tmp_path / "s.png", cfg, at=[0.32], stages=stages(yunet, cfg=cfg),
                        tracks=tracks)
    moment = result.moments[0]
    assert sorted(f.track_id for f in moment.faces) == [5, 6]
    assert moment.restored_ids == ({left} if choice == "faces" else {right})
    # (the restored face's soft mask reaches over the middle line: a margin of 24 px)
    restored_side = slice(0, 136) if choice == "faces" else slice(184, 320)
    alone_side = slice(184, 320) if choice == "faces" else slice(0, 136)
    before, after = moment.before.astype(int), moment.after[0].astype(int)
    assert np.array_equal(before[:, alone_side], after[:, alone_side])
    assert np.abs(before[:, restored_side] - after[:, restored_side]).mean() > 5
    assert "track 3 was not found; the film has tracks 5-6 (see gpenvideo track)" in result.notes


def test_faces_without_a_track_file_are_refused(two_faces, tmp_path, capsys):
    clip = two_faces[0]
    cfg = RestoreConfig().replace("select", faces=(1,))
    with pytest.raises(InputError, match="--tracks"):
        pv.preview(clip, tmp_path / "s.png", cfg, count=1, stages=stages(NoFaces(), cfg=cfg))
    assert main(["preview", str(clip), "-o", str(tmp_path / "s.png"), "--skip-faces", "2"]) == 2
    err = capsys.readouterr().err
    assert "whole-film track ids" in err and "--tracks" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.png").exists()


def test_cli_preview_with_a_small_gpen_writes_the_sheet_and_a_side_by_side_clip(tmp_path,
                                                                                capsys):
    ckpt = tiny_gpen(tmp_path)
    clip = shared_file("media", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")
    out = tmp_path / "p.png"
    code = main(["preview", str(clip), "-o", str(out), "--weights", str(ckpt),
                 "--weights-dir", str(SHARED / "weights"), "--at", "0:03", "--clip", "0.2"])
    assert code == 0
    image = cv2.imread(str(out))
    layout = pv.sheet_layout((512, 512), 1, [1])
    assert image.shape == (layout.height, layout.width, 3)
    with av.open(str(out.with_suffix(".mp4"))) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (512, 1024, 3)
    with av.open(str(clip)) as c:
        source = next(f.to_ndarray(format="bgr24") for f in c.decode(video=0)
                      if f.pts * f.time_base >= 3)
    left, right = frames[0][:, :512].astype(int), frames[0][:, 512:].astype(int)
    assert np.abs(left - source).mean() < 3  # before: the source frame (after H.264)
    assert np.abs(right - left).mean() > 3  # after: the face restored
    printed = capsys.readouterr().out
    assert "a full restore" in printed and "flicker" in printed


def test_a_short_film_is_decoded_once_with_every_moment_marked(tmp_path, yunet):
    # 200 frames, 4 moments: the windows (2 * CONTEXT + 1 frames each) would overlap; the film
    # is decoded once and each slot of 50 frames gets its moment, a frame with a face
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    assert 200 <= 4 * (2 * CONTEXT + 1)
    result = pv.preview(clip, tmp_path / "s.png", count=4, stages=stages(yunet))
    assert result.windows == 1 and result.decoded == 200
    assert len(result.moments) == 4 and not result.notes
    assert all(len(m.faces) == 1 and m.restored_ids for m in result.moments)
    assert [int(m.seconds // 2) for m in result.moments] == [0, 1, 2, 3]  # one per 2 s slot
    assert result.estimate > 0


def test_a_short_film_without_faces_gets_every_moment_asked_for_and_a_clip(tmp_path):
    clip = make_clip(tmp_path / "short.mp4", seconds=3, size=(96, 64))  # 75 frames, one GOP
    result = pv.preview(clip, tmp_path / "s.png", count=2, clip=0.4, stages=stages(NoFaces()))
    assert result.windows == 1 and result.decoded == 75
    assert len(result.moments) == 2 and result.moments[0].seconds < 1.5 <= result.moments[1].seconds
    assert len([n for n in result.notes if "no face" in n]) == 2
    with av.open(str(result.clip)) as c:
        assert len(list(c.decode(video=0))) == 10  # 0.4 s from the first moment
    # exact times, once: each moment the frame at its time
    result = pv.preview(clip, tmp_path / "t.png", at=[0.52, 2.0], stages=stages(NoFaces()))
    assert result.decoded == 75 and [m.seconds for m in result.moments] == [0.52, 2.0]
    # more moments than frames: as many as there are frames, and a line saying why
    tiny = make_clip(tmp_path / "three.mp4", frames=3, size=(96, 64))
    result = pv.preview(tiny, tmp_path / "u.png", count=5, stages=stages(NoFaces()))
    assert len(result.moments) == 3 and result.decoded == 3
    assert any("3 moments, not 5" in n for n in result.notes)
