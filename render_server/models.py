"""The server's models: bundle folders directly under ``--models``, addressed by folder name.

A request names a model, never a path: names are checked against a strict pattern and the
resolved folder must lie inside the models folder (symbolic links out of it are refused). Bundles
are verified once and cached until their manifest changes; each gets one shared ``Renderer``,
built on first use (onnxruntime sessions are thread-safe, so concurrent renders share it). With
``famos serve --ray`` every renderer renders on the one pool of cluster workers.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import threading

from famos.bundle import MANIFEST, Bundle, load_bundle
from famos.cluster import WorkerPool
from famos.errors import BundleError, InvalidField, quoted
from famos.renderer import Renderer
from famos.runners import RunnerOptions
from famos.values import ModelInfo
from render_server.errors import FailedPrecondition, NotFound

log = logging.getLogger("famos.server")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_name(name: str, *, field: str) -> str:
    """``name`` if it is a plain folder or file name (no separators, no '..'); else InvalidField."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidField(
            field, f"{quoted(name)} is not a plain name (letters, digits, '.', '_', '-'; no folders, no '..')"
        )
    return name


@dataclasses.dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]  # manifest mtime_ns and size: a replaced bundle is loaded again
    bundle: Bundle


class ModelStore:
    def __init__(self, folder: pathlib.Path, *, runner: RunnerOptions = RunnerOptions(), cluster: WorkerPool | None = None):
        self.folder = folder.resolve()
        self.runner = runner
        self.cluster = cluster
        self._lock = threading.Lock()
        self._bundles: dict[str, _Entry] = {}
        self._renderers: dict[str, Renderer] = {}  # by bundle hash

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.folder.iterdir()
            if NAME_PATTERN.fullmatch(p.name) and (p / MANIFEST).is_file()
        )

    def bundle(self, name: str) -> Bundle:
        """The verified bundle called ``name``: NotFound when there is none, InvalidField for a
        name that could leave the models folder."""
        checked_name(name, field="model")
        folder = (self.folder / name).resolve()
        manifest = folder / MANIFEST
        if folder.parent != self.folder or not manifest.is_file():
            raise NotFound(f"model {quoted(name)}: no such model (see ListModels)")
        stat = manifest.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            entry = self._bundles.get(name)
            if entry is not None and entry.stamp == stamp:
                return entry.bundle
        try:
            bundle = load_bundle(folder)  # verifies every file's checksum: outside the lock
        except BundleError as err:  # the server's fault, not the request's
            raise FailedPrecondition(f"model {quoted(name)}: bundle unusable ({err})") from None
        with self._lock:
            self._bundles[name] = _Entry(stamp, bundle)
        return bundle

    def renderer(self, name: str) -> Renderer:
        bundle = self.bundle(name)
        with self._lock:
            renderer = self._renderers.get(bundle.sha256)
            if renderer is None:
                # Session creation under the lock: two first requests must not build two sessions.
                renderer = Renderer(bundle, self.runner, cluster=self.cluster)
                self._renderers[bundle.sha256] = renderer
        return renderer

    def info(self, name: str) -> ModelInfo:
        bundle = self.bundle(name)
        spec, halo = bundle.spec, bundle.manifest.halo
        return ModelInfo(
            name=name,
            canvas_height=spec.canvas.height,
            canvas_width=spec.canvas.width,
            halo=(halo.top, halo.left, halo.bottom, halo.right),
            n_templates=spec.generator.n_templates,
            alignment=spec.generator.alignment,
            backend=self.runner.backend.value,
            device=self.runner.device,
            bundle_sha256=bundle.sha256,
            training_steps=int(bundle.manifest.provenance.get("steps") or 0),
        )

    def infos(self) -> list[ModelInfo]:
        """Usable models; a broken bundle is logged and left out rather than failing the list."""
        infos = []
        for name in self.names():
            try:
                infos.append(self.info(name))
            except FailedPrecondition as err:
                log.warning("%s", err)
        return infos
