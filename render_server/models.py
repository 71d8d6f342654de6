"""The server's models: bundle folders directly under ``--models``, addressed by folder name.

A request names a model, never a path: names are checked against a strict pattern and the
resolved folder must lie inside the models folder (symbolic links out of it are refused). Bundles
are verified once and cached until their manifest changes; each gets one shared ``Renderer``,
built on first use (onnxruntime sessions are thread-safe, so concurrent renders share it). With
``famos serve --ray`` every renderer renders on the one pool of cluster workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import re
import threading
from collections.abc import Iterator

from famos.bundle import MANIFEST, ONNX_FILE, TORCHSCRIPT_FILE, Bundle, load_bundle
from famos.cluster import WorkerPool
from famos.errors import BundleError, InvalidField, UserError, quoted
from famos.renderer import Renderer
from famos.runners import RunnerOptions
from famos.values import ModelInfo
from famos.render_server.errors import FailedPrecondition, NotFound

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
        self._reported: dict[str, str] = {}  # the reason each unlisted model was last logged with

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.folder.iterdir()
            if NAME_PATTERN.fullmatch(p.name) and (p / MANIFEST).is_file()
        )

    def bundle(self, name: str) -> Bundle:
        """The verified bundle called ``name``: NotFound when there is none, InvalidField for a
        name that could leave the models folder, FailedPrecondition for a bundle that is unusable
        or links out of the models folder."""
        checked_name(name, field="model")
        folder = self._inside(self.folder / name, name)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise NotFound(f"model {quoted(name)}: no such model (see ListModels)")
        for entry in folder.iterdir():
            self._inside(entry, name)
        stat = manifest.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            entry = self._bundles.get(name)
            if entry is not None and entry.stamp == stamp:
                return entry.bundle
        with self.bundle_errors(name):
            bundle = load_bundle(folder)  # verifies every file's checksum: outside the lock
        with self._lock:
            self._bundles[name] = _Entry(stamp, bundle)
        return bundle

    def _inside(self, path: pathlib.Path, name: str) -> pathlib.Path:
        """``path`` resolved, refused when a symbolic link takes it out of the models folder: a
        request names a model, and must never make the server read a file it does not serve."""
        resolved = path.resolve()
        if resolved == self.folder or not resolved.is_relative_to(self.folder):
            what = "its folder" if path.parent == self.folder else f"its file {quoted(path.name)}"
            raise FailedPrecondition(f"model {quoted(name)}: {what} is a symbolic link out of the models "
                                     f"folder (refused, not followed)")
        return resolved

    @contextlib.contextmanager
    def bundle_errors(self, name: str) -> Iterator[None]:
        """A bundle's own faults as FailedPrecondition (the server's, not the request's), with the
        server's paths left out of the message: clients know a model by its name."""
        try:
            yield
        except BundleError as err:
            message = str(err).replace(str((self.folder / name).resolve()), name).replace(str(self.folder), "")
            raise FailedPrecondition(f"model {quoted(name)}: bundle unusable ({message})") from None

    def renderer(self, name: str) -> Renderer:
        bundle = self.bundle(name)
        with self._lock:
            renderer = self._renderers.get(bundle.sha256)
            if renderer is None:
                # Session creation under the lock: two first requests must not build two sessions.
                renderer = self._open(name, bundle)
                self._renderers[bundle.sha256] = renderer
        return renderer

    def _open(self, name: str, bundle: Bundle) -> Renderer:
        with self.bundle_errors(name):
            try:
                return Renderer(bundle, self.runner, cluster=self.cluster)
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - onnxruntime's load errors share no base class
                # A graph that passes its checksum but not the runtime (replaced and re-hashed): the
                # runtime's message names server paths, so it goes to the log only.
                log.warning("model %r: its graph does not load: %s", name, err)
                raise BundleError(f"{ONNX_FILE} or {TORCHSCRIPT_FILE} does not load in the runtime "
                                  f"({type(err).__name__}; see the server log)") from None

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
            training_steps=bundle.manifest.provenance.get("steps") or 0,  # a whole number (load_bundle)
            noise_channels=spec.generator.noise.channels,
        )

    def infos(self) -> list[ModelInfo]:
        """Usable models; one that cannot be described is left out rather than failing the list
        for everyone, and logged once per reason (ListModels is polled)."""
        infos = []
        for name in self.names():
            try:
                infos.append(self.info(name))
            except UserError as err:
                with self._lock:
                    new = self._reported.get(name) != str(err)
                    self._reported[name] = str(err)
                if new:
                    log.warning("ListModels leaves out %r: %s", name, err)
        return infos
