"""Known model files, where they are looked for, downloading them, and loading GPEN checkpoints.

A GPEN checkpoint's whole config is inferred from its keys and shapes, so any released file
(GPEN-BFR-256 to 2048) or test config loads without the user naming a config. Files load with
torch.load(weights_only=True): no code in a checkpoint is ever run.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..errors import WeightsError
from ..manifest import sha256_of
from .gpen import GPEN, GPENConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_WEIGHTS = "GPENVIDEO_WEIGHTS"
REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
CHUNK = 1 << 20  # download block size
TIMEOUT = 30  # seconds without data before a download attempt fails


@dataclass(frozen=True)
class KnownWeights:
    """One entry of data/weights.toml."""

    name: str  # e.g. gpen-bfr-2048
    file: str  # file name looked for in the weights folders
    kind: str  # gpen, onnx or torch
    urls: tuple[str, ...]  # download sources, tried in order
    sha256: str | None = None  # checked after download where known
    bytes: int | None = None  # expected size where known
    size: int | None = None  # GPEN resolution
    strength: float = 1.0  # default blend of restored and original face (GPEN models)

    @property
    def label(self) -> str:
        return self.name.upper() if self.kind == "gpen" else self.name


def known_weights() -> dict[str, KnownWeights]:
    """The registry in gpenvideo/data/weights.toml, by name."""
    text = resources.files("gpenvideo").joinpath("data/weights.toml").read_text("utf-8")
    out = {}
    for name, entry in tomllib.loads(text).items():
        out[name] = KnownWeights(name=name, file=entry["file"], kind=entry["kind"],
                                 urls=tuple(entry.get("urls", ())), sha256=entry.get("sha256"),
                                 bytes=entry.get("bytes"), size=entry.get("size"),
                                 strength=entry.get("strength", 1.0))
    return out


def lookup(name: str) -> KnownWeights:
    table = known_weights()
    key = name.lower()
    if key not in table:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(table)}")
    return table[key]


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpenvideo"


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for model files, in order: --weights-dir, $GPENVIDEO_WEIGHTS, the
    repository's weights/ folder, the user cache."""
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(ENV_WEIGHTS):
        dirs.append(Path(os.environ[ENV_WEIGHTS]))
    dirs += [REPO_WEIGHTS, user_cache()]
    return dirs


def find(name: str, weights_dir: str | Path | None = None) -> Path:
    """Path of a known model file. Raises WeightsError naming the folders searched and the
    command that fetches the file."""
    entry = lookup(name)
    dirs = search_dirs(weights_dir)
    for folder in dirs:
        if (folder / entry.file).is_file():
            return folder / entry.file
    where = ", ".join(str(d) for d in dirs)
    other = "pass --weights PATH" if entry.kind == "gpen" else \
        "pass --weights-dir DIR (a folder holding it)"
    raise WeightsError(f"{entry.file} ({entry.label}) not found in {where}; "
                       f"run `gpenvideo weights fetch {entry.name}` or {other}")


# --------------------------------------------------------------------------- GPEN checkpoints


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a flat state_dict, a `module.`-prefixed one, or a training
    checkpoint holding `g_ema`. Raises WeightsError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}); "
                           "fetch it again or give a GPEN .pth/.pt file") from exc
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, torch.Tensor]:
    for key in ("g_ema", "state_dict", "params_ema", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: holds no state_dict; give a GPEN checkpoint")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is not a tensor; give a GPEN checkpoint")
        out[key.removeprefix("module.")] = value
    return out


def infer_config(sd: Mapping[str, torch.Tensor], path: str | Path = "checkpoint") -> GPENConfig:
    """The GPENConfig a state_dict was made with, from its keys and shapes alone."""
    for key in ("generator.input.input", "generator.style.1.weight", "ecd0.0.0.weight",
                "generator.conv1.activate.bias"):
        if key not in sd:
            raise WeightsError(f"{path}: missing key {key!r}; this is not a GPEN checkpoint")
    encoder_layers = {int(m.group(1)) for k in sd if (m := re.match(r"ecd(\d+)\.", k))}
    size = 2 ** (len(encoder_layers) + 1)
    style_dim = sd["generator.style.1.weight"].shape[0]
    n_mlp = len({k for k in sd if re.fullmatch(r"generator\.style\.\d+\.weight", k)})
    ch4 = sd["generator.input.input"].shape[1]
    narrow = ch4 / 512
    channel_multiplier = 2
    if size >= 64:  # the multiplier only shows in layers of 64 px and above
        ch64 = sd["generator.convs.6.conv.weight"].shape[1]
        channel_multiplier = max(1, round(ch64 / (256 * narrow)))
    isconcat = sd["generator.conv1.activate.bias"].shape[0] == 2 * ch4
    try:
        return GPENConfig(size=size, style_dim=style_dim, n_mlp=n_mlp,
                          channel_multiplier=channel_multiplier, narrow=narrow,
                          isconcat=isconcat)
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from exc


