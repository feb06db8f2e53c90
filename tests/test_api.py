"""The front door: gpenvideo.restore_video, track_video, load_gpen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clips import make_clip
from conftest import SHARED, shared_file, tiny_gpen

import gpenvideo
from gpenvideo.errors import InputError, OutputError


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("api") / "film.mp4", frames=5, size=(64, 48),
                     audio=1)


def test_an_unknown_option_is_a_type_error_naming_it_and_the_valid_ones(clip):
    with pytest.raises(TypeError, match=r"unknown option 'colour'.*crf.*segment_seconds"):
        gpenvideo.restore_video(clip, colour="red")


def test_a_bad_option_value_is_an_input_error(clip):
    with pytest.raises(InputError, match="--codec 'divx'"):
        gpenvideo.restore_video(clip, codec="divx", identity=True)
    with pytest.raises(InputError, match="--max-faces -1"):
        gpenvideo.restore_video(clip, max_faces=-1, identity=True)


def test_restore_video_names_the_output_as_the_command_does_and_skips_finished_work(
        clip, tmp_path):
    summary = gpenvideo.restore_video(clip, tmp_path / "out", identity=True, crf=30)
    assert Path(summary.output) == tmp_path / "out" / "film_restored.mp4"
    assert summary.frames == 5 and summary.segments_resumed == 0
    again = gpenvideo.restore_video(clip, tmp_path / "out", identity=True, crf=30)
    assert again.frames == 5 and again.segments_resumed == again.segments
    with pytest.raises(OutputError, match="already exists"):
        gpenvideo.restore_video(clip, tmp_path / "out", identity=True, crf=31)


def test_three_lines_restore_a_film_with_a_gpen_checkpoint(tmp_path):
    import cv2

    from gpenvideo.media import Decoder

    with Decoder(shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")) as dec:
        faces = [cv2.resize(np.array(f.image), (256, 256)) for f, _ in zip(dec.frames(), range(8))]
    ckpt = tiny_gpen(tmp_path)
    clip = make_clip(tmp_path / "talk.mp4", frames=8, size=(256, 256),
                     image_fn=lambda i: faces[i])
    summary = gpenvideo.restore_video(clip, weights=ckpt, weights_dir=SHARED / "weights",
                                      device="cpu", segment_seconds=0)
    assert summary.frames == 8 and summary.faces >= 4 and summary.tracks == 1
    assert Path(summary.output).is_file()


def test_load_gpen_builds_the_network_of_a_checkpoint(tmp_path):
    model = gpenvideo.load_gpen(tiny_gpen(tmp_path))
    assert model.cfg.size == 64 and not model.training


@pytest.mark.parametrize("section, key", [("track", "max_faces"), ("detect", "min_face_size"),
                                          ("model", "batch_size")])
def test_a_toml_config_with_a_negative_count_is_refused_as_the_command_line_does(
        clip, tmp_path, section, key):
    toml = tmp_path / "bad.toml"
    toml.write_text(f"[{section}]\n{key} = -1\n", encoding="utf-8")
    with pytest.raises(InputError, match="-1 is not valid: give 0 or more"):
        gpenvideo.restore_video(clip, config=toml, identity=True)
