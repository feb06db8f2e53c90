"""Same input + settings -> same bytes, whatever the thread count, the machine's load or how the
run was cut into segments and resumed (issue 12 item 4, issue 17 item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from clips import make_clip
from conftest import shared_file, tiny_gpen

from gpenvideo import segments, threads
from gpenvideo.cli import main
from gpenvideo.media import heap
from gpenvideo.models.runner import GPENRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_runner(tmp_path_factory) -> GPENRunner:
    from gpenvideo.models.weights import load_gpen

    return GPENRunner(load_gpen(tiny_gpen(tmp_path_factory.mktemp("w"))), "cpu")


def test_gpen_output_is_the_same_on_any_thread_count(tiny_runner):
    # PyTorch runs 1x1 convolutions through another kernel on one thread (1e-7 apart), which
    # made a --threads 1 run (or a Ray worker) differ from a default one in every packet
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(tiny_runner.run_tensor(x))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_a_face_comes_out_the_same_however_faces_are_grouped(tiny_runner):
    # frames of one face each are gathered into calls; segments and resumed runs group them
    # differently, and a convolution's result depends on the batch shape
    runner = GPENRunner(tiny_runner.model, "cpu", batch_size=3)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    together = runner.run_tensor(x)  # calls of 3 + 1 (padded to 3)
    alone = torch.cat([runner.run_tensor(x[i:i + 1]) for i in range(4)])  # each padded to 3
    shifted = runner.run_tensor(torch.cat([x[2:], x[:2]]))  # other neighbours in each call
    assert together.shape == (4, 3, 64, 64)
    assert torch.equal(together, alone)
    assert torch.equal(together, torch.cat([shifted[2:], shifted[:2]]))


def test_thread_plan_follows_the_cores_and_the_option():
    assert threads.plan(0, cores=6) == threads.ThreadPlan(torch=6, opencv=6)
    assert threads.plan(3, cores=64) == threads.ThreadPlan(torch=3, opencv=3)
    assert threads.plan(0, cores=128).torch == threads.MAX_TORCH_THREADS
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)
    with pytest.raises(ValueError):
        threads.plan(-1)
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["MKL_DYNAMIC"] == "FALSE"  # user wins


def test_the_cli_sets_the_wait_policy_before_torch_loads():
    code = "import os, gpenvideo.cli, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("PASSIVE")


# Whether malloc now fills fresh blocks with the perturb byte's complement (media.heap).
PERTURBED = """
import ctypes
def perturbed():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(4096)
    filled = ctypes.string_at(block, 4096) == bytes([0x5A ^ 0xFF]) * 4096
    libc.free(block)
    return filled
"""


def test_the_heap_is_made_deterministic_when_a_video_is_opened_not_at_import():
    code = PERTURBED + (
        "import gpenvideo, gpenvideo.cli, torch\n"
        "print(perturbed())\n"  # importing changes nothing in a library user's malloc
        "from gpenvideo.media import Decoder\n"
        f"with Decoder({str(ROOT / 'samples' / 'grace_hopper_homemovie.mp4')!r}):\n"
        "    print(perturbed())\n")  # every run opens its input first
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    if not heap.deterministic_heap():
        pytest.skip("no glibc mallopt here: the heap cannot be made deterministic")
    assert out == ["False", "True"]


def test_libx264_writes_the_same_packets_whatever_the_heap_held():
    # x264 in PyAV's FFmpeg reads memory it never wrote: encoding the same frames again in one
    # process gave other packets. Opening a video (Decoder, Encoder) makes fresh heap memory
    # deterministic; here the codec is used alone, so it is set by hand.
    from fractions import Fraction

    if not heap.deterministic_heap():
        pytest.skip("no glibc mallopt here: the heap cannot be made deterministic")

    with av.open(str(ROOT / "samples" / "grace_hopper_homemovie.mp4")) as c:
        frames = [f.to_ndarray(format="yuv420p") for _, f in zip(range(30), c.decode(video=0))]
    results, junk = set(), []
    for run in range(4):
        junk.append(np.random.bytes(50_000 * (run + 1)))  # the heap as other work leaves it
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = 320, 240, "yuv420p"
        cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
        cc.options = {"crf": "18", "preset": "medium"}
        cc.thread_count = 0
        out = []
        for i, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(a, format="yuv420p")
            frame.pts = i
            out += [bytes(p) for p in cc.encode(frame)]
        out += [bytes(p) for p in cc.encode(None)]
        results.add(b"".join(out))
    assert len(results) == 1


def film(path: Path, frames: int = 36) -> Path:
    """A 160 x 160, 12 fps film of the shared talking-head footage, a keyframe every 6 frames."""
    source = shared_file("media", "sadtalker_WDA_KatieHill_000.mp4")
    with av.open(str(source)) as c:
        images = [cv2.resize(f.to_ndarray(format="bgr24"), (160, 160), interpolation=cv2.INTER_AREA)
                  for _, f in zip(range(frames), c.decode(video=0))]
    return make_clip(path, frames=len(images), size=(160, 160), fps=12, gop=6,
                     image_fn=lambda i: images[i])


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def restore_args(clip: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["restore", str(clip), "-o", str(out), "--weights", str(ckpt),
            "--weights-dir", str(Path(shared_file("weights"))), "--segment-seconds", "1",
            "--quiet", *extra]


def restore_cmd(clip: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpenvideo", *restore_args(clip, out, ckpt, *extra)]


def busy_processes(count: int) -> list[subprocess.Popen]:
    """CPU-bound processes beside the run under test (the machine loaded by other jobs)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_segmented_film_is_the_same_under_load_with_other_threads_and_after_kill_9(tmp_path):
    clip = film(tmp_path / "film.mp4", frames=30)  # three segments of one second
    ckpt = tiny_gpen(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    quiet = tmp_path / "quiet.mp4"  # the reference: no load, in this process
    pools = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert main(restore_args(clip, quiet, ckpt, "--threads", "2")) == 0
    finally:  # --threads sized this process's pools: give the other tests theirs back
        torch.set_num_threads(pools[0])
        cv2.setNumThreads(pools[1])

    out = tmp_path / "loaded.mp4"
    work = segments.WorkFolder(out).path
    load = busy_processes(2)
    try:
        child = subprocess.Popen(restore_cmd(clip, out, ckpt, "--threads", "1"), env=env)
        deadline = time.monotonic() + 240
        while not (work / "seg-00001.json").exists() and child.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert not out.exists() and sorted(work.glob("seg-*.json"))
        subprocess.run(restore_cmd(clip, out, ckpt, "--threads", "3", "--resume"), env=env,
                       check=True, timeout=600)
    finally:
        for p in load:
            p.kill()
            p.wait()
    a, b = video_packets(out), video_packets(quiet)
    assert len(a) == 30
    assert a == b  # bit for bit, every packet
    with av.open(str(out)) as c, av.open(str(clip)) as s:
        restored = next(c.decode(video=0)).to_ndarray(format="gray").astype(int)
        source = next(s.decode(video=0)).to_ndarray(format="gray").astype(int)
    assert np.abs(restored - source).max() > 20  # the faces were restored, not copied
