"""Soak: 8, 16 and 32 concurrent clients against one `famos serve` on loopback, for a bounded time.

    python bench/bench_soak.py [--clients 8 16 32] [--seconds 20]

Each client loops over a mix: a streamed render (pixels checked against the same render done
alone), a job (its downloaded file checked byte for byte against the solo render), and a job
cancelled right after submission; one more client opens streamed renders and never reads them.
Prints calls by status, wrong outputs (must be 0), the server's RSS and threads at the start and
the end of each round (flat is good) and its peak RSS, and MP/s delivered.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

SIZE = (256, 384)  # (height, width) of every render: small, so that the server, not the model, is soaked
SEEDS = range(4)


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)

    import grpc
    import tifffile

    from bench_render import build_bundle
    from famos.clients.render_client import RenderClient
    from famos.bundle import load_bundle
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings
    from famos.tiff_options import TiffOptions
    from famos.protos.famos.render.v1 import render_pb2 as pb
    from famos.protos.famos.render.v1 import render_pb2_grpc

    work = pathlib.Path(tempfile.mkdtemp(prefix="famos-bench-soak-"))
    models = work / "models"
    models.mkdir()
    shutil.copytree(build_bundle(work, side=512, width=8), models / "soak")
    renderer = Renderer(load_bundle(models / "soak"))
    solo_files, solo_pixels = {}, {}
    for seed in SEEDS:  # what every output must equal
        path = work / f"solo{seed}.tif"
        render_tiff(renderer, path, settings=RenderSettings(seed=seed, chunk=128, size=SIZE), options=TiffOptions(tile=128))
        solo_files[seed], solo_pixels[seed] = path.read_bytes(), tifffile.imread(path)
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cores; renders of {SIZE[1]}x{SIZE[0]} px, "
          f"{args.seconds:.0f} s per round\n")
    print("| clients | calls | OK | RESOURCE_EXHAUSTED | CANCELLED | other errors | wrong outputs | MP/s | "
          "stalled streams cut | RSS start → end MiB | threads start → end | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for n_clients in args.clients:
        store = work / f"store{n_clients}"
        store.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(store), "--port", "0",
             "--workers", "4", "--max-queue", "16", "--job-workers", "2", "--stream-idle-timeout", "3",
             "--max-jobs", "1000", "--log-level", "ERROR"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        address = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        with RenderClient(address) as client:  # warm up: the model loaded, the job threads started
            client.render_to_tiff("soak", work / "warm.tif", seed=0, chunk=128, size=SIZE)
            client.wait(client.submit("soak", seed=0, chunk=128, size=SIZE).id)
        start_status = proc_status(process.pid)
        statuses: collections.Counter = collections.Counter()
        wrong, pixels, cut = [0], [0], [0]
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds

        def count(status: str, delivered: int = 0) -> None:
            with lock:
                statuses[status] += 1
                pixels[0] += delivered

        def client_loop(k: int) -> None:
            rng = random.Random(k)
            with RenderClient(address) as client:
                while time.monotonic() < deadline:
                    seed = rng.choice(SEEDS)
                    kind = rng.choice(("stream", "stream", "job", "cancel"))
                    try:
                        if kind == "stream":
                            out = work / f"c{n_clients}-{k}.tif"
                            client.render_to_tiff("soak", out, seed=seed, chunk=128, size=SIZE, tiff=TiffOptions(tile=128))
                            if not np.array_equal(tifffile.imread(out), solo_pixels[seed]):
                                wrong[0] += 1
                            count("OK", SIZE[0] * SIZE[1])
                        elif kind == "job":
                            job = client.wait(client.submit("soak", seed=seed, chunk=128, size=SIZE,
                                                            tiff=TiffOptions(tile=128)).id)
                            if job.state.value != "succeeded":
                                count(f"job {job.state.value}")
                                continue
                            out = work / f"j{n_clients}-{k}.tif"
                            client.download(job.id, out)
                            if out.read_bytes() != solo_files[seed]:
                                wrong[0] += 1
                            count("OK", SIZE[0] * SIZE[1])
                        else:
                            job = client.submit("soak", seed=seed, chunk=128, size=SIZE)
                            client.cancel(job.id)
                            count("OK")
                    except Exception as err:  # noqa: BLE001 - counted by status
                        count(getattr(getattr(err, "code", None), "name", type(err).__name__))

        def stalled_loop() -> None:
            while time.monotonic() < deadline:
                channel = grpc.insecure_channel(address)
                call = render_pb2_grpc.RenderServiceStub(channel).Render(
                    pb.RenderRequest(model="soak", chunk=64, size=pb.OutputSize(width=4000, height=4000)))
                time.sleep(max(0.0, deadline - time.monotonic()))  # never reads during the round
                try:
                    next(call)
                    for _ in call:
                        pass
                except grpc.RpcError as err:
                    if err.code() is grpc.StatusCode.CANCELLED:
                        cut[0] += 1
                channel.close()

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(n_clients)]
        threads.append(threading.Thread(target=stalled_loop))
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - started
        time.sleep(2.0)  # let the server settle before reading its end state
        end_status = proc_status(process.pid)
        process.terminate()
        process.wait(timeout=60)
        other = sum(v for k, v in statuses.items() if k not in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED"))
        print(f"| {n_clients} | {sum(statuses.values())} | {statuses['OK']} | {statuses['RESOURCE_EXHAUSTED']} | "
              f"{statuses['CANCELLED']} | {other} {dict((k, v) for k, v in statuses.items() if k not in ('OK', 'RESOURCE_EXHAUSTED', 'CANCELLED')) or ''} | "
              f"{wrong[0]} | {pixels[0] / 1e6 / seconds:.2f} | {cut[0]} | "
              f"{start_status['VmRSS'] / 1024:.0f} → {end_status['VmRSS'] / 1024:.0f} | "
              f"{start_status['Threads']} → {end_status['Threads']} | {end_status['VmHWM'] / 1024:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
