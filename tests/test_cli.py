"""The command line as a user meets it: failures of any kind in a batch, filesystem errors,
output folders, signals, stale files of killed runs, option checks and what is printed."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import make_clip
from conftest import ROOT, shared_file, tiny_gpen

from gpenvideo import batch, engine, manifest, segments
from gpenvideo.cli import main
from gpenvideo.config import DetectConfig, RestoreConfig
from gpenvideo.media import Decoder


def leftovers(folder: Path) -> list[str]:
    """Hidden files and folders of ours (locks, partial files, work folders) under `folder`."""
    return sorted(p.name for p in folder.rglob(".*"))


def report_of(prefix: Path) -> dict[str, dict]:
    doc = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    return {Path(f["input"]).name: f for f in doc["files"]}


# -- item 2: one bad file, whatever its error, does not stop the batch ------------------------

@pytest.fixture()
def three_clips(tmp_path: Path) -> list[Path]:
    return [make_clip(tmp_path / f"{n}.mp4", frames=3, size=(64, 48)) for n in "abc"]


def fail_on(monkeypatch, name: str, exc: Exception) -> None:
    """Make the restore of the input called `name` raise `exc` (an unexpected error)."""
    real = batch._restore_one

    def restore_one(source, *args, **kwargs):
        if source.name == name:
            raise exc
        return real(source, *args, **kwargs)

    monkeypatch.setattr(batch, "_restore_one", restore_one)


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_reported_and_the_batch_goes_on(tmp_path, three_clips,
                                                               monkeypatch, capsys, debug):
    fail_on(monkeypatch, "b.mp4", ValueError("avcodec_open2 refused\nthe size"))
    out, report = tmp_path / "out", tmp_path / "rep"
    code = main(["restore", *map(str, three_clips), "-o", str(out), "--identity",
                 "--report", str(report), *(["--debug"] if debug else [])])
    assert code == 1  # an internal failure
    assert (out / "a_restored.mp4").is_file() and (out / "c_restored.mp4").is_file()
    assert not (out / "b_restored.mp4").exists() and not leftovers(out)
    files = report_of(report)
    assert [f["status"] for f in files.values()] == ["done", "failed", "done"]
    b = files["b.mp4"]
    assert "b.mp4: internal error: ValueError: avcodec_open2 refused the size" in b["error"]
    assert "\n" not in b["error"]
    assert ("Traceback" in b["traceback"]) is debug
    csv_rows = report.with_name("rep.csv").read_text().splitlines()
    assert len(csv_rows) == 4 and "b.mp4" in csv_rows[2] and "failed" in csv_rows[2]
    err = capsys.readouterr().err
    assert "gpenvideo: error:" in err and "b.mp4: internal error" in err
    assert ("Traceback" in err) is debug
    assert ("--debug for the traceback" in err) is not debug


def test_a_single_failing_file_is_in_its_report(tmp_path, three_clips, monkeypatch, capsys):
    fail_on(monkeypatch, "a.mp4", RuntimeError("boom"))
    report = tmp_path / "one"
    code = main(["restore", str(three_clips[0]), "--identity", "--report", str(report)])
    assert code == 1
    assert report_of(report)["a.mp4"]["status"] == "failed"
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err


def test_ctrl_c_still_stops_the_batch(tmp_path, three_clips, monkeypatch):
    fail_on(monkeypatch, "b.mp4", KeyboardInterrupt())
    outcomes = []
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(batch.collect(three_clips, tmp_path / "out"), RestoreConfig(),
                        identity=True, on_done=outcomes.append)
    assert [o.status for o in outcomes] == ["done", "interrupted", "not started"]
    assert not (tmp_path / "out" / "c_restored.mp4").exists()


# -- item 5: filesystem failures ----------------------------------------------------------------

def refuse_writes_in(monkeypatch, folder: Path, code: int) -> None:
    """Make creating any file in `folder` fail with `code` (as a read-only folder does; the
    tests run as root, where chmod does not stop writes)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("where", ["output", "input"])
