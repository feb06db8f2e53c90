"""Batches: folders and lists, skipping finished outputs, locks, reports, and long films in
segments that resume after kill -9 with output identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip
from conftest import ROOT, SHARED, talking_head, tiny_gpen

from gpenvideo import batch, manifest, media, segments
from gpenvideo.cli import main
from gpenvideo.config import RestoreConfig


def decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.pts * f.time_base, f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]


def packets(path: Path, kind: str) -> list[tuple[bytes, object]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [(bytes(p), p.pts * p.time_base) for p in c.demux(stream) if p.size]


def face_clip(path: Path, frames: int = 100, gop: int = 10) -> Path:
    """A 256 x 256 clip of the shared talking-head footage with a keyframe every `gop` frames
    and an audio track."""
    return talking_head(path, frames, size=256, gop=gop)


# -- segments ----------------------------------------------------------------------------------

def test_plan_cuts_at_keyframes_with_lead_in_and_run_out():
    index = media.StreamIndex(pts=list(range(100)), keyframes=list(range(0, 100, 10)),
                                 time_base=__import__("fractions").Fraction(1, 10))
    plan = segments.plan(index, seconds=2.5, lead=6, tail=4)
    assert [(s.first, s.end) for s in plan] == [(None, 30), (30, 60), (60, 90), (90, None)]
    assert all(s.seek is None or s.seek % 10 == 0 for s in plan)
    assert [s.seek for s in plan] == [None, 20, 50, 80]  # keyframes at or before first - lead
    assert [s.stop for s in plan] == [34, 64, 94, None]
    written = [p for p in range(100) if sum(s.writes(p) for s in plan) == 1]
    assert written == list(range(100))  # every frame in exactly one segment
    assert segments.plan(index, seconds=0, lead=6, tail=4) == [segments.Segment(0, None, None,
                                                                                 None, None)]



def test_a_film_whose_timestamps_start_below_zero_runs_in_one_piece():
    # an MPEG-TS whose 33-bit clock wrapped reads with negative timestamps; cut into segments
    # it came out with frames missing and timestamps going backwards (exit 0)
    from fractions import Fraction

    index = media.StreamIndex(pts=list(range(-50, 50)), keyframes=list(range(-50, 50, 10)),
                              time_base=Fraction(1, 10))
    assert len(segments.plan(index, seconds=2.5, lead=6, tail=4)) == 1
    shifted = media.StreamIndex(pts=list(range(100)), keyframes=list(range(0, 100, 10)),
                                time_base=Fraction(1, 10))
    assert len(segments.plan(shifted, seconds=2.5, lead=6, tail=4)) == 4

def test_segmented_transcode_keeps_every_timestamp_and_the_audio(tmp_path):
    src = make_clip(tmp_path / "long.mp4", seconds=8, gop=25, audio=1)
    out = tmp_path / "out.mp4"
    cfg = RestoreConfig().replace("pipeline", segment_seconds=2)
    summary = segments.run(src, out, cfg)
    assert summary.segments >= 3 and summary.frames == 200
    assert [t for t, _ in decoded(out)] == [t for t, _ in decoded(src)]
    assert packets(out, "audio") == packets(src, "audio")
    assert not any(p.name.endswith("gpenvideo-work") for p in tmp_path.iterdir())


def restore_args(clip: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["restore", str(clip), "-o", str(out), "--weights", str(ckpt),
            "--weights-dir", str(SHARED / "weights"), "--segment-seconds", "1", "--quiet", *extra]


def restore_cmd(clip: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpenvideo", *restore_args(clip, out, ckpt, *extra)]


def test_kill_9_then_resume_gives_the_uninterrupted_output(tmp_path):
    clip = face_clip(tmp_path / "film.mp4", frames=75)  # three segments of one second
    ckpt = tiny_gpen(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    full = tmp_path / "full.mp4"  # the uninterrupted run: in this process (no kill needed)
    assert main(restore_args(clip, full, ckpt)) == 0

    out = tmp_path / "resumed.mp4"
    work = segments.WorkFolder(out).path
    child = subprocess.Popen(restore_cmd(clip, out, ckpt), env=env)
    deadline = time.monotonic() + 240
    while not (work / "seg-00000.json").exists() and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not out.exists()
    finished = sorted(work.glob("seg-*.json"))
    assert finished  # at least the first segment survived the kill

    assert subprocess.run(restore_cmd(clip, out, ckpt, "--resume"), env=env,
                          timeout=300).returncode == 0
    doc = json.loads(manifest.manifest_path(out).read_text())
    assert 1 <= doc["summary"]["segments_resumed"] < doc["summary"]["segments"]
    assert packets(out, "video") == packets(full, "video")  # bit for bit
    a, b = decoded(out), decoded(full)
    assert len(a) == 75 and all(ta == tb and np.array_equal(ia, ib)
                                 for (ta, ia), (tb, ib) in zip(a, b))
    assert packets(out, "audio") == packets(clip, "audio")
    assert not work.exists()
    # faces were restored across the segment boundaries: the face differs from the source
    src = decoded(clip)
    assert np.abs(a[50][1].astype(int) - src[50][1])[96:160, 96:160].mean() > 10


# -- batches -----------------------------------------------------------------------------------

def make_tree(root: Path) -> dict[str, Path]:
    (root / "a").mkdir(parents=True)
    (root / "b" / "sub").mkdir(parents=True)
    files = {"one": make_clip(root / "a" / "one.mp4", frames=10, audio=1),
             "two": make_clip(root / "b" / "sub" / "two.avi", frames=10, codec="mpeg4")}
    broken = root / "b" / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    files["broken"] = broken
    (root / "notes.txt").write_text("not a video\n")
    (root / ".hidden.mp4").write_bytes(b"")
    return files


def test_folder_batch_mirrors_the_tree_reports_and_goes_on_past_a_bad_file(tmp_path, capsys):
    files = make_tree(tmp_path / "in")
    out = tmp_path / "out"
    report = tmp_path / "report"
    code = main(["restore", str(tmp_path / "in"), "-o", str(out), "--identity",
                 "--report", str(report)])
    assert code == 2  # the broken file failed; the others were written
    one, two = out / "a" / "one_restored.mp4", out / "b" / "sub" / "two_restored.mkv"
    assert one.is_file() and two.is_file()
    assert not (out / "b" / "broken_restored.mp4").exists()
    assert not list(out.rglob("*.partial*")) and not list(out.rglob(".*.lock"))
    assert len(decoded(one)) == 10 and packets(one, "audio") == packets(files["one"], "audio")
    doc = json.loads(report.with_suffix(".json").read_text())
    status = {Path(f["input"]).name: f["status"] for f in doc["files"]}
    assert status == {"one.mp4": "done", "two.avi": "done", "broken.mp4": "failed"}
    assert doc["totals"] == {"done": 2, "skipped": 0, "busy": 0, "failed": 1}
    row = next(f for f in doc["files"] if f["status"] == "done")
    assert row["frames"] == 10 and row["duration"] > 0 and row["output"]
    lines = report.with_suffix(".csv").read_text().splitlines()
    assert lines[0].startswith("input,status,output,duration,frames") and len(lines) == 4
    printed = capsys.readouterr()
    assert "broken.mp4" in printed.err and "2 done, 1 failed" in printed.out

    before = one.stat().st_mtime_ns
    code = main(["restore", str(tmp_path / "in"), "-o", str(out), "--identity",
                 "--report", str(report)])
    doc = json.loads(report.with_suffix(".json").read_text())
    assert doc["totals"]["skipped"] == 2 and one.stat().st_mtime_ns == before
    # other settings are not "the same output": the existing file is not silently replaced
    code = main(["restore", str(files["one"]), "-o", str(one), "--identity", "--crf", "30"])
    assert code == 2 and one.stat().st_mtime_ns == before


def test_a_changed_input_is_not_skipped(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=10)
    cfg = RestoreConfig()
    jobs = batch.collect([src], None)
    assert [o.status for o in batch.run_batch(jobs, cfg, identity=True)] == ["done"]
    assert [o.status for o in batch.run_batch(jobs, cfg, identity=True)] == ["skipped"]
    os.utime(src, ns=(0, 0))  # touched, same content: still the same input
    assert [o.status for o in batch.run_batch(jobs, cfg, identity=True)] == ["skipped"]
    make_clip(src, frames=12)  # new content
    outcomes = batch.run_batch(jobs, cfg, identity=True, overwrite=True)
    assert outcomes[0].status == "done" and outcomes[0].frames == 12


def test_list_file_input(tmp_path):
    a = make_clip(tmp_path / "a.mp4", frames=5)
    b = make_clip(tmp_path / "b.mov", frames=5)
    listing = tmp_path / "films.txt"
    listing.write_text("# my films\na.mp4\n\nb.mov\n")
    jobs = batch.collect([listing], tmp_path / "restored")
    assert [j.source.name for j in jobs] == ["a.mp4", "b.mov"]
    outcomes = batch.run_batch(jobs, RestoreConfig(), identity=True)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert (tmp_path / "restored" / "a_restored.mp4").is_file()
    assert (tmp_path / "restored" / "b_restored.mov").is_file()


def test_an_output_locked_by_another_run_is_left_to_it_and_freed_by_kill_9(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=5)
    target = tmp_path / "clip_restored.mp4"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from gpenvideo.manifest import OutputLock; "
         f"assert OutputLock(Path({str(target)!r})).acquire(); print('held', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert holder.stdout.readline().strip() == b"held"
    jobs = batch.collect([src], None)
    assert [o.status for o in batch.run_batch(jobs, RestoreConfig(), identity=True)] == ["busy"]
    assert not target.exists()
    holder.kill()
    holder.wait()
    assert [o.status for o in batch.run_batch(jobs, RestoreConfig(), identity=True)] == ["done"]


def test_several_inputs_need_an_output_folder(tmp_path, capsys):
    a = make_clip(tmp_path / "a.mp4", frames=3)
    b = make_clip(tmp_path / "b.mp4", frames=3)
    code = main(["restore", str(a), str(b), "-o", str(a), "--identity"])
    assert code == 2 and "give -o a folder" in capsys.readouterr().err


def test_segment_seconds_must_not_be_negative(capsys, tmp_path):
    a = make_clip(tmp_path / "a.mp4", frames=3)
    assert main(["restore", str(a), "--identity", "--segment-seconds", "-1"]) == 2
    assert "--segment-seconds" in capsys.readouterr().err


# -- Ray ---------------------------------------------------------------------------------------

def test_the_ray_path_writes_the_same_film_as_the_local_path(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")
    clip = face_clip(tmp_path / "film.mp4", frames=40)  # two segments of one second
    ckpt = tiny_gpen(tmp_path)
    cfg = RestoreConfig().replace("pipeline", segment_seconds=1, progress=False).replace(
        "model", weights=str(ckpt), weights_dir=str(SHARED / "weights"))
    local = batch.run_batch([batch.Job(clip, tmp_path / "local.mp4")], cfg)
    remote = batch.run_batch([batch.Job(clip, tmp_path / "ray.mp4")], cfg, ray_address="")
    assert [o.status for o in local + remote] == ["done", "done"]
    assert remote[0].frames == local[0].frames == 40 and remote[0].faces == local[0].faces > 0
    a, b = decoded(tmp_path / "local.mp4"), decoded(tmp_path / "ray.mp4")
    assert len(a) == len(b) == 40
    assert all(ta == tb for (ta, _), (tb, _) in zip(a, b))
    assert all(np.array_equal(ia, ib) for (_, ia), (_, ib) in zip(a, b))
    assert packets(tmp_path / "ray.mp4", "audio") == packets(clip, "audio")


def test_the_settings_digest_follows_every_model_file_that_shapes_the_output(tmp_path):
    # a finished output is redone when a model file in use is replaced, and only then
    from gpenvideo import api

    folder = tmp_path / "w"
    folder.mkdir()
    gpen = tmp_path / "mine.pth"
    for path in (gpen, folder / "face_detection_yunet_2026may.onnx",
                 folder / "parsing_parsenet.pth"):
        path.write_bytes(b"1")
    template = RestoreConfig().replace("model", weights=str(gpen), weights_dir=str(folder))
    parsing = template.replace("composite", mask="parsing")

    def digests():
        return [api.settings_digest(c) for c in (template, parsing)]

    first = digests()
    assert first[0] != first[1]
    (folder / "parsing_parsenet.pth").write_bytes(b"22")
    second = digests()
    assert second[0] == first[0] and second[1] != first[1]
    for path in (gpen, folder / "face_detection_yunet_2026may.onnx"):
        path.write_bytes(path.read_bytes() + b"3")
        third = digests()
        assert third[0] != second[0] and third[1] != second[1]
        second = third
