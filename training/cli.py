"""`famos train`: train a FAMOS model for a canvas, checkpointing into RUN_DIR.

    famos train --style S.png [S2.png ...] --content C.png --out RUN_DIR [--print-size 120x80cm --dpi 150]
    famos train --preset mosaic --out runs/mosaic      # bundled samples, 2 MP, about 2 minutes on CPU
    famos train --preset tiny --out runs/tiny          # a small canvas in about 15 s (the tests' model)
    famos train --out RUN_DIR --resume [--steps N]     # continue exactly where the run stopped

Options left out take the preset's value, else the default shown (the config dataclasses' own,
which is all that ``--preset default`` is). argv becomes a TrainConfig, a GeneratorConfig and a
CanvasConfig here; nothing below this module sees argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import pathlib
import typing
from typing import Any

from famos.cli_parser import Parser
from famos.config import BlendMode, CanvasConfig, GeneratorConfig, NoiseConfig, from_dict
from famos.errors import UserError
from famos.training.config import DiscriminatorConfig, LossConfig, RegularizerConfig, TrainConfig

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

# Options that set one field of a config dataclass (argparse dest -> dataclass, field name). The field
# gives the option its default, its type and, for an Enum, its choices; configs() builds from here.
FIELDS: dict[str, tuple[type, str]] = {
    "style_scale": (CanvasConfig, "style_scale"), "fold": (CanvasConfig, "fold"),
    "template_seed": (CanvasConfig, "template_seed"),
    "templates": (GeneratorConfig, "n_templates"), "depth": (GeneratorConfig, "depth"),
    "width": (GeneratorConfig, "width"), "kernel": (GeneratorConfig, "kernel"),
    "res_blocks": (GeneratorConfig, "n_res_blocks"), "full_resolution_head": (GeneratorConfig, "full_resolution_head"),
    "multi_scale": (GeneratorConfig, "multi_scale"), "refine": (GeneratorConfig, "refine"),
    "skip_connections": (GeneratorConfig, "skip"), "coord_copy": (GeneratorConfig, "coord_copy"),
    "bottleneck_width": (GeneratorConfig, "bottleneck_width"),
    "noise_local": (NoiseConfig, "n_local"), "noise_global": (NoiseConfig, "n_global"),
    "noise_periodic": (NoiseConfig, "n_periodic"), "noise_placement": (NoiseConfig, "placement"),
    "d_depth": (DiscriminatorConfig, "depth"), "d_width": (DiscriminatorConfig, "width"),
    "d_kernel": (DiscriminatorConfig, "kernel"),
    **{name: (TrainConfig, name) for name in (
        "patch", "batch", "crop", "mirror_style", "steps", "lr", "beta1", "beta2", "seed", "checkpoint_every",
        "preview_every", "preview_max_side", "precision")},
    "loss": (LossConfig, "adversarial"), "d_steps": (LossConfig, "d_steps"),
    "gp_weight": (LossConfig, "gradient_penalty"), "content_weight": (LossConfig, "content_weight"),
    "copy_content_weight": (LossConfig, "copy_content_weight"), "correspondence": (LossConfig, "correspondence"),
    "copy_adversarial_weight": (LossConfig, "copy_adversarial_weight"),
    "blur_sigma": (LossConfig, "blur_sigma"), "vgg_weights": (LossConfig, "vgg_weights"),
    **{name: (RegularizerConfig, name) for name in (
        "entropy", "entropy_schedule", "entropy_ramp_steps", "mix_tv", "alpha_norm", "alpha_tv", "diversity")},
}

# --mode names what the paper's variants are called, not BlendMode's values.
MODES = {"full": BlendMode.BLEND, "parametric": BlendMode.PAINT, "copy": BlendMode.COPY}


def _default(config: type, name: str) -> Any:
    """A dataclass field's default, an Enum by its value (as the command line spells it)."""
    default = next(f.default for f in dataclasses.fields(config) if f.name == name)
    return default.value if isinstance(default, enum.Enum) else default


# What an option is when neither the command line nor the preset names it.
DEFAULTS: dict[str, Any] = {
    **{dest: _default(config, name) for dest, (config, name) in FIELDS.items()},
    "mode": next(mode for mode, blend in MODES.items() if blend.value == _default(GeneratorConfig, "blend")),
    "device": "auto",
}

