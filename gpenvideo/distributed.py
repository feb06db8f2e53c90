"""Segments of long films rendered as Ray tasks across the GPUs of a Ray cluster.

One actor per GPU (or, on a cluster without GPUs, per two CPUs) loads the model once and
renders the segments it is given; it returns each finished segment's bytes to the driver, which
commits them to the work folder and concatenates the film, so only the inputs need to be
reachable from every node (at the same path), not the output folder. `ray` is an optional
extra: pip install 'gpenvideo[ray]'.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import RestoreConfig
from .errors import GpenVideoError, InputError
from .segments import Segment

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'gpenvideo[ray]' (on every node of the "
                         "cluster)") from None
    return ray


class _Worker:
    """Lives in a Ray actor: builds the stages (loads the model) once, renders segments."""

    def __init__(self, cfg: RestoreConfig, identity: bool, threads: int) -> None:
        from . import api

        # Ray sets OMP_NUM_THREADS=1 in its workers; the stages set `threads` instead (the
        # results are the same for any count, so segments match a local run exactly)
        cfg = cfg.replace("pipeline", threads=threads)
        self.recipe = api.IDENTITY if identity else api.restore_recipe(cfg)

    def render(self, source: str, piece: Segment, cfg: RestoreConfig,
               size: tuple[int, int]) -> tuple[int, bytes, dict[str, Any]]:
        from . import media, segments

        _, suffix = media.segment_container(cfg.encode.codec)
        with tempfile.TemporaryDirectory(prefix="gpenvideo-") as folder:
            path = Path(folder) / f"segment{suffix}"
            counts = segments.render_segment(Path(source), path, cfg, piece, self.recipe, size)
            return piece.number, path.read_bytes(), counts


class RayExecutor:
    """address: a Ray cluster ("auto", "ray://host:10001", ...) or None to start a local one.
    workers: actors to start (default: one per GPU of the cluster, else one per 2 CPUs)."""

    def __init__(self, cfg: RestoreConfig, address: str | None = None, *,
                 identity: bool = False, workers: int | None = None) -> None:
        ray = _ray()
        self._own_ray = not ray.is_initialized()
        if self._own_ray:
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"--ray {address or ''}: cannot connect to the Ray cluster "
                                 f"({exc}); check the address and that `ray status` works "
                                 "there") from exc
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if workers is None:
            workers = gpus or max(1, int(resources.get("CPU", 1)) // 2)
        # each actor sees only the GPU Ray gave it, so --device auto picks it as cuda:0
        options = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        actor = ray.remote(**options)(_Worker)
        # On this machine, split its cores among the workers; on a cluster, a CPU worker takes
        # the two CPUs it stands for and a GPU worker every core of its node.
        threads = cfg.pipeline.threads
        if not threads:
            if not address:
                from .threads import available_cores

                threads = max(1, available_cores() // workers)
            elif not gpus:
                threads = 2
        self.actors = [actor.remote(cfg, identity, threads) for _ in range(workers)]
        log.info("Ray: %d workers on %s", workers, "GPUs" if gpus else "CPUs")

    def render(self, source: Path, pieces: list[Segment], cfg: RestoreConfig,
               size: tuple[int, int]) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """Hand segments to idle actors; yield each as it finishes."""
        ray = _ray()
        queue = list(pieces)
        running: dict[Any, Any] = {}  # object ref -> actor
        idle = list(self.actors)
        try:
            while queue or running:
                while queue and idle:
                    actor = idle.pop()
                    ref = actor.render.remote(str(source.resolve()), queue.pop(0), cfg, size)
                    running[ref] = actor
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    idle.append(running.pop(ref))
                    yield _result(ray, ref)
        finally:
            for ref in running:
                ray.cancel(ref)

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._own_ray:
            ray.shutdown()


def _result(ray, ref) -> tuple[int, bytes, dict[str, Any]]:
    """A finished task's result; a worker's GpenVideoError comes back as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, GpenVideoError):
            raise cause from None
        raise GpenVideoError(f"a Ray worker failed: {exc}") from exc
