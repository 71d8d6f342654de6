"""Training speed (iterations/s) of the tiny and default presets, and the quality a short tiny run
gains over the untrained generator, on the bundled samples.

    python bench/bench_training.py [--steps 5] [--quality-steps 200] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per preset (after one warm-up step)")
    parser.add_argument("--quality-steps", type=int, default=200, help="tiny run length for the quality table (0: skip)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# famos training bench: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    print(f"{'preset':<8} {'model':<34} {'batch x P':>10} {'s/step':>8} {'it/s':>8}")
    for preset in ("tiny", "default"):
        trainer = _trainer(preset, device=device, steps=args.steps + 1)
        trainer.train_step()  # warm-up: allocator, first-call kernels
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / args.steps
        g = trainer.generator.config
        model = f"depth {g.depth} width {g.width} k{g.kernel} N {g.n_templates}"
        print(f"{preset:<8} {model:<34} {trainer.config.batch:>4} x {trainer.config.patch:<3} {per_step:>8.3f} {1 / per_step:>8.2f}")

    if args.quality_steps:
        from famos.training.loop import run
        from famos.training.metrics import evaluate

        trainer = _trainer("tiny", device=device, steps=args.quality_steps)
        before = evaluate(trainer.generator, content=trainer.data.contents[0], styles=list(trainer.data.styles))
        trainer.generator.train()
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            run(trainer, pathlib.Path(folder), progress=False)
            seconds = time.perf_counter() - start
        after = evaluate(trainer.generator, content=trainer.data.contents[0], styles=list(trainer.data.styles))
        print(f"\n# quality, tiny preset, {args.quality_steps} steps ({seconds:.0f} s incl. previews), lower is better")
        print(f"{'':<12} {'content error':>14} {'style distance':>15}")
        print(f"{'untrained':<12} {before.content_error:>14.5f} {before.style_distance:>15.5f}")
        print(f"{'trained':<12} {after.content_error:>14.5f} {after.style_distance:>15.5f}")
    return 0


def _trainer(preset: str, *, device, steps: int, precision: str = "fp32"):
    from famos.canvas import load_rgb
    from famos.training import cli
    from famos.training.trainer import Trainer, TrainingData

    args = cli.build_parser().parse_args(["--preset", preset, "--out", "unused", "--steps", str(steps)])
    options, given = cli._resolve(args)
    options = {**options, "precision": precision}
    if preset == "default":  # the default preset has no sample defaults; bench it on the tiny samples
        options = {**options, "style": cli.PRESETS["tiny"]["style"], "content": cli.PRESETS["tiny"]["content"]}
    contents = [load_rgb(p) for p in options["content"]]
    styles = [load_rgb(p) for p in options["style"]]
    generator_config, canvas, config = cli.configs(
        options, given=given, content_size=(contents[0].shape[1], contents[0].shape[0])
    )
    data = TrainingData(contents=tuple(contents), styles=tuple(styles), provenance={})
    return Trainer.start(config=config, generator_config=generator_config, canvas=canvas, data=data, device=device)


if __name__ == "__main__":
    raise SystemExit(main())
