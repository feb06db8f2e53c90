"""Home-movie events on real footage (issue 14): flashes, fades, tape glitches and a hand passing
in front keep one track with a face in every frame; two different clips joined still cut; a
one-frame film keeps its face; restoration fades in and out at a track's ends."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from conftest import SHARED, shared_file, tiny_gpen

from gpenvideo.config import DetectConfig, TrackConfig
from gpenvideo.frames import Detection, Frame
from gpenvideo.tracker import Tracker, shot_change, thumbnail

SIZE = 256  # the 512-px clips are tracked at half size: same events, a quarter of the pixels
FRAMES = 100
KATIE = "sadtalker_WDA_KatieHill_000.mp4"
ALEXANDRIA = "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"


def decode(name: str, n: int) -> list[np.ndarray]:
    from gpenvideo.media import Decoder

    with Decoder(shared_file("media", name)) as dec:
        return [cv2.resize(f.image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                for f, _ in zip(dec.frames(), range(n))]


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    return {KATIE: decode(KATIE, FRAMES), ALEXANDRIA: decode(ALEXANDRIA, 40)}


@pytest.fixture(scope="module")
def detector():
    from gpenvideo.detector import YuNetDetector

    return YuNetDetector(shared_file("weights", "face_detection_yunet_2026may.onnx"),
                         DetectConfig())


# -- the events, as a home movie shows them -------------------------------------------------
def gain(image: np.ndarray, factor: float, offset: float = 0.0) -> np.ndarray:
    """A flash, a fade or an exposure jump: every pixel times `factor` plus `offset`, clipped."""
    return np.clip(image.astype(np.float32) * factor + offset, 0, 255).astype(np.uint8)


def noise_band(image: np.ndarray, seed: int, top: float = 0.4, rows: float = 0.22) -> np.ndarray:
    """A tape glitch: random noise over `rows` of the picture's rows (a fifth or more)."""
    out = image.copy()
    r0 = int(top * len(image))
    r1 = r0 + int(rows * len(image)) + 1
    out[r0:r1] = np.random.default_rng(seed).integers(0, 256, out[r0:r1].shape, np.uint8)
    return out


