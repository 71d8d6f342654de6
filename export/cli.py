"""`famos export RUN_DIR_OR_CHECKPOINT --out BUNDLE`: a trained generator as an artifact bundle.

A run folder exports its best checkpoint (best.safetensors) when it has one, else its latest;
--checkpoint chooses another.
"""

from __future__ import annotations

import pathlib
import sys

from famos.cli_parser import Parser


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="famos export", description=__doc__)
    parser.add_argument("source", type=pathlib.Path,
                        help="checkpoint file, or a run folder (its best checkpoint when it has one, else its latest)")
    parser.add_argument("--checkpoint", metavar="WHICH",
                        help="of a run folder: best (the default when it has one), latest, a step number (its snapshot "
                             "in checkpoints/) or a checkpoint file")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="bundle folder to write")
    parser.add_argument("--content", type=pathlib.Path, help="default content image (instead of the checkpoint's)")
    parser.add_argument("--fp16", action="store_true", help="also write a float16 graph for GPUs")
    parser.add_argument("--no-diagnostics", action="store_true", help="graphs output the image only (no alpha, mix_argmax)")
    parser.add_argument("--onnx-exporter", choices=["tracer", "dynamo"], default="tracer",
                        help="torch.onnx exporter: TorchScript tracer (fast) or torch.export (dynamo)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--preview-seed", type=int, default=0, help="noise seed of the preview")
    args = parser.parse_args(argv)
    if not 0 <= args.preview_seed < 2**63:  # the noise hash and the manifest carry 64 bits
        from famos.errors import InvalidField

        raise InvalidField("preview-seed", f"{args.preview_seed}: must be 0 to 2^63 - 1")

    from famos.export.graph import OnnxExporter
    from famos.export.writer import ExportOptions, choose_checkpoint, export_bundle
    from famos.canvas import load_rgb

    options = ExportOptions(
        fp16=args.fp16,
        diagnostics=not args.no_diagnostics,
        onnx_exporter=OnnxExporter(args.onnx_exporter),
        overwrite=args.overwrite,
        preview_seed=args.preview_seed,
    )
    content = load_rgb(args.content) if args.content else None
    chosen = choose_checkpoint(args.source, args.checkpoint)
    if chosen.reason:
        print(f"famos export: {chosen.reason}", file=sys.stderr)
    bundle = export_bundle(chosen.path, args.out, options=options, content=content)
    parity = ", ".join(f"{k} {v:.1e}" for k, v in bundle.manifest.export["parity_max_abs"].items())
    print(f"wrote {bundle.path} (bundle sha256 {bundle.sha256[:16]}; parity max |diff| vs eager: {parity})")
    return 0
