"""The GPU check's report: the machine it ran on, the PNGs it keeps, and what it writes to OUTDIR
(figures.json with every figure, report.md with the tables a reader wants)."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shutil

GIGAPIXEL_OVERVIEW = "gigapixel_overview.png"  # written by the gigapixel step's render straight into OUTDIR


def environment() -> dict:
    import torch

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": "cpu"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    try:
        import onnxruntime

        info["onnxruntime"] = f"{onnxruntime.__version__} {onnxruntime.get_available_providers()}"
    except ImportError:
        info["onnxruntime"] = "not installed"
    return info


def keep_pngs(outdir: pathlib.Path, steps: dict) -> list[str]:
    """The PNGs that belong in OUTDIR, by name: the gigapixel overview already there, and the training
    run's canvas and last patch preview copied out of the work folder (call it before that goes)."""
    pngs = [GIGAPIXEL_OVERVIEW] if (outdir / GIGAPIXEL_OVERVIEW).is_file() else []
    training = steps.get("training", {})
    for source, target in [(training.get("final_preview"), "training_canvas.png"),
                           (next((p for p in reversed(training.get("previews", [])) if p.endswith("_patches.png")), None),
                            "training_patches.png")]:
        if source and pathlib.Path(source).is_file():
            shutil.copyfile(source, outdir / target)
            pngs.append(target)
    return pngs


def write_report(outdir: pathlib.Path, figures: dict) -> pathlib.Path:
    """figures.json and report.md in ``outdir``; the report's path."""
    (outdir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    (outdir / "report.md").write_text(report_markdown(figures))
    return outdir / "report.md"


def report_markdown(figures: dict) -> str:
    env = figures["environment"]
    steps = figures["steps"]
    lines = [f"# famos GPU check{' (smoke, CPU)' if figures['smoke'] else ''}", "",
             f"{env['date']}, {env['host']}: {env['device']}"
             + (f" ({env['gpu_memory_gib']} GiB)" if "gpu_memory_gib" in env else "")
             + f", {env['cores']} cores, Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), "
               f"onnxruntime {env['onnxruntime']}. Command: `{figures['command']}`, {figures['seconds']:.0f} s in all.", ""]
    lines += ["| step | ok | seconds (limit) | note |", "|---|---|---:|---|"]
    for name, result in steps.items():
        note = result.get("error") or result.get("summary") or ""
        lines.append(f"| {name} | {'yes' if result.get('ok') else 'NO'} | {result['step_seconds']} ({result['limit_seconds']}) | {note} |")
    t = steps.get("throughput", {})
    if t.get("macs_per_pixel"):
        lines += ["", f"## Throughput ({t['device']}, inputs staged once; MP/s of delivered pixels, the share of the floor "
                  "of pixels computed, halo included)", "",
                  f"Multiply-adds per output pixel, counted by hooks on this model's convolutions: {t['macs_per_pixel']:,.0f} "
                  f"(the issue's figure for the paper's architecture: {t['paper_macs_per_pixel']:,}). The compute floor "
                  f"from the counted figure at 790 TFLOP/s bf16: "
                  f"{t['floor_mp_per_s_at_790_tflops']:,.0f} MP/s."
                  + (f" This device's measured bf16 matrix rate (bench_peak.matmul_rate): "
                     f"{t['measured_bf16_flops'] / 1e12:,.1f} TFLOP/s." if t.get("measured_bf16_flops") else "")
                  + (f" Default chunk on this GPU (bf16, half the free memory): {t['default_chunk_bf16']} px." if t.get("default_chunk_bf16") else ""), "",
                  "| backend | precision | autotune | chunk | window MP | s/chunk | MP/s | share of floor | share of measured peak | peak GiB |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in t["rows"]:
            if "error" in r:
                lines.append(f"| {r['backend']} | {r.get('precision', '')} | | | | | {r['error']} | | | |")
            elif "seconds_per_chunk" in r:
                peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
                lines.append(f"| {r['backend']} | {r['precision']} | {'yes' if r['autotune'] else 'no'} | {r['chunk']} | "
                             f"{r['window_mp']:.2f} | {r['seconds_per_chunk']:.3f} | {r['mp_per_s']:.1f} | "
                             f"{r['share_of_floor']:.1%} | {r.get('share_of_measured_peak', 0):.1%} | {peak} |")
            else:
                lines.append(f"| {r['backend']} (host arrays) | fp32 | | {r['chunk']} | | | {r['mp_per_s']:.1f} | "
                             f"{r['share_of_floor']:.1%} | | |")
    for key in ("gigapixel", "gigapixel_zstd"):
        g = steps.get(key, {})
        if g.get("ok"):
            tm = g["timings"]
            lines += ["", f"## {g['megapixels']:,.1f} MP end to end ({g['compression']})", "",
                      f"`{g['command']}`", "",
                      f"- wall {g['wall_seconds']:.1f} s (the render {g['render_seconds']} s; the rest: loading, the overview PNG), "
                      f"{g['megapixels'] / g['wall_seconds']:.1f} MP/s, file {g['bytes'] / 1e9:.2f} GB, {g['chunks']} chunks",
                      f"- device busy {tm.get('device_busy', 0):.1f} s = {g.get('device_busy_share', 0):.0%} of the render; "
                      f"writer waited for pixels {tm.get('waiting_for_pixels', 0):.1f} s, encoded {tm.get('encoding', 0):.1f} s, "
                      f"wrote {tm.get('writing', 0):.1f} s",
                      f"- peak host RSS {g['peak_rss_gib']:.2f} GiB"]
    tr = steps.get("training", {})
    if tr.get("steps_per_s"):
        lines += ["", f"## Training ({tr['preset']} preset)", "",
                  "- steps/s: " + ", ".join(f"{p} {rate:.2f}" for p, rate in tr["steps_per_s"].items())]
        if tr.get("ok"):
            q = tr["quality"]
            lines += [f"- bf16 run: {tr['run_steps']} steps in {tr['run_seconds']:.0f} s: content error "
                      f"{q.get('content_error', float('nan')):.5f}, style distance {q.get('style_distance', float('nan')):.5f}",
                      f"- `{tr['command']}`"]
    lines += ["", "PNGs next to this report: " + ", ".join(figures["pngs"]) if figures["pngs"] else ""]
    return "\n".join(lines) + "\n"
