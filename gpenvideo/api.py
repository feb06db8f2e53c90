"""The front door: restore or track the faces of a film in one call.

    import gpenvideo
    summary = gpenvideo.restore_video("film.mp4", weights="GPEN-BFR-512.pth", device="cuda")
    print(summary.output, summary.frames, summary.faces)

Keyword options are the `gpenvideo restore` command's long options in snake_case (config.OPTIONS:
model=, weights=, device=, precision=, strength=, upscale=, codec=, crf=, segment_seconds= ...);
they override `config` (a RestoreConfig, or a TOML file's path). A run behaves as the command
does for one file (output naming, the lock, the manifest that skips finished work, resumable
segments), but errors are raised (GpenVideoError subclasses), never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import engine, segments
from .config import RestoreConfig, apply_options, load_config, validate
from .engine import ProgressCallback, RunSummary

__all__ = ["load_gpen", "restore_video", "track_video"]


def _config(config: RestoreConfig | str | Path | None, options: dict[str, Any]) -> RestoreConfig:
    """`config` (a RestoreConfig, a TOML path or None: the defaults) with `options` applied."""
    cfg = config if isinstance(config, RestoreConfig) else load_config(config)
    return apply_options(cfg, options)


def restore_video(input: str | Path, output: str | Path | None = None, *,
                  config: RestoreConfig | str | Path | None = None,
                  progress: ProgressCallback | None = None, overwrite: bool = False,
                  identity: bool = False, **options: Any) -> RunSummary:
    """Restore every tracked face of the video `input` with GPEN and write `output` (a file, a
    folder, or None: `<name>_restored.<ext>` beside the input). `identity`: decode and
    re-encode only. An output already complete with the same input and settings is not redone
    (the summary then says segments_resumed == segments and seconds 0) unless `overwrite`.
    Opening the video makes this process's malloc deterministic for the rest of its life
    (media.heap: libx264 reads memory it never wrote; importing gpenvideo does not do it).
    Returns the RunSummary. Raises TypeError for an unknown option; InputError, OutputError,
    WeightsError, EncodeError, Cancelled (GpenVideoError) as the command reports them."""
    from . import batch

    cfg = _config(config, options)
    if identity and cfg.composite.upscale != 1:
        from .errors import InputError

        raise InputError("identity copies the frames as they are; leave out upscale")
    jobs = batch.collect([Path(input)], output)
    _, summary = batch.run_one(jobs[0], cfg, identity=identity, overwrite=overwrite,
                                     progress=progress)
    return summary


def track_video(input: str | Path, output: str | Path | None = None, *,
                config: RestoreConfig | str | Path | None = None, **options: Any) -> dict:
    """Detect and track the faces of `input` and register their crops; with `output`, also
    write the document there as JSON. Options as for restore_video (those of `gpenvideo
    track`: detector=, min_face_size=, score_threshold=, max_faces=, model=, weights= ...).
    Returns {"source", "width", "height", "crop_size": S, "tracks": confirmed tracks, "frames":
    [{"pts": seconds, "faces": [{"track", "box", "raw", "smoothed", "score", "weight",
    "transform"}]}]},
    "transform" being the 2x3 matrix from upright source pixels to the S x S aligned crop the
    restorer cuts; "per_track": quality.TRACK_FIELDS rows (flicker None). Raises TypeError for
    an unknown option, GpenVideoError subclasses."""
    from . import manifest, threads
    from .detector import DetectStage, create_detector
    from .errors import InputError
    from .media import Decoder
    from .quality import QualityStage, TrackLedger
    from .register import Registrar, landmark_matrix
    from .tracker import Tracker

    cfg = _config(config, options)
    threads.configure(cfg.pipeline.threads)
    if output is not None and Path(output).resolve() == Path(input).resolve():
        raise InputError(f"{output}: is the input file; choose another output name")
    crop_size = model_crop_size(cfg)
    detect = DetectStage(create_detector(cfg.detect, cfg.model.weights_dir, cfg.model.device))
    frames_out = []
    with Decoder(input, cfg.decode) as decoder:
        info = decoder.info
        tracker = Tracker(cfg.track, info.pixel_aspect())
        quality = QualityStage(TrackLedger(seconds=lambda pts: float(pts * info.time_base)))
        chain = [detect, tracker, Registrar(cfg.register), quality]
        for frame in engine.run_chain(decoder.frames(), chain):
            frames_out.append({
                "pts": float(frame.pts * info.time_base),
                "faces": [{"track": f.track_id, "box": [round(float(v), 2) for v in f.box],
                           "raw": None if f.raw is None else np.round(f.raw, 2).tolist(),
                           "smoothed": np.round(f.smoothed, 2).tolist(),
                           "score": round(float(f.score), 4),
                           "weight": round(float(f.weight), 3),
                           "transform": [[round(float(v), 6) for v in row] for row in
                                         (landmark_matrix(f) if f.matrix is None else f.matrix)
                                         * (crop_size / 512)]} for f in frame.faces]})
    doc = {"source": str(input), "width": info.width, "height": info.height,
           "crop_size": crop_size, "tracks": tracker.tracks_confirmed, "frames": frames_out,
           "per_track": quality.track_rows()}
    if output is not None:
        try:
            manifest.write_json_atomic(Path(output), doc, indent=None)  # one line: a film's worth
        except OSError as exc:
            error = manifest.filesystem_error(exc, Path(input), Path(output))
            if error is None:
                raise
            raise error from exc
    return doc


def load_gpen(checkpoint: str | Path, device: str = "cpu"):
    """The GPEN network of a checkpoint file (any GPEN-BFR size), in eval mode on `device`.
    Raises WeightsError for an unreadable or mismatching checkpoint."""
    from .models import weights

    return weights.load_gpen(checkpoint, device)


def restore_recipe(cfg: RestoreConfig) -> segments.Recipe:
    """The face stages (detect, track, register, restore, composite) for `cfg` as a Recipe.
    Loads the GPEN checkpoint and the detector now, so a missing file fails before decoding."""
    from . import threads
    from .compositor import Compositor
    from .detector import DetectStage, create_detector
    from .models import weights
    from .models.runner import GPENRunner
    from .quality import QUALITY_SIZE, QualityStage, SelectStage, TrackLedger, chooser
    from .register import Registrar
    from .restorer import RestoreStage
    from .tracker import Tracker

    threads.configure(cfg.pipeline.threads)
    mcfg = cfg.model
    if mcfg.weights:
        checkpoint, strength = Path(mcfg.weights), 1.0
    else:
        entry = weights.lookup(mcfg.model)
        checkpoint, strength = weights.find(mcfg.model, mcfg.weights_dir), entry.strength
    if cfg.composite.strength is not None:
        strength = cfg.composite.strength
    runner = GPENRunner(weights.load_gpen(checkpoint), mcfg.device, mcfg.precision,
                        mcfg.batch_size, mcfg.channels_last, mcfg.compile)
    detector = create_detector(cfg.detect, mcfg.weights_dir, str(runner.device))
    parser = None
    if cfg.composite.mask == "parsing":
        from .parsing import FaceParser

        parser = FaceParser(weights.find("parsenet", mcfg.weights_dir), runner.device)
    size = runner.size
    cuda = runner.device.type == "cuda"  # the face path runs on the GPU with GPEN

    def build(info) -> list:
        ledger = TrackLedger(chooser(cfg.select.faces, cfg.select.skip_faces),
                             seconds=lambda pts: float(pts * info.time_base))
        return [DetectStage(detector), Tracker(cfg.track, info.pixel_aspect()),
                Registrar(cfg.register),
                SelectStage(ledger),
                RestoreStage(runner.restore_on_device if cuda else runner.restore, size,
                             runner.batch_size, runner.device if cuda else None, parser,
                             cfg.composite, strength, grey_size=QUALITY_SIZE),
                QualityStage(ledger), Compositor(cfg.composite, size, strength)]

    return restore_plan_recipe(cfg, build)


def restore_plan_recipe(cfg: RestoreConfig, build=None) -> segments.Recipe:
    """The restore Recipe's sizes and digest without its stages (`build` None: nothing is
    loaded; what the coordinator of a Ray run needs: its workers hold the model)."""
    return segments.Recipe(build=build, scale=cfg.composite.upscale,
                           context=tracking_context(cfg), mode="restore",
                           model_files=tuple(model_files(cfg)))


IDENTITY = segments.Recipe(mode="identity")  # decode and re-encode only


def tracking_context(cfg: RestoreConfig) -> int:
    """The `context` of the restore stages (the tracker's and, on top of it, the crop
    registration's: a frame's crop depends on its neighbours' faces), without loading any
    model."""
    from .register import Registrar
    from .tracker import Tracker

    return Tracker(cfg.track).context + Registrar(cfg.register).context


def model_files(cfg: RestoreConfig) -> list[Path]:
    """The files whose weights shape the output: the GPEN checkpoint, the detector's model and,
    with --mask parsing, ParseNet's. One not found is left out: loading it reports the remedy."""
    from .detector import weights_name
    from .errors import GpenVideoError
    from .models import weights

    names = [weights_name(cfg.detect, cfg.model.weights_dir, cfg.model.device)]
    if cfg.composite.mask == "parsing":
        names.append("parsenet")
    files = []
    if cfg.model.weights:
        if Path(cfg.model.weights).is_file():
            files.append(Path(cfg.model.weights))
    else:
        names.insert(0, cfg.model.model)
    for name in names:
        try:
            files.append(weights.find(name, cfg.model.weights_dir))
        except GpenVideoError:
            pass
    return files


def model_crop_size(cfg: RestoreConfig) -> int:
    """The size S of the crops the chosen model restores: from the checkpoint's shapes when
    --weights names one (its tensors are read, no model is built), else from the model's entry
    in the weights registry (no file needed). Raises WeightsError for an unusable checkpoint."""
    from .models import weights

    if cfg.model.weights:
        path = cfg.model.weights
        return weights.infer_config(weights.read_state_dict(path), path).size
    return int(weights.lookup(cfg.model.model).size or 512)


def settings_digest(cfg: RestoreConfig, identity: bool = False) -> str:
    """The digest of what shapes a restore (or identity) run's output under `cfg`: the one the
    run's segments and its manifest are keyed by."""
    recipe = IDENTITY if identity else restore_plan_recipe(validate(cfg))
    return recipe.digest(cfg)
