"""`famos render --backend torch` per precision on this machine's device: seconds, MP/s and the
8-bit difference from float32, on an untrained model of the paper's architecture (depth 4,
width 80, N 30; speed does not depend on training).

    python bench/bench_precision.py --size 1024x768 --chunk 512 [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", help="default: fp32,bf16 on a CPU (fp16 needs CUDA), fp32,bf16,fp16 on CUDA")
    args = parser.parse_args(argv)

    import numpy as np
    import tifffile

    from common import famos_json
    from gpu_steps import step_bundle

    with tempfile.TemporaryDirectory(prefix="famos-bench-precision-") as folder:
        work = pathlib.Path(folder)
        step_bundle(work, smoke=False)
        rows, reference = [], None
        precisions = args.precisions or ("fp32,bf16,fp16" if args.device.startswith("cuda") else "fp32,bf16")
        for precision in precisions.split(","):
            out = work / f"{precision}.tif"
            argv = [str(work / "bundle"), "--out", str(out), "--size", args.size, "--chunk", str(args.chunk),
                    "--backend", "torch", "--device", args.device, "--precision", precision, "--quiet"]
            code, report = famos_json(["render", *argv])
            if code != 0:
                rows.append((precision, None, None, None, None))
                continue
            pixels = tifffile.imread(out).astype(np.int16)
            reference = pixels if reference is None else reference
            diff = np.abs(pixels - reference)
            rows.append((precision, report["seconds"], report["megapixels"] / report["seconds"], diff.max(), diff.mean()))
    print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.date.today()}, device {args.device}: "
          f"python bench/bench_precision.py --size {args.size} --chunk {args.chunk} --device {args.device}")
    print("| precision | seconds | MP/s | max 8-bit diff vs fp32 | mean |")
    print("|---|---:|---:|---:|---:|")
    for precision, seconds, rate, worst, mean in rows:
        if seconds is None:
            print(f"| {precision} | failed | | | |")
        else:
            print(f"| {precision} | {seconds:.2f} | {rate:.3f} | {worst} | {mean:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
