"""`famos inspect BUNDLE`: print a bundle's summary and validate it: checksums, the ONNX checker,
and one small window rendered through the ONNX runner from the default content.

"valid" means the bundle renders: exit 0. A missing, truncated or modified file, a graph that
fails the checker or cannot render (or renders non-finite pixels) is a one-line error (exit 2).
Imports no torch, so the eager model is not compared here: export measured that (see parity).
"""

from __future__ import annotations

import pathlib

from famos.bundle import Bundle, load_bundle
from famos.cli_parser import Parser
from famos.errors import BackendUnavailable, BundleError, UserError

RENDER_CHECK_SIDE = 32  # px of the window rendered; rounded up to the model's alignment


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="famos inspect", description=__doc__)
    parser.add_argument("bundle", type=pathlib.Path, help="bundle folder written by `famos export`")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)  # checksums of every file
    print(summary(bundle))
    checked = check_graphs(bundle)
    rendered = check_render(bundle)
    print(f"valid: {len(bundle.manifest.files)} checksums match; {checked}; {rendered}")
    return 0


def check_render(bundle: Bundle) -> str:
    """Render one small window at the canvas's top left through every ONNX graph of the bundle, as
    `famos render` would (default content, seed 0); BundleError when a graph cannot run it."""
    import numpy as np

    try:
        import onnxruntime  # noqa: F401 - the render check needs it; say so before anything else
    except ImportError:
        raise BackendUnavailable("cannot check that the bundle renders: onnxruntime is not installed "
                                 "(pip install famos[render])") from None
    from famos.canvas import to_unit_range
    from famos.chunk_loop import WindowInputs
    from famos.config import Precision
    from famos.planning import Rect
    from famos.runners import Backend, RunnerOptions, open_runner

    spec = bundle.spec
    alignment = spec.generator.alignment
    height, width = spec.canvas.aligned(alignment)
    side = -(-RENDER_CHECK_SIDE // alignment) * alignment
    window = Rect(0, 0, min(side, height), min(side, width))
    inputs = WindowInputs(config=spec.generator, canvas=spec.canvas,
                          content=to_unit_range(bundle.default_content()), seed=0)(window)
    graphs = {bundle.manifest.fp16_file: Precision.FP16} if bundle.manifest.fp16_file else {}
    graphs = {"model.onnx": Precision.FP32} | graphs
    for name, precision in graphs.items():
        try:
            image = open_runner(bundle, RunnerOptions(backend=Backend.ONNX, precision=precision))(*inputs)  # its graphs
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors share no base class but Exception
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BundleError(f"{bundle.path / name}: cannot render ({type(err).__name__}: {first[:200]})") from None
        expected = (1, 3, window.height, window.width)
        if image.shape != expected:
            raise BundleError(f"{bundle.path / name}: renders shape {image.shape}, expected {expected}")
        if not np.isfinite(image).all():
            raise BundleError(f"{bundle.path / name}: renders non-finite pixels (NaN or infinity)")
    return f"rendered a {window.width}x{window.height} px window ({', '.join(graphs)})"


def check_graphs(bundle: Bundle) -> str:
    """Run the ONNX checker on every graph of the bundle (when onnx is installed)."""
    try:
        import onnx
    except ImportError:
        return "ONNX checker skipped (onnx not installed)"
    names = [bundle.path / "model.onnx"]
    if bundle.manifest.fp16_file:
        names.append(bundle.path / bundle.manifest.fp16_file)
    for path in names:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BundleError(f"{path}: fails the ONNX checker ({first})") from None
    return f"ONNX checker passed ({', '.join(p.name for p in names)})"


def summary(bundle: Bundle) -> str:
    manifest = bundle.manifest
    spec = manifest.spec
    config, canvas = spec.generator, spec.canvas
    aligned_h, aligned_w = canvas.aligned(config.alignment)
    halo = manifest.halo
    noise = config.noise
    lines = [
        f"bundle      {bundle.path}  (sha256 {bundle.sha256[:16]}, {manifest.format}, famos {manifest.code_version})",
        f"canvas      {canvas.width}x{canvas.height} px (computed {aligned_w}x{aligned_h}), fold {canvas.fold.value}, "
        f"style scale {canvas.style_scale:g}, {len(spec.style_sizes)} style image(s); renders "
        + ("any size (--size/--scale/--print-size)" if manifest.takes_canvas() else "this canvas only (format 1)"),
        f"generator   depth {config.depth}, width {config.width}, kernel {config.kernel}, N = {config.n_templates} "
        f"templates, blend {config.blend.value}, noise {noise.channels} ch ({noise.placement.value})",
        f"halo        top {halo.top}, left {halo.left}, bottom {halo.bottom}, right {halo.right}; "
        f"alignment {manifest.alignment}",
        f"graph       opset {manifest.opset}, {manifest.export.get('onnx_exporter', '?')}, "
        f"fp16 {manifest.fp16_file or 'none'}"
        + (f" (tolerance {manifest.fp16_tolerance:g})" if manifest.fp16_tolerance else ""),
    ]
    lines += [f"  input     {t.name:<11} {t.dtype:<8} {_shape(t.shape)}" for t in manifest.inputs]
    lines += [f"  output    {t.name:<11} {t.dtype:<8} {_shape(t.shape)}" for t in manifest.outputs]
    parity = manifest.export.get("parity_max_abs")
    if parity and isinstance(parity, dict):
        lines.append("parity      " + ", ".join(f"{k} {_number(v)}" for k, v in parity.items()) + " (max |diff| vs eager)")
    lines.append("files")
    lines += [f"  {name:<22} {_size(entry.bytes):>10}  sha256 {entry.sha256[:16]}" for name, entry in manifest.files.items()]
    provenance = manifest.provenance
    lines.append(
        f"provenance  {provenance.get('steps')} training steps, checkpoint {provenance.get('checkpoint')} "
        f"({str(provenance.get('checkpoint_kind', 'latest'))[:16]}, sha256 {str(provenance.get('checkpoint_sha256'))[:16]}), "
        f"exported {manifest.export.get('created')}"
    )
    for kind in ("style", "content"):
        names, hashes = _list(provenance.get(f"{kind}_files")), _list(provenance.get(f"{kind}_hashes"))
        for name, digest in zip(names, hashes):
            lines.append(f"  {kind:<9} {name}  sha256 {str(digest)[:16]}")
        if hashes and not names:
            lines.append(f"  {kind:<9} {len(hashes)} image(s): " + ", ".join(str(h)[:16] for h in hashes))
    return "\n".join(lines)


def _number(value) -> str:
    """A measured difference, or what the manifest holds there when it is not a number."""
    return f"{value:.1e}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _list(value) -> list:
    """A provenance list as written; the manifest's provenance is a free-form record, and a
    summary shows what is there rather than failing on it."""
    return value if isinstance(value, list) else []


def _shape(shape) -> str:
    return "(" + ", ".join(str(a) for a in shape) + ")"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
