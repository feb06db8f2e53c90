"""Per-track quality figures (flicker, motion, face size), choosing faces with --faces /
--skip-faces, stable track ids, and the per-track rows of the report."""

from __future__ import annotations

import csv
import json

import av
import cv2
import numpy as np
import pytest
from clips import TWO_FACE_SOURCES, two_face_clip
from conftest import SHARED, shared_file, tiny_gpen

from gpenvideo import api, engine, segments
from gpenvideo.cli import main
from gpenvideo.compositor import Compositor
from gpenvideo.config import CompositeConfig, DetectConfig, RestoreConfig, TrackConfig
from gpenvideo.detector import DetectStage, YuNetDetector
from gpenvideo.frames import Frame
from gpenvideo.media import Decoder
from gpenvideo.quality import QualityStage, SelectStage, TrackLedger, chooser
from gpenvideo.restorer import RestoreStage
from gpenvideo.tracker import Tracker

FRAMES = 30
TWO_FACE_FRAMES = 16


def yunet() -> YuNetDetector:
    return YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                         DetectConfig())


@pytest.fixture(scope="module")
def talking_head():
    """(pts, image, detections) of the first FRAMES frames of a real clip."""
    clip = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    det = yunet()
    out = []
    with Decoder(clip) as dec:
        for frame in dec.frames():
            if frame.index >= FRAMES:
                break
            out.append((frame.pts, frame.image, det.detect([frame.image])[0]))
    return out


def figures(talking_head, restore_fn) -> dict:
    ledger = TrackLedger()
    quality = QualityStage(ledger)
    chain = [Tracker(TrackConfig()), SelectStage(ledger), RestoreStage(restore_fn, 128, 4),
             quality]
    frames = [Frame(index=i, pts=pts, duration=1, image=img.copy(), detections=list(dets))
              for i, (pts, img, dets) in enumerate(talking_head)]
    list(engine.run_chain(frames, chain))
    rows = quality.track_rows()
    assert len(rows) == 1
    return rows[0]


def test_flicker_is_1_for_a_restorer_returning_its_input(talking_head):
    row = figures(talking_head, lambda crops: np.array(crops, copy=True))
    assert row["flicker"] == pytest.approx(1.0, abs=0.02)
    assert row["frames"] == row["frames_restored"] == FRAMES
    assert 60 < row["face_size"] < 200  # eye distance in this 512 x 512 close-up
    assert 0 <= row["motion"] < 0.1  # the smoothed crop holds the face still


def test_a_white_flash_frame_changes_neither_motion_nor_flicker(talking_head):
    # frame 15 blown out to pure white: the detector sees no face there, the tracker fills it
    # in; the crop shows nothing, so its pairs say nothing about the face's motion (phase
    # correlation guesses a shift of tens of pixels) and it is not pasted
    clean = figures(talking_head, lambda crops: np.array(crops, copy=True))
    flashed = list(talking_head)
    pts, image, _ = flashed[15]
    flashed[15] = (pts, np.full_like(image, 255), [])
    row = figures(flashed, lambda crops: np.array(crops, copy=True))
    assert row["motion"] == pytest.approx(clean["motion"], rel=0.25)
    assert row["flicker"] == pytest.approx(1.0, abs=0.02)
    assert row["frames"] == FRAMES and row["frames_restored"] == FRAMES - 1  # not pasted
    # a restorer adding flicker: the white frame's huge change does not water it down
    noisy = figures(talking_head, noisy_restorer(0))["flicker"]
    assert figures(flashed, noisy_restorer(0))["flicker"] == pytest.approx(noisy, rel=0.1)


def noisy_restorer(seed: int):
    """A restorer adding blotchy grey changes from frame to frame, as a GAN's flicker looks."""
    rng = np.random.default_rng(seed)

    def noisy(crops):
        crops = np.asarray(crops, np.float32)
        noise = [cv2.resize(rng.normal(0, 10, (16, 16)).astype(np.float32), crops.shape[1:3],
                            interpolation=cv2.INTER_CUBIC) for _ in crops]
        return np.clip(crops + np.array(noise)[..., None], 0, 255).astype(np.uint8)

    return noisy