# Options a preset fills when the command line leaves them out (argparse dest -> value): only where
# the preset differs from DEFAULTS.
PRESETS: dict[str, dict[str, Any]] = {
    # The dataclasses' defaults: the paper's architecture and data (N = 30 instead of 100: a third
    # of the memory bandwidth per pixel for a barely visible loss in variety on one canvas).
    "default": {},
    # The README quick start: the tiny architecture trained longer for a 1800x1200 (2.16 MP) canvas
    # of the bundled samples, about a minute and a half on 2 CPU cores. 16 templates, a strong pull
    # towards a wider blur of the content and a little entropy (crisp per-pixel choices) make the
    # cat readable in brick and gravel. Multi-scale mixing with refine is what the seed-options
    # study measured best on both its datasets (BENCHMARKS.md, bench/bench_seed_variants.py, which
    # runs this preset with them and alpha-norm off); the alpha norm (prefer copying) keeps the
    # light regions in copied gravel instead of painted grey. The colour styles are duotones of the
    # greyscale CC0 textures (examples/colour_styles.py): dark bricks and light gravel, so the
    # content's tones can choose the material. Only the final preview is rendered.
    "mosaic": dict(
        depth=3, width=16, kernel=3, templates=16, patch=64, batch=4, steps=1500, d_depth=4, d_width=32, d_kernel=3,
        preview_every=1500, canvas="1800x1200", content_weight=40.0, blur_sigma=6.0, entropy=0.1,
        multi_scale=True, refine=True, alpha_norm=1.0,
        style=[EXAMPLES / "style" / "brick_terracotta.png", EXAMPLES / "style" / "gravel_slate.png"],
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

# Training samples patches, so its cost does not grow with the canvas, but templates, previews and
# the exported model's default renders do: a canvas past this is more likely a typo than a print.
MAX_CANVAS_PIXELS = 2**30


def _option(group, flag: str, help: str | None = None, *, dest: str | None = None, **kwargs) -> None:
    """An option that sets the field FIELDS names (by ``dest``, default the flag's name): its type and
    choices are the field's, and the help shows its default. argparse's own default stays None:
    _resolve tells given from left out."""
    dest = dest or flag[2:].replace("-", "_")
    kwargs["dest"] = dest
    config, name = FIELDS[dest]
    kind = typing.get_type_hints(config)[name]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        kwargs.setdefault("choices", [e.value for e in kind])
    elif kind in (int, float):
        kwargs.setdefault("type", kind)
    default = DEFAULTS[dest]
    shown = None if default is None or isinstance(default, bool) else f"default {default}"
    group.add_argument(flag, help="; ".join(text for text in (help, shown) if text), **kwargs)


def build_parser() -> Parser:
    p = Parser(prog="famos train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
               argument_default=None)
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="RUN_DIR",
                   help="run folder: checkpoints, losses, previews and quality figures")
    p.add_argument("--preset", choices=sorted(PRESETS), help="values of the options left out (default: default, the defaults shown)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("images")
    g.add_argument("--style", type=pathlib.Path, nargs="+", metavar="PATH", help="style images: the memory's templates tile them")
    g.add_argument("--content", type=pathlib.Path, nargs="+", metavar="PATH", help="the first is the canvas's content")
    g = p.add_argument_group("canvas (default: the content image's size)")
    g.add_argument("--canvas", metavar="WxH", help="pixels")
    g.add_argument("--scale", type=float, help="content size times F")
    g.add_argument("--print-size", metavar="SIZE", help="e.g. 120x80cm, 47x31in, 1200x800mm (with --dpi)")
    g.add_argument("--dpi", type=float, help="pixels per inch of --print-size (and the bundle's print resolution)")
    _option(g, "--style-scale", "style pixels per canvas pixel")
    _option(g, "--fold")
    _option(g, "--template-seed")
    g = p.add_argument_group("model")
    g.add_argument("--mode", choices=list(MODES), help=f"parametric: N = 0; copy: I = I_M; default {DEFAULTS['mode']}")
    _option(g, "--templates", metavar="N")
    _option(g, "--depth")
    _option(g, "--width")
    _option(g, "--kernel")
    _option(g, "--res-blocks")
    _option(g, "--full-resolution-head", "a full-resolution up-block to --width channels and a head convolution "
            "after it (1.4x the paper's compute; the decoder of famos models before 2026-12)",
            action="store_const", const=True)
    _option(g, "--multi-scale", "mix the templates at every decoder level too, average-pooled to it (the seed's "
            "--multiScale; needs --width >= --templates; on in --preset mosaic)", action=argparse.BooleanOptionalAction)
    _option(g, "--refine", "a second U-Net repaints and reblends over the copied image, seeing the first pass "
            "(the seed's --refine; 1.8x the compute, a larger halo; on in --preset mosaic)",
            action=argparse.BooleanOptionalAction)
    _option(g, "--no-skip-connections", "a U-Net without the encoder-decoder skips (the seed's --skipConnections "
            "False)", dest="skip_connections", action="store_const", const=False)
    _option(g, "--no-coord-copy", "no ψ coordinates at the levels past the input (the seed's --coordCopy False)",
            dest="coord_copy", action="store_const", const=False)
    _option(g, "--bottleneck-width", "channels at the bottleneck (the seed's --Ubottleneck; default: the doubling "
            "rule)", type=int, metavar="C")
    _option(g, "--noise-local")
    _option(g, "--noise-global")
    _option(g, "--noise-periodic")
    _option(g, "--noise-placement")
    _option(g, "--d-depth")
    _option(g, "--d-width")
    _option(g, "--d-kernel")
    g = p.add_argument_group("data")
    _option(g, "--patch", metavar="P")
    _option(g, "--batch")
    _option(g, "--crop")
    _option(g, "--mirror-style", "random flips of style patches", action="store_const", const=True)
    g = p.add_argument_group("optimization")
    _option(g, "--steps")
    _option(g, "--loss")
    _option(g, "--d-steps")
    _option(g, "--gp-weight")
    _option(g, "--lr")
    g.add_argument("--max-canvas-pixels", type=int, help=f"refuse canvases over this many pixels; default {MAX_CANVAS_PIXELS}")
    _option(g, "--beta1")
    _option(g, "--beta2")
    _option(g, "--seed")
    _option(g, "--content-weight", "lambda")
    _option(g, "--copy-content-weight", "content term on I_M")
    _option(g, "--copy-adversarial-weight", "D also judges the copied image I_M, G is scored on it with this "
            "weight (the seed's fAdvM)")
    _option(g, "--correspondence")
    _option(g, "--blur-sigma")
    _option(g, "--vgg-weights", "local VGG-19 weights (safetensors or torch file)", type=pathlib.Path)
    g = p.add_argument_group("regularizers")
    _option(g, "--entropy")
    _option(g, "--entropy-schedule")
    _option(g, "--entropy-ramp-steps")
    _option(g, "--mix-tv")
    _option(g, "--alpha-norm")
    _option(g, "--alpha-tv")
    _option(g, "--diversity")
    g = p.add_argument_group("run")
    _option(g, "--checkpoint-every")
    _option(g, "--preview-every")
    _option(g, "--preview-max-side")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"default {DEFAULTS['device']}")
    _option(g, "--precision")
    g.add_argument("--threads", type=int, help="CPU threads for torch (fewer is faster on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from famos.training.loop import run
    from famos.training.trainer import Trainer

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
    from famos.training.losses import load_vgg_weights
    from famos.training.trainer import TrainingData

    if not options.get("style"):
        raise UserError("--style is required (one or more style images)")
    if not options.get("content"):
        raise UserError("--content is required (one or more content images)")
    contents = [load_rgb(p) for p in options["content"]]
    styles = [load_rgb(p) for p in options["style"]]
    generator_config, canvas, config = configs(options, given=given, content_size=(contents[0].shape[1], contents[0].shape[0]))
    from famos.training.metrics import check_style_size

    for path, style in zip(options["style"], styles):
        check_style_size(path, style.shape[:2], style_scale=canvas.style_scale)
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
    """Command line over preset over DEFAULTS; also the names the command line gave."""
    preset = PRESETS[args.preset or "default"]
    given = {k: v for k, v in vars(args).items() if v is not None}
    options = {**DEFAULTS, **preset, **given}
    if {"canvas", "print_size"} & given.keys() and "scale" not in given:
        options.pop("scale", None)  # an explicit size replaces the preset's downscaling
    if {"scale", "print_size"} & given.keys() and "canvas" not in given:
        options.pop("canvas", None)  # ... and the preset's canvas
    return options, set(given)


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
            if options[flag] and flag in given:
                raise UserError(f"--mode copy has no alpha (I = I_M); --{flag.replace('_', '-')} does not apply")
            options[flag] = 0.0  # a preset's value for alpha does not apply either
    # a preset's multi-scale mixing needs templates and its refine a blend: they do not apply to the
    # other modes, unless asked for by hand (then the config names the conflict)
    if mode == "parametric" and "multi_scale" not in given:
        options["multi_scale"] = False
    if mode != "full" and "refine" not in given:
        options["refine"] = False
    if options["correspondence"] == "vgg" and not options["vgg_weights"]:
        raise UserError("--correspondence vgg needs --vgg-weights PATH (a local file; nothing is downloaded)")
    if options["vgg_weights"] and options["correspondence"] != "vgg":
        raise UserError("--vgg-weights is only used with --correspondence vgg")
    try:
        noise = _config(NoiseConfig, options)
        generator = _config(GeneratorConfig, options, n_templates=templates, blend=MODES[mode], noise=noise)
        canvas = _config(CanvasConfig, options, height=height, width=width)
    except ValueError as err:
        raise UserError(_as_option(str(err))) from None
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
    vgg_weights = str(options["vgg_weights"]) if options["vgg_weights"] else None  # the checkpoint holds JSON
    config = _config(
        TrainConfig, options, discriminator=_config(DiscriminatorConfig, options),
        losses=_config(LossConfig, options, vgg_weights=vgg_weights), regularizers=_config(RegularizerConfig, options),
    )
    return generator, canvas, config


def _as_option(message: str) -> str:
    """A famos.config message ("n_templates = 300 must be ...") in the words of the command line
    ("--templates 300 must be ..."): the dataclasses validate for every door and name their fields."""
    for dest, (config, name) in FIELDS.items():
        if config in (GeneratorConfig, NoiseConfig, CanvasConfig) and message.startswith(f"{name} = "):
            return f"--{dest.replace('_', '-')} " + message[len(name) + 3 :]
    return message


def _config(config: type, options: dict[str, Any], **fields: Any) -> Any:
    """``config`` from the options FIELDS maps to its fields (Enums from their values), ``fields`` over them."""
    mapped = {name: options[dest] for dest, (owner, name) in FIELDS.items() if owner is config}
    return from_dict(config, {**mapped, **fields})


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