def dropout_lines(image: np.ndarray, seed: int) -> np.ndarray:
    """Tape dropout: a sixth of the rows, at random, white."""
    out = image.copy()
    out[np.random.default_rng(seed).choice(len(image), len(image) // 6, replace=False)] = 255
    return out


def rolled(image: np.ndarray) -> np.ndarray:
    """A rolled frame: the picture slipped down by a third, wrapping round."""
    return np.roll(image, len(image) // 3, axis=0)


def occluded(image: np.ndarray, t: float, box: np.ndarray) -> np.ndarray:
    """A dark block 0.6 face widths wide slid across the face box: left of it at t=0, right
    of it at t=1."""
    out = image.copy()
    x1, y1, x2, y2 = (int(v) for v in box)
    w = x2 - x1
    left = int(x1 - 0.6 * w + t * 2.2 * w)
    out[y1:y2, max(0, left):max(0, left + int(0.6 * w))] = (60, 70, 80)
    return out


FACE_BOX = np.array([127, 120, 381, 453]) * SIZE / 512  # where the face of KATIE is


def home_movie(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The clip with a slow fade in and a fade down at the end, a flash (60% brighter) every 37
    frames, a noise band over a fifth of the rows across the face every 53, dropout lines at 45,
    a rolled frame at 88 and a block sliding across the face over frames 60-69."""
    out = []
    for i, image in enumerate(frames):
        if i < 25:
            image = gain(image, 0.15 + 0.85 * i / 25)
        if i >= 80:
            image = gain(image, 1 - 0.65 * (i - 80) / 19)
        if i and i % 37 == 0:
            image = gain(image, 1.6)
        if i and i % 53 == 0:
            image = noise_band(image, i)
        if 60 <= i < 70:
            image = occluded(image, (i - 60) / 9, FACE_BOX)
        if i == 45:
            image = dropout_lines(image, i)
        if i == 88:
            image = rolled(image)
        out.append(image)
    return out


def track(images: list[np.ndarray], detections: list[list[Detection]],
          cfg: TrackConfig | None = None) -> list[Frame]:
    tracker = Tracker(cfg or TrackConfig())
    out: list[Frame] = []
    for i, (image, dets) in enumerate(zip(images, detections)):
        out += tracker.process(Frame(index=i, pts=i, duration=1, image=image, detections=dets))
    return out + list(tracker.flush())


def detect(detector, images: list[np.ndarray]) -> list[list[Detection]]:
    return [detector.detect([image])[0] for image in images]


@pytest.fixture(scope="module")
def movie(clips, detector) -> tuple[list[np.ndarray], list[list[Detection]]]:
    images = home_movie(clips[KATIE])
    return images, detect(detector, images)


# -- tests ----------------------------------------------------------------------------------
def test_home_movie_events_keep_one_track_and_a_face_in_every_frame(clips, detector, movie):
    images, detections = movie
    clean = track(clips[KATIE], detect(detector, clips[KATIE]))
    missed = [i for i, d in enumerate(detections) if not d]
    assert missed  # the detector does lose the face in some event frames: they are filled in
    out = track(images, detections)
    assert len(out) == FRAMES
    assert all(len(f.faces) == 1 for f in out)
    assert len({f.faces[0].track_id for f in out}) == 1
    assert not any(f.scene_cut for f in out)
    assert all(out[i].faces[0].raw is None for i in missed)
    # the restoration fades out and back in around the block passing in front of the face
    # (detections there are set aside as misshapen; frame 64 is two from any kept one), and
    # nowhere else: not for the fades, the flashes, the glitches
    weight = np.array([f.faces[0].weight for f in out])
    assert weight[64] == 0.0 and np.all(weight[59:64] > 0) and np.all(weight[65:70] > 0)
    assert np.all(np.diff(weight[58:65]) < 0) and np.all(np.diff(weight[64:71]) > 0)
    assert np.all(weight[:59] == 1.0) and np.all(weight[70:88] == 1.0)
    # the rolled frame (88) moved the face: filled in there, it is not restored (and no fade)
    assert out[88].faces[0].raw is None
    assert weight[88] == 0.0 and np.all(weight[89:] == 1.0)
    # every face lies where the tracker puts it in the clip without the events, within a
    # seventh of an eye distance (flash, glitch, occluded and filled-in frames included;
    # 0.22 where the half-hidden face's detections are used)
    for frame, truth in zip(out, clean):
        ref = truth.faces[0].smoothed
        eye = np.linalg.norm(ref[1] - ref[0])
        assert np.abs(frame.faces[0].smoothed - ref).max() < 0.15 * eye, frame.index


def test_flash_fade_exposure_and_glitches_are_not_cuts(clips):
    frames = clips[KATIE]
    shot, cur, after = (thumbnail(frames[i]) for i in (9, 10, 11))
    threshold = TrackConfig().scene_cut_threshold
    same = {"flash": gain(frames[10], 1.6), "fade": gain(frames[10], 0.05),
            "exposure": gain(frames[10], 0.6, 40), "strong flash": gain(frames[10], 2.5)}
    for name, image in same.items():
        assert shot_change(shot, thumbnail(image), [after], threshold) == "same", name
    glitches = {"noise band": noise_band(frames[10], 1, 0.3, 0.3),
                "dropout": dropout_lines(frames[10], 1), "rolled": rolled(frames[10])}
    for name, image in glitches.items():
        assert shot_change(shot, thumbnail(image), [after], threshold) != "cut", name
    # a rolled frame is unlike the shot, and only the frame after it tells it from a cut
    assert shot_change(shot, thumbnail(rolled(frames[10])), [after], threshold) == "glitch"
    assert shot_change(shot, thumbnail(rolled(frames[10])), [], threshold) == "cut"
    other = thumbnail(clips[ALEXANDRIA][10])
    assert shot_change(shot, other, [thumbnail(clips[ALEXANDRIA][11])], threshold) == "cut"
    assert shot_change(shot, thumbnail(gain(frames[10], 0.0)), [after], threshold) == "blank"
    assert shot_change(shot, cur, [after], threshold) == "same"


def test_two_different_clips_joined_still_cut(clips, detector):
    # two talking heads framed alike: their faces lie at nearly the same place
    images = clips[KATIE][:30] + clips[ALEXANDRIA][:30]
    out = track(images, detect(detector, images))
    assert [f.index for f in out if f.scene_cut] == [30]
    assert all(len(f.faces) == 1 for f in out)
    first, second = {f.faces[0].track_id for f in out[:30]}, {f.faces[0].track_id for f in out[30:]}
    assert len(first) == len(second) == 1 and first != second
    # no fade on either side of a cut: the picture changes there anyway
    assert out[29].faces[0].weight == out[30].faces[0].weight == 1.0


def test_a_track_goes_on_across_a_cut_where_its_face_is_found_again(clips, detector):
    # over frames 15-18 everything but the face is another picture (the frame upside down, as
    # when the camera whips round a face it keeps in frame): a cut before 15 and after 18, but
    # the same face stays at the same place
    frames = clips[KATIE][:40]
    x1, y1, x2, y2 = (int(v) for v in FACE_BOX)
    images = []
    for i, frame in enumerate(frames):
        if 15 <= i < 19:
            other = np.ascontiguousarray(frame[::-1])
            other[y1:y2, x1:x2] = frame[y1:y2, x1:x2]
            frame = other
        images.append(frame)
    out = track(images, detect(detector, images))
    assert [f.index for f in out if f.scene_cut] == [15, 19]
    assert all(len(f.faces) == 1 for f in out)
    assert len({f.faces[0].track_id for f in out}) == 1
    assert all(f.faces[0].weight == 1.0 for f in out)


@pytest.mark.parametrize("n", [1, 2])
def test_a_one_or_two_frame_film_keeps_its_face(clips, detector, n):
    images = clips[KATIE][:n]
    out = track(images, detect(detector, images))
    assert [len(f.faces) for f in out] == [1] * n
    assert all(f.faces[0].weight == 1.0 for f in out)


def test_a_track_cut_short_by_the_films_end_needs_a_sure_detection(clips, detector):
    images = clips[KATIE][:2]
    dets = detect(detector, images)
    unsure = [[Detection(box=d[0].box, landmarks=d[0].landmarks, score=0.65)] for d in dets]
    out = track(images, unsure, TrackConfig(keep_score=0.8))
    assert [len(f.faces) for f in out] == [0, 0]  # too short to confirm, and no sure detection
    out = track(images, [unsure[0], dets[1]], TrackConfig(keep_score=0.8))
    assert [len(f.faces) for f in out] == [1, 1]  # one sure detection keeps the whole track


def test_strength_ramps_in_and_out_at_a_tracks_ends(clips, detector):
    # the face is hidden behind a block until frame 20 and from frame 70 on: the detector
    # sees it over frames 20-69 only
    frames = clips[KATIE][:FRAMES]
    x1, y1, x2, y2 = (int(v) for v in FACE_BOX)
    hidden = [f.copy() for f in frames]
    for i in [*range(20), *range(70, FRAMES)]:
        hidden[i][max(0, y1 - 10):y2 + 10, max(0, x1 - 10):x2 + 10] = (60, 70, 80)
    dets = detect(detector, hidden)
    assert [i for i, d in enumerate(dets) if d] == list(range(20, 70))
    out = track(hidden, dets, TrackConfig(ramp_frames=5))
    assert not any(f.scene_cut for f in out)
    with_face = [f.index for f in out if f.faces]
    assert with_face == list(range(20, 70))  # its first frames included
    weight = np.array([out[i].faces[0].weight for i in with_face])
    ramp = weight[:5]
    assert np.all(np.diff(ramp) > 0) and 0 < ramp[0] < 0.2 and ramp[-1] > 0.8
    assert np.all(weight[5:-5] == 1.0)
    np.testing.assert_allclose(weight[::-1], weight)  # the same ramp out at the end
    assert ramp[2] == pytest.approx(0.5)  # symmetric about its middle: a smooth S
    # no ramp asked for: the restoration switches on and off
    flat = track(hidden, dets, TrackConfig(ramp_frames=0))
    assert all(f.faces[0].weight == 1.0 for f in flat if f.faces)


def test_restoration_fades_across_a_long_gap_and_not_a_short_one(clips, detector):
    images = clips[KATIE][:60]
    dets = detect(detector, images)
    for i in [*range(20, 28), 45]:  # lost for 8 frames (a hand in front), then for 1
        dets[i] = []
    out = track(images, dets)
    assert all(len(f.faces) == 1 for f in out) and len({f.faces[0].track_id for f in out}) == 1
    weight = np.array([f.faces[0].weight for f in out])
    # more than hold_frames (1) from a detection (21-26): not restored; faded out and in
    assert np.all(weight[21:27] == 0.0)
    assert np.all(np.diff(weight[15:22]) < 0) and np.all(np.diff(weight[26:33]) > 0)
    assert weight[20] > 0 and weight[27] > 0  # filled-in frames next to a detection
    assert np.all(weight[:15] == 1.0) and np.all(weight[33:] == 1.0)  # the one-frame miss too


def restore_through_cli(tmp_path, images: list[np.ndarray]
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`images` as a clip restored by `gpenvideo restore` with the tiny GPEN, losslessly:
    (the clip's frames, the output's frames), decoded."""
    from clips import make_clip

    from gpenvideo.cli import main

    clip = make_clip(tmp_path / "in.mp4", frames=len(images), size=(SIZE, SIZE),
                     image_fn=lambda i: images[i])
    out = tmp_path / "out.mp4"
    assert main(["restore", str(clip), "-o", str(out), "--weights", str(tiny_gpen(tmp_path)),
                 "--weights-dir", str(SHARED / "weights"), "--crf", "0", "--quiet"]) == 0
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        return ([f.to_ndarray(format="bgr24") for f in a.decode(video=0)],
                [f.to_ndarray(format="bgr24") for f in b.decode(video=0)])


def test_one_frame_film_restores_its_face_through_the_cli(tmp_path, clips):
    before, after = restore_through_cli(tmp_path, clips[KATIE][:1])
    assert len(before) == len(after) == 1
    x1, y1, x2, y2 = (int(v) for v in FACE_BOX)
    change = np.abs(after[0].astype(int) - before[0].astype(int))
    assert change[y1 + 20:y2 - 20, x1 + 20:x2 - 20].mean() > 2  # the face was restored
    assert change[:12, :12].max() == 0  # far from the face: the picture as it was


def test_a_face_that_changes_shape_for_good_is_followed_after_a_few_frames():
    # from frame 20 on the detector's points have another shape (a head turned aside): the
    # first few are set aside as misshapen and filled in, then kept; the track goes on
    base = np.array([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]], np.float32)
    turned = base + np.array([[8, 0], [0, 0], [-9, 0], [6, 0], [0, 0]], np.float32)
    dets = []
    for i in range(50):
        lm = (turned if i >= 20 else base) + [i, 0]
        box = np.array([lm[:, 0].min() - 10, 35, lm[:, 0].max() + 10, 80], np.float32)
        dets.append([Detection(box=box, landmarks=lm, score=0.9)])
    images = [np.full((120, 400, 3), 128, np.uint8)] * 50
    out = track(images, dets)
    assert all(len(f.faces) == 1 for f in out) and len({f.faces[0].track_id for f in out}) == 1
    kept = [f.index for f in out if f.faces[0].raw is not None]
    assert kept == [*range(20), *range(20 + 3, 50)]  # three set aside, then the new shape


def test_a_face_filled_in_across_a_blank_frame_is_left_alone_and_a_flash_is_not(clips, detector):
    # frame 12 is blown out to pure white and 24 is black: no face to restore there (GPEN fed
    # a blank crop would paste a face onto nothing); at 18 a flash only brightens the face
    # and the detector happens to lose it: it is restored as usual
    images = [f.copy() for f in clips[KATIE][:36]]
    images[12] = np.full_like(images[12], 255)
    images[18] = gain(images[18], 1.6)
    images[24] = np.zeros_like(images[24])
    dets = detect(detector, images)
    assert not dets[12] and not dets[24]
    dets[18] = []
    out = track(images, dets)
    assert all(len(f.faces) == 1 for f in out) and len({f.faces[0].track_id for f in out}) == 1
    weight = np.array([f.faces[0].weight for f in out])
    assert weight[12] == 0.0 and weight[24] == 0.0
    others = [i for i in range(36) if i not in (12, 24)]
    assert np.all(weight[others] == 1.0)  # the flash (18) too, and no ramp round the blanks


def test_a_blank_frame_inside_a_track_stays_as_decoded_through_the_cli(tmp_path, clips):
    white = 5
    images = [np.full_like(f, 255) if i == white else f for i, f in enumerate(clips[KATIE][:10])]
    before, after = restore_through_cli(tmp_path, images)
    assert len(before) == len(after) == 10
    np.testing.assert_array_equal(after[white], before[white])  # bit for bit, no ghost face
    x1, y1, x2, y2 = (int(v) for v in FACE_BOX)
    for i in (white - 1, white + 1):  # the faces beside it are restored
        change = np.abs(after[i].astype(int) - before[i].astype(int))
        assert change[y1 + 20:y2 - 20, x1 + 20:x2 - 20].mean() > 2, i