def test_flicker_is_well_above_1_for_a_restorer_adding_frame_to_frame_noise(talking_head):
    assert figures(talking_head, noisy_restorer(0))["flicker"] > 1.5


def test_flicker_is_below_1_for_a_restorer_that_steadies_the_face(talking_head):
    state = {}

    def steady(crops):  # a running average over time: the restored face changes slowly
        out = []
        for crop in np.asarray(crops, np.float32):
            state["avg"] = crop if "avg" not in state else 0.85 * state["avg"] + 0.15 * crop
            out.append(state["avg"])
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    assert figures(talking_head, steady)["flicker"] < 0.7


def test_chooser():
    assert chooser() is None
    only = chooser(faces=[1, 3])
    assert [only(i) for i in (1, 2, 3)] == [True, False, True]
    skip = chooser(skip=[2])
    assert [skip(i) for i in (1, 2, 3)] == [True, False, True]


# -- two faces --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """A small clip with two real faces side by side (each clip downscaled to 160 x 160)."""
    return two_face_clip(tmp_path_factory.mktemp("two") / "two.mp4",
                         [shared_file("media", name) for name in TWO_FACE_SOURCES],
                         TWO_FACE_FRAMES)


def luma(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray()[:160].astype(int) for f in c.decode(video=0)]


def cheap_factory(cfg: RestoreConfig):
    """The restore stages (a Recipe) with an inverting restorer in place of GPEN (fast)."""
    det = yunet()

    def factory(info):
        ledger = TrackLedger(chooser(cfg.select.faces, cfg.select.skip_faces),
                             seconds=lambda pts: float(pts * info.time_base))
        return [DetectStage(det), Tracker(cfg.track), SelectStage(ledger),
                RestoreStage(lambda c: 255 - np.asarray(c), 64, 8), QualityStage(ledger),
                Compositor(CompositeConfig(color_match=False), 64, 1.0)]
    return segments.Recipe(build=factory)