def test_a_read_only_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys, where):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = make_clip(src_dir / "film.mp4", frames=3, size=(64, 48))
    # an input folder that is read-only matters for the default output beside the input
    folder = out_dir if where == "output" else src_dir
    refuse_writes_in(monkeypatch, folder, errno.EROFS)
    args = ["-o", str(out_dir) + "/"] if where == "output" else []
    code = main(["restore", str(src), *args, "--identity"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"gpenvideo: error: {folder}: cannot write film_restored.mp4 in this "
                          "folder (Read-only file system)")
    assert "-o" in err and "lock" not in err and "partial" not in err
    assert sorted(os.listdir(src_dir)) == ["film.mp4"] and os.listdir(out_dir) == []


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(64, 48))
    real_mkdir = os.mkdir

    def refuse(path, *args, **kwargs):
        if Path(path).parent == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuse)
    assert main(["restore", str(src), "-o", str(tmp_path / "new" / "er") + "/",
                 "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpenvideo: error: {tmp_path / 'new'}: cannot create this output folder "
                   f"(Permission denied); make {tmp_path} writable or choose another output "
                   "folder with -o")
    assert sorted(os.listdir(tmp_path)) == ["film.mp4"]


def test_a_file_too_large_fails_that_file_only(tmp_path, capsys):
    """A real EFBIG (RLIMIT_FSIZE with SIGXFSZ ignored) in the middle of a segmented film."""
    noise = np.random.default_rng(0).integers(0, 256, (75, 144, 192, 3), dtype=np.uint8)
    big = make_clip(tmp_path / "big.mkv", frames=75, size=(192, 144), gop=10,
                    image_fn=lambda i: noise[i])
    small = make_clip(tmp_path / "small.mkv", frames=3, size=(32, 24))
    out = tmp_path / "out"
    limit = max(small.stat().st_size * 4, 100_000)
    assert big.stat().st_size > 3 * limit  # the first segment alone passes the limit
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        code = main(["restore", str(big), str(small), "-o", str(out), "--identity",
                     "--crf", "0", "--segment-seconds", "1", "--report",
                     str(tmp_path / "rep")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    files = report_of(tmp_path / "rep")
    assert code == 2
    assert files["small.mkv"]["status"] == "done" and (out / "small_restored.mkv").is_file()
    failed = files["big.mkv"]
    assert failed["status"] == "failed" and failed["exit_code"] == 2
    assert failed["error"].startswith(f"{out / 'big_restored.mkv'}: the file grew larger")
    assert "partial" not in failed["error"] and "seg-" not in failed["error"]
    assert not (out / "big_restored.mkv").exists() and not leftovers(out)
    assert "internal error" not in capsys.readouterr().err


def test_a_full_disk_at_the_manifest_leaves_no_output(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(64, 48))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, as os.write

    monkeypatch.setattr(manifest, "write_json_atomic", full)
    assert main(["restore", str(src), "--identity"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'film_restored.mp4'}: the disk is full" in err
    assert sorted(os.listdir(tmp_path)) == ["film.mp4"]


def test_errors_of_other_files_are_not_blamed_on_the_output(tmp_path):
    out = tmp_path / "o" / "x.mp4"
    src = tmp_path / "in.mp4"
    elsewhere = OSError(errno.EACCES, "Permission denied", "/root/.cache/model.pth")
    assert manifest.filesystem_error(elsewhere, src, out) is None
    unreadable = OSError(errno.EACCES, "Permission denied", str(src))
    assert "cannot read this file" in str(manifest.filesystem_error(unreadable, src, out))
    assert manifest.filesystem_error(OSError(errno.EINVAL, "x"), src, out) is None


# -- item 6: -o out/ ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out/", "restored", "deep/er/"])
def test_output_folder_is_created(tmp_path, name, capsys):
    src = make_clip(tmp_path / "film.avi", frames=3, size=(64, 48), codec="mpeg4")
    target = tmp_path / name
    assert main(["restore", str(src), "-o", str(target) + ("/" if name.endswith("/") else ""),
                 "--identity"]) == 0
    assert (target / "film_restored.mkv").is_file()


def test_a_failed_file_leaves_no_new_output_folder(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    assert main(["restore", str(bad), "-o", str(tmp_path / "new" / "er") + "/",
                 "--identity"]) == 2
    assert not (tmp_path / "new").exists()


def test_library_output_folder(tmp_path):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(64, 48))
    summary = segments.run(src, tmp_path / "made", RestoreConfig())
    assert Path(summary.output) == tmp_path / "made" / "film_restored.mp4"
    assert Path(summary.output).is_file()


# -- item 8: small things a user notices ---------------------------------------------------------

def test_opencv_says_nothing_when_the_detector_is_made(capfd):
    from gpenvideo.detector import create_detector

    weights = shared_file("weights")
    detector = create_detector(DetectConfig(), str(weights))
    detector.detect([np.zeros((64, 64, 3), np.uint8)])
    assert "WARN" not in capfd.readouterr().err


@pytest.mark.parametrize("argv, see", [
    ([], "see gpenvideo --help"),
    (["restore"], "see gpenvideo restore --help"),
    (["weights", "list", "--bogus"], "see gpenvideo weights list --help"),
])
def test_usage_errors_point_at_the_right_help(capsys, argv, see):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.endswith(f"({see})")


@pytest.mark.parametrize("option", ["--max-faces", "--min-face-size", "--batch-size"])
def test_negative_counts_are_refused(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["restore", str(tmp_path / "x.mp4"), option, "-1"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"argument {option}: -1 is not valid: give 0 or more" in err


@pytest.mark.parametrize("several", [False, True])
def test_the_mkv_note_is_printed_once_for_single_files_and_batches(tmp_path, capsys, several):
    clips = [make_clip(tmp_path / f"{n}.avi", frames=3, size=(64, 48), codec="mpeg4")
             for n in ("a", "b")[:1 + several]]
    assert main(["restore", *map(str, clips), "--identity"]) == 0
    out = capsys.readouterr()
    for clip in clips:
        note = f"writing {clip.stem}_restored.mkv: gpenvideo writes MKV, MP4 or MOV, not .avi"
        assert out.err.count(note) == 1 and note not in out.out  # said once, as it starts
        assert (tmp_path / f"{clip.stem}_restored.mkv").is_file()
    doc = json.loads(manifest.manifest_path(tmp_path / "a_restored.mkv").read_text())
    assert any("MKV holds every stream" in w for w in doc["summary"]["warnings"])


def test_progress_after_a_resume_counts_only_frames_rendered_now(tmp_path):
    src = make_clip(tmp_path / "film.mp4", seconds=4, size=(64, 48), gop=25)
    out = tmp_path / "out.mp4"
    cfg = RestoreConfig().replace("pipeline", segment_seconds=1)

    def stop_after_a_segment(p: engine.Progress) -> None:
        if p.frames_done > 25:  # during or after the second segment
            raise KeyboardInterrupt

    with pytest.raises(Exception, match="interrupted"):
        segments.run(src, out, cfg, progress=stop_after_a_segment)
    work = segments.WorkFolder(out)
    resumed = sum(json.loads(f.read_text())["frames"] for f in work.path.glob("seg-*.json"))
    assert 25 <= resumed < 100

    seen: list[engine.Progress] = []
    summary = segments.run(src, out, cfg, progress=seen.append)
    assert summary.frames == 100 and summary.frames_resumed == resumed
    assert summary.fps == pytest.approx((100 - resumed) / summary.seconds)
    assert all(p.frames_resumed == resumed for p in seen)
    last = seen[-1]
    assert last.frames_done == 100
    assert last.fps == pytest.approx((100 - resumed) / last.elapsed)
    early = engine.Progress(frames_done=60, frames_total=100, elapsed=2.0, frames_resumed=50)
    assert early.fps == 5.0 and early.eta == 8.0  # not 30 fps and 1.3 s
    assert engine.Progress(50, 100, 1.0, frames_resumed=50).eta is None


def test_the_line_after_a_resume_says_what_was_reused_and_what_this_run_rendered(
        tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "film.mp4", seconds=4, size=(64, 48), gop=25)
    out = tmp_path / "out.mp4"
    args = ["restore", str(src), "-o", str(out), "--identity", "--segment-seconds", "1"]
    real, calls = segments.render_segment, []

    def stop_at_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(segments, "render_segment", stop_at_the_third)
    assert main(args) == 130
    monkeypatch.setattr(segments, "render_segment", real)
    kept = sorted(segments.WorkFolder(out).path.glob("seg-*.json"))
    reused = sum(json.loads(f.read_text())["frames"] for f in kept)
    assert len(kept) == 2 and 25 <= reused < 100
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wrote"))
    match = re.search(r": 100 frames, .*, 2 of 4 segments reused from an earlier run, the "
                      r"other (\d+) frames rendered in [\d.]+ s, set-up included "
                      r"\([\d.]+ fps\)", line)
    assert match, line
    assert int(match[1]) == 100 - reused  # the frames the fps counts
    doc = json.loads(manifest.manifest_path(out).read_text())["summary"]
    assert doc["segments_resumed"] == 2 and doc["frames_resumed"] == reused
    table = batch.summary_table([batch.Outcome(input=str(src), output=str(out), status="done",
                                               frames=100, frames_resumed=reused, seconds=2.0,
                                               fps=(100 - reused) / 2.0)])
    assert f"100 ({reused} reused)" in table  # the batch table says it too


def test_the_time_and_fps_of_a_file_come_from_one_clock(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=20, size=(64, 48))
    real = segments.prepare

    def slow_prepare(*args, **kwargs):  # set-up (opening, probing) that takes a while
        time.sleep(0.6)
        return real(*args, **kwargs)

    monkeypatch.setattr(segments, "prepare", slow_prepare)
    out, report = tmp_path / "out.mp4", tmp_path / "rep"
    assert main(["restore", str(src), "-o", str(out), "--identity",
                 "--report", str(report)]) == 0
    row = report_of(report)["film.mp4"]
    sidecar = json.loads(manifest.manifest_path(out).read_text())["summary"]
    assert row["seconds"] == sidecar["seconds"] >= 0.6  # the set-up is in the time
    assert row["fps"] == pytest.approx(20 / row["seconds"], rel=0.01)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wrote"))
    assert f"{row['seconds']:.1f} s, set-up included ({row['fps']:.1f} fps)" in line


SLOW_RUN = """
import sys, time
from gpenvideo.media import encode as encoder
from gpenvideo.cli import main
mux = encoder.Encoder._mux_video
def slow(self, packets):  # slow muxing: the partial file exists for a while
    for packet in packets:
        time.sleep(0.03)
        mux(self, [packet])
encoder.Encoder._mux_video = slow
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_like_ctrl_c(tmp_path):
    src = make_clip(tmp_path / "film.mp4", seconds=3, size=(64, 48), gop=25)
    out = tmp_path / "out.mp4"
    work = segments.WorkFolder(out).path
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, "restore", str(src), "-o", str(out), "--identity",
         "--segment-seconds", "1", "--quiet"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # in the middle of the second segment: the first is finished, the second partly written
    while not (list(work.glob(".seg-00001.partial-*")) and child.poll() is None):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpenvideo: stopped by SIGTERM")
    assert sorted(p.name for p in work.iterdir()) == ["plan.json", "seg-00000.json",
                                                      "seg-00000.mov"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [work.name]
    assert not out.exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_stale_partial_files_of_killed_runs_are_removed(tmp_path):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(64, 48))
    target = tmp_path / "film_restored.mp4"
    live, dead = os.getppid(), dead_pid()
    stale = [tmp_path / f".film_restored.partial-{dead}.mp4",
             tmp_path / f".film_restored.partial-{dead}.mp4.video.mov",  # --encoder ffmpeg's
             tmp_path / f".film_restored.mp4.gpenvideo.json.partial-{dead}"]
    running = [tmp_path / f".film_restored.partial-{live}.mp4",
               tmp_path / f".film_restored.partial-{live}.mp4.video.mov"]
    others = [tmp_path / f".film_restored.partial-{dead}.mkv",  # another output's
              tmp_path / f".film_restored.partial-{dead}.mkv.video.mov",
              tmp_path / f".film_restored.partial-{dead}x.mp4.video.mov"]  # not a pid
    for path in [*stale, *running, *others]:
        path.write_bytes(b"x")

    segments.run(src, target, RestoreConfig())  # no lock: only dead processes' files
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in running + others)

    # under the output's lock (as every CLI run is) no other run can be writing it
    outcomes = batch.run_batch(batch.collect([src], None), RestoreConfig(), identity=True,
                               overwrite=True)
    assert outcomes[0].status == "done"
    assert not any(p.exists() for p in running) and all(p.exists() for p in others)


# -- new-user trial -------------------------------------------------------------------------------

def test_several_inputs_with_a_file_name_as_output_are_refused(tmp_path, capsys):
    a, b = (make_clip(tmp_path / f"{n}.mp4", frames=3, size=(32, 24)) for n in "ab")
    assert main(["restore", str(a), str(b), "-o", str(tmp_path / "one.mp4"), "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "several inputs need an output folder" in err
    assert f"-o {tmp_path / 'one'}/" in err and not (tmp_path / "one.mp4").exists()
    (tmp_path / "dir.mp4").mkdir()  # an existing folder of such a name is fine
    assert main(["restore", str(a), str(b), "-o", str(tmp_path / "dir.mp4"), "--identity",
                 "-q"]) == 0
    assert (tmp_path / "dir.mp4" / "b_restored.mp4").is_file()


@pytest.mark.parametrize("line, words", [
    ('[track]\nramp_frames = "five"', "[track] ramp_frames = 'five' is not valid: give a whole"),
    ("[composite]\nstrength = 7", "[composite] strength = 7.0 is not valid: give 0 to 1"),
    ("[pipeline]\nresume = 1", "[pipeline] resume = 1 is not valid: give true or false"),
    ('[select]\nfaces = [1, "x"]', "[select] faces = [1, 'x'] is not valid: give a list"),
])
def test_a_bad_value_in_a_config_file_names_the_file_and_key(tmp_path, capsys, line, words):
    config = tmp_path / "my.toml"
    config.write_text(line + "\n")
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    assert main(["restore", str(src), "--config", str(config), "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpenvideo: error: {config}: {words}") and "\n" not in err
    assert sorted(os.listdir(tmp_path)) == ["film.mp4", "my.toml"]


def test_restore_help_gives_the_default_strength_of_every_model(capsys):
    from gpenvideo.models import weights

    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    known = weights.known_weights()
    assert "0.8 for gpen-bfr-2048, 1 for the other models and for --weights" in text
    assert known["gpen-bfr-2048"].strength == 0.8
    assert {e.strength for name, e in known.items() if name != "gpen-bfr-2048"} == {1.0}


def test_config_files_take_ints_for_floats_and_the_default_file_loads(tmp_path):
    from gpenvideo.config import load_config

    assert load_config(ROOT / "configs" / "default.toml") == RestoreConfig()
    config = tmp_path / "my.toml"
    config.write_text("[pipeline]\nsegment_seconds = 30\n[composite]\nstrength = 1\n")
    cfg = load_config(config)
    assert cfg.pipeline.segment_seconds == 30 and cfg.composite.strength == 1
    assert isinstance(cfg.composite.strength, float)


def test_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch, capsys):
    from gpenvideo.config import load_config

    (tmp_path / "tiny64.pth").write_bytes(b"a checkpoint")
    (tmp_path / "cf" / "models").mkdir(parents=True)
    config = tmp_path / "cf" / "my.toml"
    config.write_text('[model]\nweights = "../tiny64.pth"\nweights_dir = "models"\n')
    elsewhere = tmp_path / "here"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # ../tiny64.pth from here is not there
    cfg = load_config(config)
    assert Path(cfg.model.weights) == (tmp_path / "tiny64.pth").resolve()
    assert Path(cfg.model.weights_dir) == (tmp_path / "cf" / "models").resolve()
    assert load_config(Path("..") / "cf" / "my.toml") == cfg  # however the config is named

    config.write_text('[model]\nweights = "tiny64.pth"\n')  # not in cf/
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    assert main(["restore", str(src), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpenvideo: error: {config}: [model] weights = 'tiny64.pth': no such "
                          f"file ({(tmp_path / 'cf' / 'tiny64.pth').resolve()}, relative to the "
                          "config's folder)")
    assert "\n" not in err and sorted(os.listdir(tmp_path / "cf")) == ["models", "my.toml"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_proc_is_one_line_naming_the_folder(tmp_path, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    assert main(["restore", str(src), "-o", "/proc/x.mp4", "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpenvideo: error: /proc: cannot write x.mp4 in this folder")
    assert "internal" not in err and ".lock" not in err and "\n" not in err


def test_the_missing_folders_of_a_named_output_file_are_made_and_removed_on_failure(tmp_path):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    target = tmp_path / "out" / "deep" / "flash.mkv"
    assert main(["restore", str(src), "-o", str(target), "--identity", "-q"]) == 0
    assert target.is_file()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    assert main(["restore", str(bad), "-o", str(tmp_path / "new" / "er" / "x.mkv"),
                 "--identity"]) == 2
    assert not (tmp_path / "new").exists()
    assert main(["restore", str(src), "-o", str(src / "x.mkv"), "--identity"]) == 2


def test_ctrl_c_removes_the_output_folders_the_run_made(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    (tmp_path / "kept").mkdir()
    fail_on(monkeypatch, "film.mp4", KeyboardInterrupt())  # as SIGTERM's handler raises it
    assert main(["restore", str(src), "-o", str(tmp_path / "kept" / "new" / "er/"),
                 "--identity"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mp4", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []  # the folder that was there stays


@pytest.mark.parametrize("problem", ["no checkpoint", "no cuda"])
def test_a_model_problem_is_said_before_the_output_exists(tmp_path, problem, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    if problem == "no checkpoint":
        weights = tmp_path / "notes.pth"
        weights.write_text("not a checkpoint\n")
        extra, expected = [], "notes.pth: not a PyTorch checkpoint"
    else:
        weights = tiny_gpen(tmp_path)
        extra, expected = ["--device", "cuda"], "--device cuda: no CUDA GPU is usable here"
        if __import__("torch").cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    assert main(["restore", str(src), "-o", str(out), "--weights", str(weights),
                 "--weights-dir", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "already exists" not in err and "\n" not in err
    assert out.read_bytes() == b"keep me"


def test_faces_and_skip_faces_naming_one_track_are_refused(tmp_path, capsys):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    assert main(["restore", str(src), "--faces", "1,2", "--skip-faces", "2", "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gpenvideo: error: --faces and --skip-faces both name track 2: give each "
                   "track to one of them only")
    assert sorted(os.listdir(tmp_path)) == ["film.mp4"]


def test_unseen_track_notes():
    cfg = RestoreConfig().replace("select", faces=(5,), skip_faces=(2,))
    rows = [{"track": 1}, {"track": 2}]
    assert segments.unseen_track_notes(cfg, rows) == [
        "track 5 was not found; the film has tracks 1-2 (see gpenvideo track)"]
    cfg = RestoreConfig().replace("select", faces=(3, 4))
    assert segments.unseen_track_notes(cfg, [{"track": 1}, {"track": 5}]) == [
        "tracks 3, 4 were not found; the film has tracks 1, 5 (see gpenvideo track)"]
    assert segments.unseen_track_notes(cfg, []) == [
        "tracks 3, 4 were not found; the film has no face tracks (see gpenvideo track)"]
    assert segments.unseen_track_notes(cfg, [{"track": 3}, {"track": 4}]) == []


def test_a_track_choice_that_selects_nothing_is_noted(tmp_path, capsys):
    with Decoder(shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")) as dec:
        pictures = [cv2.resize(f.image, (160, 160), interpolation=cv2.INTER_AREA)
                    for f, _ in zip(dec.frames(), range(6))]
    src = make_clip(tmp_path / "film.mp4", frames=6, size=(160, 160), image_fn=pictures.__getitem__)
    report = tmp_path / "rep"
    code = main(["restore", str(src), "--faces", "5", "--weights", str(tiny_gpen(tmp_path)),
                 "--weights-dir", str(shared_file("weights")), "--report", str(report)])
    assert code == 0
    note = "track 5 was not found; the film has track 1 (see gpenvideo track)"
    assert f"note: {note}" in capsys.readouterr().out
    assert note in report_of(report)["film.mp4"]["warnings"]


@pytest.mark.parametrize("codec, name, remedy", [
    ("prores_ks", "pr.mp4", "name the output .mov or .mkv"),
    ("ffv1", "pr.mov", "name the output .mp4, .m4v or .mkv"),
    ("libsvtav1", "av.mov", "name the output .mp4, .m4v or .mkv"),  # mov lists AV1, refuses it
])
def test_a_codec_the_container_cannot_hold_is_refused_before_any_work(tmp_path, capsys,
                                                                      monkeypatch, codec,
                                                                      name, remedy):
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    started = []
    monkeypatch.setattr(segments, "execute", lambda *a, **k: started.append(1))
    target = tmp_path / "out" / name
    assert main(["restore", str(src), "--codec", codec, "-o", str(target), "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpenvideo: error: {target}: the {target.suffix} container cannot hold "
                   f"{codec} video; {remedy}")
    assert not started and sorted(os.listdir(tmp_path)) == ["film.mp4"]


def test_a_batch_stopped_by_ctrl_c_lists_the_interrupted_file(tmp_path, three_clips,
                                                              monkeypatch, capsys):
    fail_on(monkeypatch, "b.mp4", KeyboardInterrupt())
    report = tmp_path / "rep"
    code = main(["restore", *map(str, three_clips), "-o", str(tmp_path / "out"), "--identity",
                 "--report", str(report)])
    assert code == 130
    files = report_of(report)
    assert [(n, f["status"]) for n, f in files.items()] == [
        ("a.mp4", "done"), ("b.mp4", "interrupted"), ("c.mp4", "not started")]
    assert files["b.mp4"]["output"] == str(tmp_path / "out" / "b_restored.mp4")
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("interrupted"))
    assert row.split() == ["interrupted", "0", "0", "0", "-", "-", str(three_clips[1])]
    assert "1 done, 1 interrupted, 1 not started" in table
    assert json.loads(report.with_name("rep.json").read_text())["totals"]["interrupted"] == 1


def test_a_batch_stopped_in_its_first_file_writes_nothing_beside_the_inputs(
        tmp_path, three_clips, monkeypatch, capsys):
    here = tmp_path / "here"  # the current folder
    here.mkdir()
    monkeypatch.chdir(here)
    before = sorted(os.listdir(tmp_path))
    fail_on(monkeypatch, "a.mp4", KeyboardInterrupt())
    out = tmp_path / "batchdir"
    assert main(["restore", *map(str, three_clips), "-o", f"{out}/", "--identity"]) == 130
    assert not out.exists()  # made by the run, left empty: removed
    assert sorted(os.listdir(tmp_path)) == before  # the inputs' folder is not written to
    reports = sorted(p.name for p in here.iterdir())
    assert len(reports) == 2 and all(n.startswith("gpenvideo-report-") for n in reports)
    stdout = capsys.readouterr().out
    assert f"report: {here / reports[1]}" in stdout  # .json, named where the user finds it
    files = report_of(here / Path(reports[1]).stem)
    assert [(n, f["status"]) for n, f in files.items()] == [
        ("a.mp4", "interrupted"), ("b.mp4", "not started"), ("c.mp4", "not started")]
    assert "1 interrupted, 2 not started" in stdout


def test_a_failed_row_names_the_file_once(tmp_path, three_clips, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["restore", str(three_clips[0]), str(empty), "-o", str(tmp_path / "out"),
                 "--identity"]) == 2
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("failed"))
    assert row.count("empty.mp4") == 1 and f"{empty}: the file is empty" in row


def test_the_report_of_a_cut_off_file_has_the_duration_written(tmp_path):
    whole = make_clip(tmp_path / "whole.mkv", frames=75, size=(64, 48))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) * 45 // 100])
    whole.unlink()
    report = tmp_path / "rep"
    assert main(["restore", str(cut), "-o", str(tmp_path / "out") + "/", "--identity",
                 "--report", str(report)]) == 0
    row = report_of(report)["cut.mkv"]
    assert 10 < row["frames"] < 60
    assert row["duration"] == pytest.approx(row["frames"] / 25, abs=0.05)  # not the 3.0 claimed


def test_ray_with_a_track_choice_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch):
    from gpenvideo import distributed

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(distributed, "RayExecutor", no_ray)
    src = make_clip(tmp_path / "film.mp4", frames=3, size=(32, 24))
    assert main(["restore", str(src), "--ray", "--faces", "1", "--identity"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpenvideo: error: --faces/--skip-faces name whole-film track ids")
    assert "Ray was started" not in err and sorted(os.listdir(tmp_path)) == ["film.mp4"]


def test_a_closed_pipe_on_stdout_ends_quietly(monkeypatch, capsys):
    """`gpenvideo weights list | head -1`: the reader goes away; exit 141 and say nothing."""
    read, write = os.pipe()
    os.close(read)
    with open(write, "w", buffering=1) as pipe:  # line-buffered: each print writes
        monkeypatch.setattr(sys, "stdout", pipe)
        code = main(["weights", "list"])
        monkeypatch.undo()
    assert code == 141
    assert capsys.readouterr().err == ""


def test_a_muxer_failure_names_the_users_output_not_the_hidden_file(tmp_path, monkeypatch,
                                                                    capsys):
    # FFmpeg's errors name the file being written, which is our hidden `.NAME.partial-PID.EXT`
    import av

    from gpenvideo.media import encode

    close = encode.Encoder._close_containers

    def failing_close(self):
        close(self)
        raise av.error.ArgumentError(22, "Invalid argument", str(self.path))

    monkeypatch.setattr(encode.Encoder, "_close_containers", failing_close)
    src = make_clip(tmp_path / "film.mp4", frames=5)
    out = tmp_path / "film_restored.mov"
    assert main(["restore", str(src), "--identity", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "Invalid argument" in err
    assert ".partial" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mp4"]
