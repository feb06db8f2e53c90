"""GPEN: exactness against the golden vectors, checkpoint loading and config inference,
batched inference, and weights management against a local HTTP server."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_file

from gpenvideo.cli import main
from gpenvideo.errors import GpenVideoError, WeightsError
from gpenvideo.models import weights
from gpenvideo.models.gpen import GPEN, GPENConfig
from gpenvideo.models.runner import GPENRunner, from_bgr_uint8, to_bgr_uint8

GOLDEN = ["gpen_tiny64", "gpen_tiny128"]


def golden(name: str) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    data = np.load(shared_file("gpen", f"{name}.npz"))
    arrays = {k: data[k] for k in data.files}
    sd = {k.removeprefix("param/"): torch.from_numpy(v) for k, v in arrays.items()
          if k.startswith("param/")}
    return arrays, sd


@pytest.mark.parametrize("name", GOLDEN)
def test_output_and_latent_match_the_official_network(name):
    arrays, sd = golden(name)
    model = weights.load_gpen(sd)
    meta = json.loads(shared_file("gpen", f"{name}.json").read_text())
    assert model.cfg.size == meta["config"]["size"]
    assert model.cfg.narrow == meta["config"]["narrow"]
    with torch.inference_mode():
        out, latent = model(torch.from_numpy(arrays["input"]), return_latents=True)
    assert (out - torch.from_numpy(arrays["output"])).abs().max().item() < 1e-4
    assert (latent - torch.from_numpy(arrays["latent"])).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", GOLDEN)
def test_uint8_pre_and_post_processing_match_the_official_conversion(name):
    arrays, sd = golden(name)
    x = from_bgr_uint8(arrays["crop_bgr_u8"][None], torch.device("cpu"))
    assert torch.allclose(x[0], torch.from_numpy(arrays["input"][0]), atol=1e-6)
    # the official conversion truncates; ours rounds, so each pixel is the same or one higher
    ours = to_bgr_uint8(torch.from_numpy(arrays["output"][:1]))[0].astype(int)
    diff = ours - arrays["restored_bgr_u8"].astype(int)
    assert diff.min() >= 0 and diff.max() <= 1 and diff.any()


def test_runner_restores_uint8_batches_and_splits_them():
    arrays, sd = golden("gpen_tiny64")
    runner = GPENRunner(weights.load_gpen(sd), "cpu", batch_size=1)
    crops = np.stack([arrays["crop_bgr_u8"]] * 3)
    out = runner.restore(crops)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
    expected = to_bgr_uint8(torch.from_numpy(arrays["output"][:1]))[0]
    for face in out:
        assert np.abs(face.astype(int) - expected.astype(int)).max() <= 1


def test_out_of_memory_halves_the_batch_and_retries(caplog):
    arrays, sd = golden("gpen_tiny64")
    runner = GPENRunner(weights.load_gpen(sd), "cpu", batch_size=8)
    network, sizes = runner.forward, []

    def tight(x):  # a device that fits at most two faces at a time
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return network(x)

    runner.forward = tight
    x = torch.from_numpy(np.concatenate([arrays["input"]] * 5))
    out = runner.run_tensor(x)
    n = len(x)
    assert sizes == [8, 4] + [2] * (n // 2) + [1] * (n % 2) and runner.batch_size == 2
    assert "batch size lowered to 2" in caplog.text
    expected = torch.from_numpy(np.concatenate([arrays["output"]] * 5))
    assert (out - expected).abs().max().item() < 1e-4  # every face, none lost or repeated

    runner.forward = lambda x: (_ for _ in ()).throw(torch.OutOfMemoryError("simulated"))
    with pytest.raises(GpenVideoError, match="does not fit in GPU memory"):
        runner.run_tensor(x, batch_size=1)


def test_half_precision_on_cpu_falls_back_with_a_warning(caplog):
    _, sd = golden("gpen_tiny64")
    runner = GPENRunner(weights.load_gpen(sd), "cpu", precision="fp16")
    assert runner.dtype == torch.float32
    assert "fp32" in caplog.text


@pytest.mark.parametrize("size", [256, 512, 1024, 2048])
def test_released_manifests_load_and_give_their_config(size):
    manifest = json.loads(shared_file("gpen", f"gpen_bfr_{size}_state_dict.json").read_text())
    sd = {k: torch.empty(shape, device="meta") for k, shape, _ in manifest["state_dict"]}
    cfg = weights.infer_config(sd)
    expected = manifest["config"]
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channel_multiplier, cfg.narrow) == (
        expected["size"], expected["style_dim"], expected["n_mlp"],
        expected["channel_multiplier"], expected["narrow"])
    weights.check_state_dict(sd, cfg)
    assert weights.describe(cfg) == f"GPEN-BFR-{size}"
    with torch.device("meta"):
        model = GPEN(cfg)
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]
    assert list(model.state_dict()) == [k for k, _, _ in manifest["state_dict"]]


def small_state_dict(size: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return GPEN(GPENConfig(size=size, style_dim=8, n_mlp=1, narrow=1 / 64)).state_dict()


def test_checkpoint_forms_all_load(tmp_path):
    sd = small_state_dict()
    forms = {"flat.pth": sd, "module.pt": {f"module.{k}": v for k, v in sd.items()},
             "train.pth": {"g_ema": sd, "step": torch.tensor(3)}}
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        model = weights.load_gpen(tmp_path / name)
        assert model.cfg.size == 16 and not model.training


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing key 'generator.to_rgb1.bias'"),
    ("extra", "unexpected key 'generator.extra'"),
    ("shape", "key 'generator.conv1.conv.weight' has shape"),
])
def test_bad_checkpoints_are_refused_naming_the_key(tmp_path, damage, message):
    sd = small_state_dict()
    if damage == "missing":
        del sd["generator.to_rgb1.bias"]
    elif damage == "extra":
        sd["generator.extra"] = torch.zeros(1)
    else:
        sd["generator.conv1.conv.weight"] = torch.zeros(1, 2, 3, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=message):
        weights.load_gpen(tmp_path / "bad.pth")


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        weights.load_gpen(path)


def test_weights_verify_cli(tmp_path, capsys):
    torch.save(small_state_dict(32), tmp_path / "g.pth")
    assert main(["weights", "verify", str(tmp_path / "g.pth")]) == 0
    assert "GPEN-32" in capsys.readouterr().out
    (tmp_path / "bad.pth").write_bytes(b"junk")
    assert main(["weights", "verify", str(tmp_path / "bad.pth")]) == 2
    assert "bad.pth" in capsys.readouterr().err


def test_missing_model_error_names_folders_and_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GPENVIDEO_WEIGHTS", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "REPO_WEIGHTS", tmp_path / "repo")
    with pytest.raises(WeightsError) as exc:
        weights.find("gpen-bfr-2048", tmp_path / "mine")
    text = str(exc.value)
    assert "GPEN-BFR-2048.pt" in text and str(tmp_path / "mine") in text
    assert str(tmp_path / "env") in text and "gpenvideo weights fetch gpen-bfr-2048" in text


# --------------------------------------------------------------------------- downloads


class _Server:
    """Serves files from a dict on 127.0.0.1 with HTTP Range support; `cut` makes the first
    response of a path stop after that many bytes (a broken transfer)."""

    def __init__(self, files: dict[str, bytes], cut: int | None = None) -> None:
        self.files, self.cut, self.requests = files, cut, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                server.requests.append((self.path, self.headers.get("Range")))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[:server.cut], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def checkpoint_bytes(tmp_path: Path, size: int = 32) -> bytes:
    torch.save(small_state_dict(size), tmp_path / "src.pth")
    return (tmp_path / "src.pth").read_bytes()


@pytest.fixture
def fake_registry(monkeypatch):
    """Registry entries pointing at whatever the test serves, with a checksum to pin."""
    def install(sha: str | None, size: int = 32):
        table = {"gpen-test": weights.KnownWeights("gpen-test", "GPEN-TEST.pth", "gpen", (),
                                                   sha256=sha, size=size)}
        monkeypatch.setattr(weights, "known_weights", lambda: table)
    return install


def test_fetch_downloads_verifies_and_moves_into_place(tmp_path, fake_registry):
    data = checkpoint_bytes(tmp_path)
    fake_registry(hashlib.sha256(data).hexdigest())
    with _Server({"/g.pth": data}) as srv:
        path = weights.fetch("gpen-test", tmp_path / "w", urls=[f"{srv.url}/g.pth"])
    assert path == tmp_path / "w" / "GPEN-TEST.pth" and path.read_bytes() == data
    assert not list((tmp_path / "w").glob("*.part"))


def test_fetch_resumes_a_broken_transfer(tmp_path, fake_registry):
    data = checkpoint_bytes(tmp_path)
    fake_registry(hashlib.sha256(data).hexdigest())
    with _Server({"/g.pth": data}, cut=len(data) // 3) as srv:
        url = f"{srv.url}/g.pth"
        with pytest.raises(WeightsError):  # the first attempt breaks off
            weights.fetch("gpen-test", tmp_path / "w", urls=[url])
        part = tmp_path / "w" / "GPEN-TEST.pth.part"
        assert part.stat().st_size == len(data) // 3
        path = weights.fetch("gpen-test", tmp_path / "w", urls=[url])
        assert srv.requests[-1] == ("/g.pth", f"bytes={len(data) // 3}-")
    assert path.read_bytes() == data


def test_fetch_refuses_a_wrong_checksum(tmp_path, fake_registry):
    data = checkpoint_bytes(tmp_path)
    fake_registry("0" * 64)
    with _Server({"/g.pth": data}) as srv, pytest.raises(WeightsError, match="sha256"):
        weights.fetch("gpen-test", tmp_path / "w", urls=[f"{srv.url}/g.pth"])
    assert not (tmp_path / "w" / "GPEN-TEST.pth").exists()
    assert not list((tmp_path / "w").glob("*.part"))


def test_fetch_refuses_a_file_that_is_not_a_checkpoint(tmp_path, fake_registry):
    fake_registry(None)
    with _Server({"/g.pth": b"<html>not found</html>"}) as srv, \
            pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        weights.fetch("gpen-test", tmp_path / "w", urls=[f"{srv.url}/g.pth"])
    assert not (tmp_path / "w" / "GPEN-TEST.pth").exists()


def test_fetch_cli_with_a_local_source(tmp_path, fake_registry, capsys):
    data = checkpoint_bytes(tmp_path)
    fake_registry(None)
    with _Server({"/g.pth": data}) as srv:
        code = main(["weights", "fetch", "gpen-test", "--weights-dir", str(tmp_path / "w"),
                     "--url", f"{srv.url}/g.pth"])
    assert code == 0 and (tmp_path / "w" / "GPEN-TEST.pth").read_bytes() == data
    assert hashlib.sha256(data).hexdigest() in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 0.1), ("bf16", 0.2)])
def test_golden_on_gpu(precision, tol):
    arrays, sd = golden("gpen_tiny128")
    runner = GPENRunner(weights.load_gpen(sd), "cuda", precision=precision)
    out = runner.run_tensor(torch.from_numpy(arrays["input"])).cpu()
    assert (out - torch.from_numpy(arrays["output"])).abs().max().item() < tol


@pytest.mark.gpu
def test_batch_size_is_chosen_from_free_gpu_memory():
    arrays, sd = golden("gpen_tiny128")
    runner = GPENRunner(weights.load_gpen(sd), "cuda", precision="fp16")
    assert runner.batch_size >= 1
    crops = np.stack([arrays["crop_bgr_u8"]] * (runner.batch_size + 1))
    assert runner.restore(crops).shape == crops.shape