def check_state_dict(sd: Mapping[str, torch.Tensor], cfg: GPENConfig,
                     path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Compare a state_dict with the network of `cfg`: every key and shape must match.

    Blur-kernel buffers, which are fixed by the architecture, are filled in where a checkpoint
    left them out. Returns the complete state_dict; raises WeightsError naming the first bad key.
    """
    with torch.device("meta"):
        expected = GPEN(cfg).state_dict()
    # blur kernels are filled in by the module's own buffer at load time
    compare_state_dict(sd, expected, path, f"GPEN-{cfg.size}",
                       optional=lambda key: key.endswith("kernel"))
    return dict(sd)


def compare_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                       path: str | Path, network: str, optional=lambda key: False) -> None:
    """Every key of `expected` (but the `optional` ones) in `sd` with its shape, and no other
    key. Raises WeightsError naming the first bad key and what `network` expects."""
    for key, tensor in expected.items():
        if key not in sd:
            if optional(key):
                continue
            raise WeightsError(f"{path}: missing key {key!r} (expected shape "
                               f"{tuple(tensor.shape)}); the checkpoint is not a complete "
                               f"{network}")
        if tuple(sd[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{path}: key {key!r} has shape {tuple(sd[key].shape)}, expected "
                               f"{tuple(tensor.shape)} for {network}")
    for key in sd:
        if key not in expected:
            raise WeightsError(f"{path}: unexpected key {key!r}; not a {network} checkpoint")


def describe(cfg: GPENConfig) -> str:
    """The released model a config is (e.g. GPEN-BFR-2048), or 'GPEN (custom ...)'."""
    released = {256: (1, 0.5), 512: (2, 1.0), 1024: (2, 1.0), 2048: (2, 1.0)}
    if released.get(cfg.size) == (cfg.channel_multiplier, cfg.narrow) and \
            (cfg.style_dim, cfg.n_mlp) == (512, 8):
        return f"GPEN-BFR-{cfg.size}"
    return f"GPEN-{cfg.size} (custom config)"


def load_gpen(checkpoint: str | Path | Mapping[str, torch.Tensor],
              device: str | torch.device = "cpu") -> GPEN:
    """Build a GPEN network from a checkpoint (path or state_dict) and return it in eval mode
    on `device`. Raises WeightsError for unreadable or mismatching checkpoints."""
    if isinstance(checkpoint, Mapping):
        path: str | Path = "state_dict"
        sd = unwrap_state_dict(checkpoint, path)
    else:
        path = Path(checkpoint)
        sd = read_state_dict(path)
    cfg = infer_config(sd, path)
    sd = check_state_dict(sd, cfg, path)
    model = GPEN(cfg)
    model.load_state_dict(sd, strict=False)  # every parameter was checked above
    return model.eval().requires_grad_(False).to(device)


def verify(path: str | Path) -> tuple[str, GPENConfig]:
    """(model name, config) of a GPEN checkpoint; raises WeightsError saying why it is not."""
    sd = read_state_dict(path)
    cfg = infer_config(sd, path)
    check_state_dict(sd, cfg, path)
    return describe(cfg), cfg


# --------------------------------------------------------------------------- downloads

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total or None)


def fetch(name: str, dest_dir: str | Path | None = None, *, urls: list[str] | None = None,
          progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Download a known model into `dest_dir` (default: the first writable search folder).

    A broken transfer resumes from the bytes already in `<file>.part` (HTTP Range). The file is
    checked (size, sha256 where known, strict load for GPEN) before it is moved into place
    atomically. Raises WeightsError when every source fails or the file is wrong.
    """
    entry = lookup(name)
    folder = Path(dest_dir) if dest_dir else _writable_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.file
    if target.is_file() and not force:
        return target
    part = target.with_name(target.name + ".part")
    errors = []
    for url in urls or list(entry.urls):
        try:
            _download(url, part, progress)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
    else:
        raise WeightsError(f"{entry.file}: every source failed ({'; '.join(errors)}); "
                           f"download it by hand into {folder}")
    try:
        _check_download(entry, part)
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


def _writable_dir() -> Path:
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env) if env else user_cache()


def _download(url: str, part: Path, progress: ProgressFn | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gpenvideo"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        resumed = response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
                have += len(block)
                if progress:
                    progress(have, total)
    if total is not None and have < total:
        raise OSError(f"transfer ended after {have} of {total} bytes")


def _check_download(entry: KnownWeights, part: Path) -> None:
    if entry.bytes is not None and part.stat().st_size != entry.bytes:
        raise WeightsError(f"{entry.file}: downloaded {part.stat().st_size} bytes, expected "
                           f"{entry.bytes}; fetch it again")
    if entry.sha256 and sha256_of(part) != entry.sha256:
        raise WeightsError(f"{entry.file}: sha256 does not match the known checksum; the "
                           "download is corrupt or not the expected file")
    if entry.kind == "gpen":
        _, cfg = verify(part)
        if entry.size and cfg.size != entry.size:
            raise WeightsError(f"{entry.file}: is a GPEN-{cfg.size}, expected {entry.label}")
    elif entry.kind == "torch":
        read_state_dict(part)
