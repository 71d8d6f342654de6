"""The OpenVINO runner: a bundle's model.onnx compiled by OpenVINO for the CPU, in float32 or in
bfloat16 (on a CPU with native bfloat16: AMX or AVX-512 BF16), under the window contract of
``famos.window``.

OpenVINO is optional (``pip install "famos[openvino]"``) and imported inside these functions
only. Its bytes are reproducible (the same window gives the same bytes in every process, at any
thread count) but not chunk-exact: a window's pixels may differ by one 8-bit level from the same
pixels in a window of another shape, on about 1e-6 of the values in float32 and 2 % in bfloat16.

The graph is compiled once with its dynamic height and width. Measured against reshaping the
model to each window's static shape (the paper's U-Net in bfloat16 on a 2-core Xeon with AMX): a
static shape computes a 2192 px window (chunk 2048) about 5 % faster, but each new shape
costs a compile (0.3 s) and a fresh request's first, slower inference, and in a render's row
order (a new shape at each row's first and last chunks) the two took the same time: 43.4 and
43.7 s dynamic against 43.9 and 46.7 s static for 16 windows of 1100 px. The dynamic graph holds
more memory (peak RSS 9.3 GiB against 5.1 at 2192 px; float32 11.5 against 4.7), less than
onnxruntime at the same window (12.6), on which the server's memory estimate was measured.
"""

from __future__ import annotations

import functools
import pathlib
import threading

import numpy as np

from famos.bundle import IMAGE_OUTPUT, GraphInputs
from famos.config import Precision
from famos.errors import BackendUnavailable, window_failed

INSTALL = 'pip install "famos[openvino]"'
# OpenVINO's names for the precisions it runs a graph in (its INFERENCE_PRECISION_HINT)
HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable(f"--backend openvino: OpenVINO is not installed ({INSTALL})") from None
    return openvino


@functools.cache
def cpu_capabilities() -> frozenset[str] | None:
    """OpenVINO's optimization capabilities of this CPU ("FP32", "BF16", ...); None when OpenVINO
    does not import here. Asked once per process: the answer decides the automatic backend."""
    try:
        openvino = _openvino()
    except BackendUnavailable:
        return None
    return frozenset(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def check_precision(precision: Precision) -> None:
    """BackendUnavailable when OpenVINO is missing, or this CPU cannot run ``precision`` natively:
    without native bfloat16 OpenVINO simulates it (slower than float32) or computes float32, and
    the file would record bf16 either way."""
    capabilities = cpu_capabilities()
    if capabilities is None:
        _openvino()  # raises the install message
    if precision is Precision.BF16 and "BF16" not in capabilities:
        raise BackendUnavailable("--precision bf16 with --backend openvino: this CPU has no native bfloat16 "
                                 "(OpenVINO's CPU capabilities lack BF16); use --precision fp32")


class OpenVinoRunner:
    """Windows through one OpenVINO infer request on the CPU. A render calls it from its one device
    thread, but a server's concurrent renders of one model share its runner, and an infer request
    takes one window at a time (another call raises "Infer Request is busy"): the windows take
    turns, each inference using every core it is given."""

    def __init__(self, model: pathlib.Path, *, inputs: GraphInputs, precision: Precision = Precision.FP32,
                 threads: int = 0):
        check_precision(precision)
        openvino = _openvino()
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision]}  # explicit: OpenVINO picks bf16 on an AMX CPU
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = _compile_on_own_thread(core, core.read_model(str(model)), config)
        self.request = self.compiled.create_infer_request()
        self.image = self.compiled.output(IMAGE_OUTPUT)
        # the inputs the graph kept (an exporter drops one the model never reads: OnnxRunner's note)
        self._names = {name for port in self.compiled.inputs for name in port.get_names()}
        self.inputs = inputs
        self.precision = precision
        self._turn = threading.Lock()

    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: np.ndarray | None, canvas: np.ndarray | None = None
    ) -> np.ndarray:
        feeds = {name: array for name, array in self.inputs(content, origin, noise, canvas).items() if name in self._names}
        with self._turn:
            try:
                results = self.request.infer(feeds)  # copies the outputs out of the request
            except RuntimeError as err:  # OpenVINO's one exception type: the graph failed on this window
                raise window_failed("openvino", content.shape, err) from None
        return np.asarray(results[self.image], dtype=np.float32)


def _compile_on_own_thread(core, model, config: dict):
    """``core.compile_model`` on a thread of its own. OpenVINO's CPU plugin replaces the compiling
    thread's signal stack (sigaltstack) with a 20 KB one of its own and frees it with the compiled
    model, maybe from another thread; on the main thread the next signal (Ctrl-C, the server's
    SIGTERM) then ran Python's handler on freed memory: a segfault, seen in the test suite."""
    done: dict = {}

    def compile_model() -> None:
        try:
            done["compiled"] = core.compile_model(model, "CPU", config)
        except BaseException as err:  # noqa: BLE001 - raised again on the caller's thread
            done["error"] = err

    thread = threading.Thread(target=compile_model, name="openvino-compile")
    thread.start()
    thread.join()
    if "error" in done:
        raise done["error"]
    return done["compiled"]