def left_and_right_ids(doc) -> tuple[int, int]:
    faces = doc["frames"][TWO_FACE_FRAMES // 2]["faces"]
    left = min(faces, key=lambda f: f["box"][0])["track"]
    right = max(faces, key=lambda f: f["box"][0])["track"]
    return left, right


def test_track_ids_are_the_same_in_every_run(two_faces):
    cfg = RestoreConfig().replace("model", weights_dir=str(SHARED / "weights"))
    first, second = api.track_video(two_faces, config=cfg), api.track_video(two_faces, config=cfg)
    assert first == second
    assert first["tracks"] == 2 and len({left_and_right_ids(first)}) == 1
    assert [r["track"] for r in first["per_track"]] == sorted(left_and_right_ids(first))
    assert all(r["flicker"] is None for r in first["per_track"])


@pytest.mark.parametrize("choice", ["faces", "skip_faces"])
def test_a_face_left_alone_passes_through_bit_for_bit(two_faces, tmp_path, choice):
    cfg = RestoreConfig().replace("model", weights_dir=str(SHARED / "weights"))
    left, right = left_and_right_ids(api.track_video(two_faces, config=cfg))
    # --faces LEFT restores the left face only; --skip-faces LEFT the right one only
    cfg = cfg.replace("select", **{choice: (left,)}).replace("encode", crf=0)
    out = tmp_path / "out.mp4"
    summary = segments.run(two_faces, out, cfg, cheap_factory(cfg))
    # (the restored face's soft mask reaches over the middle line: a margin of 24 px)
    restored_side = slice(0, 136) if choice == "faces" else slice(184, 320)
    alone_side = slice(184, 320) if choice == "faces" else slice(0, 136)
    for a, b in zip(luma(two_faces), luma(out), strict=True):
        assert np.array_equal(a[:, alone_side], b[:, alone_side])
        assert np.abs(a[:, restored_side] - b[:, restored_side]).mean() > 5
    rows = {r["track"]: r for r in summary.per_track}
    assert set(rows) == {left, right}
    kept = left if choice == "faces" else right
    alone = right if choice == "faces" else left
    assert rows[kept]["frames_restored"] == rows[kept]["frames"] > 0
    assert rows[alone]["frames_restored"] == 0 and rows[alone]["flicker"] is None


def test_a_choice_of_faces_runs_the_film_in_one_piece(two_faces, tmp_path):
    cfg = (RestoreConfig().replace("model", weights_dir=str(SHARED / "weights"))
           .replace("pipeline", segment_seconds=0.3).replace("select", skip_faces=(1,)))
    summary = segments.run(two_faces, tmp_path / "out.mp4", cfg, cheap_factory(cfg))
    assert summary.segments == 1 and any("one piece" in n for n in summary.notes)
    plain = cfg.replace("select", skip_faces=())
    summary = segments.run(two_faces, tmp_path / "seg.mp4", plain, cheap_factory(plain))
    assert summary.segments > 1
    assert {r["segment"] for r in summary.per_track} == set(range(summary.segments))


def test_cli_report_and_sidecar_have_one_row_per_track(two_faces, tmp_path, capsys):
    ckpt = tiny_gpen(tmp_path)
    out, report = tmp_path / "out.mp4", tmp_path / "report"
    code = main(["restore", str(two_faces), "-o", str(out), "--weights", str(ckpt),
                 "--weights-dir", str(SHARED / "weights"), "--skip-faces", "2",
                 "--report", str(report)])
    assert code == 0
    doc = json.loads(report.with_suffix(".json").read_text())
    tracks = doc["tracks"]
    assert [t["track"] for t in tracks] == [1, 2]
    assert tracks[0]["frames_restored"] == tracks[0]["frames"] == TWO_FACE_FRAMES
    assert tracks[1]["frames_restored"] == 0
    assert all(t["input"] == str(two_faces) and t["output"] == str(out) for t in tracks)
    assert doc["files"][0]["per_track"] == [
        {k: v for k, v in t.items() if k not in ("input", "output")} for t in tracks]
    with open(report.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["row"] for r in rows] == ["file", "track", "track"]
    assert rows[1]["track"] == "1" and float(rows[1]["face_size"]) > 10
    assert rows[1]["flicker"] and not rows[2]["flicker"]
    sidecar = json.loads(out.with_name(out.name + ".gpenvideo.json").read_text())
    assert sidecar["summary"]["per_track"] == doc["files"][0]["per_track"]
    printed = capsys.readouterr().out
    assert "flicker" in printed and "face px" in printed


def test_cli_track_prints_the_per_track_table(two_faces, tmp_path, capsys):
    code = main(["track", str(two_faces), "-o", str(tmp_path / "t.json"),
                 "--weights-dir", str(SHARED / "weights")])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(line for line in printed if "face px" in line)
    assert "motion" in header and "flicker" not in header
    assert len([line for line in printed if line.split()[:1] in (["1"], ["2"])]) == 2


def test_bad_face_ids_are_refused(two_faces, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["restore", str(two_faces), "--faces", "a,b"])
    assert exit_.value.code == 2
    assert "track ids" in capsys.readouterr().err


def test_the_track_table_prints_times_before_zero_and_rounds_into_the_minute():
    from gpenvideo.quality import format_track_table

    row = dict(track=1, first=-12.32, last=59.97, frames=3, frames_restored=3, face_size=50,
               motion=0.01, flicker=1.0)
    line = format_track_table([row]).splitlines()[-1].split()
    assert line[1:3] == ["-0:12.3", "1:00.0"]
