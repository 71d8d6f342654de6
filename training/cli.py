"""`famos train`: train a FAMOS model for a canvas, checkpointing into RUN_DIR.

    famos train --style S.png [S2.png ...] --content C.png --out RUN_DIR [--print-size 120x80cm --dpi 150]
    famos train --preset mosaic --out runs/mosaic      # bundled samples, 2 MP, about 2 minutes on CPU
    famos train --preset tiny --out runs/tiny          # a small canvas in about 15 s (the tests' model)
    famos train --out RUN_DIR --resume [--steps N]     # continue exactly where the run stopped

Options left out take the preset's value (``--preset default`` unless named). argv becomes a
TrainConfig, a GeneratorConfig and a CanvasConfig here; nothing below this module sees argparse.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
from typing import Any

from famos.errors import UserError

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

# Options a preset fills when the command line leaves them out (argparse dest -> value).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's architecture and data (N = 30 instead of 100: a third of the memory bandwidth
    # per pixel for a barely visible loss in variety on one canvas).
    "default": dict(
        depth=4, width=80, templates=30, patch=160, batch=8, steps=5000, d_depth=5, d_width=64,
        checkpoint_every=500, preview_every=500,
    ),
    # The README quick start: the tiny architecture trained longer for a 1800x1200 (2.16 MP) canvas
    # of the bundled samples, about 1.5-2 minutes on 2 CPU cores. 16 templates, a strong pull
    # towards a wider blur of the content and a little entropy (crisp per-pixel choices) make
    # the cat readable in gravel and brick; the styles are greyscale, so is the mosaic. Only the
    # final preview is rendered.
    "mosaic": dict(
        depth=3, width=16, kernel=3, templates=16, patch=64, batch=4, steps=1500, d_depth=4, d_width=32, d_kernel=3,
        checkpoint_every=500, preview_every=1500, canvas="1800x1200", content_weight=40.0, blur_sigma=6.0,
        entropy=0.1,
        style=[EXAMPLES / "style" / "brick.png", EXAMPLES / "style" / "gravel.png"],
        content=[EXAMPLES / "content" / "chelsea.png"],
    ),
    # The tests' reference: a small model on the bundled samples, about 15 s on CPU.
    "tiny": dict(
        depth=3, width=16, kernel=3, templates=8, patch=64, batch=4, steps=200, d_depth=4, d_width=32, d_kernel=3,
        checkpoint_every=100, preview_every=100, scale=0.5, content_weight=5.0,  # short run: strong content pull
        style=[EXAMPLES / "style" / "brick.png", EXAMPLES / "style" / "gravel.png"],
        content=[EXAMPLES / "content" / "chelsea.png"],
    ),
}

# Run options that do not change what is learned: the only ones --resume accepts.
RESUME_OPTIONS = {"out", "resume", "preset", "steps", "device", "threads", "checkpoint_every", "preview_every", "preview_max_side", "quiet"}

FALLBACKS: dict[str, Any] = dict(
    mode="full", kernel=5, res_blocks=0, noise_local=0, noise_global=0, noise_periodic=0, noise_placement="bottleneck",
    style_scale=1.0, fold="mirror", template_seed=0, crop="same", mirror_style=False, lr=2e-4, beta1=0.5, beta2=0.999,
    seed=0, loss="dcgan", d_steps=1, gp_weight=10.0, content_weight=1.0, copy_content_weight=0.0,
    correspondence="blur", blur_sigma=3.0, vgg_weights=None, entropy=0.0, entropy_schedule="constant",
    entropy_ramp_steps=1000, mix_tv=0.0, alpha_norm=0.0, alpha_tv=0.0, diversity=0.0, d_kernel=5,
    preview_max_side=1024, precision="fp32", device="auto",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through famos.cli, not usage + exit inside argparse
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="famos train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=None)
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="RUN_DIR")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("images")
    g.add_argument("--style", type=pathlib.Path, nargs="+", metavar="PATH")
    g.add_argument("--content", type=pathlib.Path, nargs="+", metavar="PATH", help="the first is the canvas's content")
    g = p.add_argument_group("canvas (default: the content image's size)")
    g.add_argument("--canvas", metavar="WxH", help="pixels")
    g.add_argument("--scale", type=float, help="content size times F")
    g.add_argument("--print-size", metavar="SIZE", help="e.g. 120x80cm, 47x31in, 1200x800mm (with --dpi)")
    g.add_argument("--dpi", type=float)
    g.add_argument("--style-scale", type=float, help="style pixels per canvas pixel")
    g.add_argument("--fold", choices=["wrap", "mirror"])
    g.add_argument("--template-seed", type=int)
    g = p.add_argument_group("model")
    g.add_argument("--mode", choices=["full", "parametric", "copy"], help="parametric: N = 0; copy: I = I_M")
    g.add_argument("--templates", type=int, metavar="N")
    g.add_argument("--depth", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--kernel", type=int)
    g.add_argument("--res-blocks", type=int)
    g.add_argument("--noise-local", type=int)
    g.add_argument("--noise-global", type=int)
    g.add_argument("--noise-periodic", type=int)
    g.add_argument("--noise-placement", choices=["bottleneck", "input"])
    g.add_argument("--d-depth", type=int)
    g.add_argument("--d-width", type=int)
    g.add_argument("--d-kernel", type=int)
    g = p.add_argument_group("data")
    g.add_argument("--patch", type=int, metavar="P")
    g.add_argument("--batch", type=int)
    g.add_argument("--crop", choices=["same", "independent"])
    g.add_argument("--mirror-style", action="store_const", const=True, help="random flips of style patches")
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=int)
    g.add_argument("--loss", choices=["dcgan", "lsgan", "wgan-gp"])
    g.add_argument("--d-steps", type=int)
    g.add_argument("--gp-weight", type=float)
    g.add_argument("--lr", type=float)
    g.add_argument("--max-canvas-pixels", type=int, help=f"refuse canvases over this many pixels (default {2**30})")
    g.add_argument("--beta1", type=float)
    g.add_argument("--beta2", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--content-weight", type=float, help="lambda")
    g.add_argument("--copy-content-weight", type=float, help="content term on I_M")
    g.add_argument("--correspondence", choices=["blur", "down4", "down8", "down16", "learned", "vgg"])
    g.add_argument("--blur-sigma", type=float)
    g.add_argument("--vgg-weights", type=pathlib.Path, help="local VGG-19 weights (safetensors or torch file)")
    g = p.add_argument_group("regularizers")
    g.add_argument("--entropy", type=float)
    g.add_argument("--entropy-schedule", choices=["constant", "ramp"])
    g.add_argument("--entropy-ramp-steps", type=int)
    g.add_argument("--mix-tv", type=float)
    g.add_argument("--alpha-norm", type=float)
    g.add_argument("--alpha-tv", type=float)
    g.add_argument("--diversity", type=float)
    g = p.add_argument_group("run")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--preview-every", type=int)
    g.add_argument("--preview-max-side", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    g.add_argument("--threads", type=int, help="CPU threads for torch (fewer is faster on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from training.loop import run
    from training.trainer import Trainer

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be positive")
        torch.set_num_threads(args.threads)
    checkpoint = args.out / "checkpoint.safetensors"
    if args.resume:
        given = {k for k, v in vars(args).items() if v not in (None, False)}
        refused = sorted(given - RESUME_OPTIONS)
        if refused:
            flags = ", ".join("--" + k.replace("_", "-") for k in refused)
            raise UserError(f"--resume continues with the checkpoint's configuration; {flags} cannot be changed")
        if not checkpoint.exists():
            raise UserError(f"{checkpoint}: no checkpoint to resume")
        overrides = {k: getattr(args, k) for k in ("checkpoint_every", "preview_every", "preview_max_side") if k in given}
        device = _device(args.device or "auto")
        trainer = Trainer.resume(checkpoint, device=device, steps=args.steps, **overrides)
        if trainer.step >= trainer.config.steps:
            raise UserError(f"{checkpoint}: already at step {trainer.step} of {trainer.config.steps}; pass a larger --steps")
        return run(trainer, args.out, progress=not args.quiet)
    if checkpoint.exists():
        raise UserError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")

    options, given = _resolve(args)
    from famos.canvas import load_rgb
    from training.losses import load_vgg_weights
    from training.trainer import TrainingData

    if not options.get("style"):
        raise UserError("--style is required (one or more style images)")
    if not options.get("content"):
        raise UserError("--content is required (one or more content images)")
    contents = [load_rgb(p) for p in options["content"]]
    styles = [load_rgb(p) for p in options["style"]]
    generator_config, canvas, config = configs(options, given=given, content_size=(contents[0].shape[1], contents[0].shape[0]))
    device = _device(options["device"])
    if config.precision.value == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    vgg_state = load_vgg_weights(options["vgg_weights"]) if options["correspondence"] == "vgg" else None
    data = TrainingData(contents=tuple(contents), styles=tuple(styles), provenance=_provenance(options))
    trainer = Trainer.start(
        config=config, generator_config=generator_config, canvas=canvas, data=data, device=device, vgg_state=vgg_state
    )
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return run(trainer, args.out, progress=not args.quiet)


def _resolve(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """Command line over preset over fallbacks; also the names the command line gave."""
    preset = PRESETS[args.preset or "default"]
    given = {k: v for k, v in vars(args).items() if v is not None}
    options = {**FALLBACKS, **preset, **given}
    if {"canvas", "print_size"} & given.keys() and "scale" not in given:
        options.pop("scale", None)  # an explicit size replaces the preset's downscaling
    if {"scale", "print_size"} & given.keys() and "canvas" not in given:
        options.pop("canvas", None)  # ... and the preset's canvas
    return options, set(given)


# Training samples patches, so its cost does not grow with the canvas, but templates, previews and
# the exported model's default renders do: a canvas past this is more likely a typo than a print.
MAX_CANVAS_PIXELS = 2**30

# numeric options: (lowest, highest, whether the lowest is allowed); every one must be finite
_RANGES = {
    "lr": (0.0, 1.0, False), "beta1": (0.0, 1.0, True), "beta2": (0.0, 1.0, True), "gp_weight": (0.0, 1e6, True),
    "content_weight": (0.0, 1e6, True), "copy_content_weight": (0.0, 1e6, True), "entropy": (0.0, 1e6, True),
    "mix_tv": (0.0, 1e6, True), "alpha_norm": (0.0, 1e6, True), "alpha_tv": (0.0, 1e6, True),
    "diversity": (0.0, 1e6, True), "blur_sigma": (0.0, 1e3, False), "style_scale": (0.0, 1e3, False),
}


def _check_numbers(options: dict[str, Any]) -> None:
    import math

    for name, (low, high, low_ok) in _RANGES.items():
        value = options.get(name)
        if value is None:
            continue
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and value < high):
            bound = "from" if low_ok else "above"
            raise UserError(f"--{name.replace('_', '-')} {value}: must be a finite number {bound} {low:g} and below {high:g}")


def configs(options: dict[str, Any], *, given: set[str], content_size: tuple[int, int]):
    """(GeneratorConfig, CanvasConfig, TrainConfig) from resolved options; UserError on conflicts."""
    from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoiseConfig, NoisePlacement
    from training import config as tc

    width, height = _canvas_size(options, content_size=content_size)
    mode = options["mode"]
    templates = options["templates"]
    if mode == "parametric":
        if "templates" in given and templates:
            raise UserError("--mode parametric has no templates (N = 0); drop --templates")
        templates = 0
        for flag in ("entropy", "mix_tv", "alpha_norm", "alpha_tv", "diversity", "copy_content_weight"):
            if options[flag] and flag in given:
                raise UserError(f"--mode parametric has no templates or alpha; --{flag.replace('_', '-')} does not apply")
            options[flag] = 0.0  # a preset's value for the templates does not apply either
    elif templates < 1:
        raise UserError(f"--templates {templates}: mode {mode!r} needs at least one template (or --mode parametric)")
    if mode == "copy":
        for flag in ("alpha_norm", "alpha_tv"):
            if options[flag]:
                raise UserError(f"--mode copy has no alpha (I = I_M); --{flag.replace('_', '-')} does not apply")
    if options["correspondence"] == "vgg" and not options["vgg_weights"]:
        raise UserError("--correspondence vgg needs --vgg-weights PATH (a local file; nothing is downloaded)")
    if options["vgg_weights"] and options["correspondence"] != "vgg":
        raise UserError("--vgg-weights is only used with --correspondence vgg")
    try:
        generator = GeneratorConfig(
            depth=options["depth"], width=options["width"], kernel=options["kernel"], n_res_blocks=options["res_blocks"],
            n_templates=templates,
            blend={"full": BlendMode.BLEND, "parametric": BlendMode.PAINT, "copy": BlendMode.COPY}[mode],
            noise=NoiseConfig(
                n_global=options["noise_global"], n_local=options["noise_local"], n_periodic=options["noise_periodic"],
                placement=NoisePlacement(options["noise_placement"]),
            ),
        )
        canvas = CanvasConfig(
            height, width, style_scale=options["style_scale"], fold=Fold(options["fold"]),
            template_seed=options["template_seed"],
        )
        noise_counts = (options["noise_global"], options["noise_local"], options["noise_periodic"], options["res_blocks"])
        if min(noise_counts) < 0:
            raise ValueError("noise channels and residual blocks must be >= 0")
    except ValueError as err:
        raise UserError(str(err)) from None
    if options["patch"] % generator.alignment:
        raise UserError(f"--patch {options['patch']} must be a multiple of the alignment 2^depth = {generator.alignment}")
    _check_numbers(options)
    if width < options["patch"] or height < options["patch"]:
        raise UserError(f"canvas {width}x{height}: smaller than the {options['patch']} px training patch; "
                        f"train for at least {options['patch']}x{options['patch']}")
    limit = options.get("max_canvas_pixels") or MAX_CANVAS_PIXELS
    if width * height > limit:
        raise UserError(f"canvas {width}x{height} = {width * height / 1e6:,.0f} MP: over the limit of "
                        f"{limit / 1e6:,.0f} MP; raise it with --max-canvas-pixels if you mean it")
    config = tc.TrainConfig(
        steps=options["steps"], patch=options["patch"], batch=options["batch"], crop=tc.CropMode(options["crop"]),
        mirror_style=bool(options["mirror_style"]), lr=options["lr"], beta1=options["beta1"], beta2=options["beta2"],
        seed=options["seed"], checkpoint_every=options["checkpoint_every"], preview_every=options["preview_every"],
        preview_max_side=options["preview_max_side"], precision=tc.Precision(options["precision"]),
        discriminator=tc.DiscriminatorConfig(depth=options["d_depth"], width=options["d_width"], kernel=options["d_kernel"]),
        losses=tc.LossConfig(
            adversarial=tc.AdversarialLoss(options["loss"]), d_steps=options["d_steps"],
            gradient_penalty=options["gp_weight"], content_weight=options["content_weight"],
            copy_content_weight=options["copy_content_weight"],
            correspondence=tc.CorrespondenceMap(options["correspondence"]), blur_sigma=options["blur_sigma"],
            vgg_weights=str(options["vgg_weights"]) if options["vgg_weights"] else None,
        ),
        regularizers=tc.RegularizerConfig(
            entropy=options["entropy"], entropy_schedule=tc.EntropySchedule(options["entropy_schedule"]),
            entropy_ramp_steps=options["entropy_ramp_steps"], mix_tv=options["mix_tv"],
            alpha_norm=options["alpha_norm"], alpha_tv=options["alpha_tv"], diversity=options["diversity"],
        ),
    )
    if config.discriminator.depth < 1 or config.discriminator.width < 1:
        raise UserError("--d-depth and --d-width must be positive")
    return generator, canvas, config


def _canvas_size(options: dict[str, Any], *, content_size: tuple[int, int]) -> tuple[int, int]:
    from famos.units import parse_canvas, print_pixels, scaled_canvas

    chosen = [k for k in ("canvas", "scale", "print_size") if options.get(k) is not None]
    if len(chosen) > 1:
        raise UserError("give one of --canvas, --scale, --print-size (they all set the canvas size)")
    if options.get("dpi") is not None and options.get("print_size") is None:
        raise UserError("--dpi sets the pixels of a --print-size; give both")
    if options.get("canvas") is not None:
        return parse_canvas(options["canvas"])
    if options.get("scale") is not None:
        return scaled_canvas(*content_size, scale=options["scale"])
    if options.get("print_size") is not None:
        if options.get("dpi") is None:
            raise UserError("--print-size needs --dpi to become pixels")
        return print_pixels(options["print_size"], dpi=options["dpi"])
    return content_size


def _provenance(options: dict[str, Any]) -> dict[str, Any]:
    def digest(path: pathlib.Path) -> str:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()

    trained_print = {"print": {"size": options["print_size"], "dpi": options["dpi"]}} if options.get("print_size") else {}
    return {
        **trained_print,  # a print size the canvas was trained for: the default resolution of its renders
        "style_hashes": [digest(p) for p in options["style"]],
        "content_hashes": [digest(p) for p in options["content"]],
        "style_files": [pathlib.Path(p).name for p in options["style"]],
        "content_files": [pathlib.Path(p).name for p in options["content"]],
    }


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)
