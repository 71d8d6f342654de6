"""Runners: a loaded bundle's graph as a callable ``run(content, origin, noise, canvas=None) -> image``
on numpy arrays (the contract is ``famos.window``), on one backend and device.

    auto         the default: resolved per machine by ``RunnerOptions.resolved``
    openvino     model.onnx in OpenVINO on the CPU, float32 or bfloat16 (``famos.openvino_runner``)
    onnx         model.onnx (or model_fp16.onnx) in onnxruntime: CPU, CUDA or TensorRT provider
    torchscript  model.ts in torch.jit (``famos.torch_runners``)
    torch        generator.safetensors rebuilt as the eager generator: the reference

This module imports no torch and no OpenVINO: the ONNX path needs only numpy and onnxruntime, and
the other runners are imported only when one of them is asked for (OpenVINO is probed when the
automatic backend is resolved on a CPU).
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import tempfile
from typing import Any

import numpy as np

from famos.bundle import IMAGE_OUTPUT, ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, Bundle, GraphInputs
from famos.config import Precision
from famos.errors import BackendUnavailable, BundleError, UserError, window_failed
from famos.window import WindowRunner


AUTO_PRECISION = "auto"  # the command line's name for RunnerOptions.precision None


class Backend(enum.Enum):
    AUTO = "auto"  # RunnerOptions.resolved: the fast path of this machine
    OPENVINO = "openvino"
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TORCH = "torch"


@dataclasses.dataclass(frozen=True)
class RunnerOptions:
    """How to run a bundle: the same choices in `famos render`, `famos batch` and `famos serve`.
    ``backend`` AUTO and ``precision`` None are resolved per machine (``resolved``) before a runner
    opens, and what records or ships options (a TIFF's description, a cluster's workers) takes the
    resolved ones."""

    backend: Backend = Backend.AUTO
    device: str = "cpu"  # cpu, cuda or cuda:N
    precision: Precision | None = None  # of the U-Net (fp16 within the manifest's fp16_tolerance); None: auto
    tensorrt: bool = False  # onnxruntime's TensorRT provider before CUDA (onnx backend, cuda device)
    autotune: bool = False  # cuDNN autotuning (torch backends on CUDA): faster, not reproducible across processes
    threads: int = 0  # CPU threads of one runner; 0: the library's default (every core). Cluster
    # workers set it to the cores Ray gives them, so that workers sharing a machine do not oversubscribe it.

    def __post_init__(self) -> None:
        check_device(self.device)
        refusal = _refusal(self.backend, self.device, self.precision, tensorrt=self.tensorrt)
        if refusal is not None:
            raise BackendUnavailable(refusal)

    @property
    def fp16(self) -> bool:
        return self.precision is Precision.FP16

    def resolved(self) -> RunnerOptions:
        """These options with a concrete backend and precision for this machine.

        Automatic backend: on a CUDA device onnx (with --tensorrt too); on the CPU openvino where it
        imports, else onnx. With a precision asked for, the first of openvino, onnx and torch that
        runs it here. Automatic precision: bf16 for openvino on a CPU with native bfloat16 (OpenVINO
        reports BF16), else fp32."""
        backend, precision = self.backend, self.precision
        if backend is Backend.AUTO:
            backend = self._automatic_backend()
        if precision is None:
            precision = Precision.BF16 if backend is Backend.OPENVINO and _openvino_runs(Precision.BF16) else Precision.FP32
        if (backend, precision) == (self.backend, self.precision):
            return self
        return dataclasses.replace(self, backend=backend, precision=precision)

    def _automatic_backend(self) -> Backend:
        if self.tensorrt:  # TensorRT is one of onnxruntime's providers
            return Backend.ONNX
        if self.precision is None:
            on_cpu = check_device(self.device) is None
            return Backend.OPENVINO if on_cpu and _openvino_runs(Precision.FP32) else Backend.ONNX
        # onnx runs fp32 and fp16 (on any device: the bundle's fp16 graph), torch bf16: one always fits
        return next(
            b for b in (Backend.OPENVINO, Backend.ONNX, Backend.TORCH)
            if _refusal(b, self.device, self.precision) is None
            and (b is not Backend.OPENVINO or _openvino_runs(self.precision))
        )

    def device_settings(self):
        from famos.torch_runners import DeviceSettings

        options = self.resolved()
        return DeviceSettings(device=options.device, precision=options.precision, autotune=options.autotune)


def _refusal(backend: Backend, device: str, precision: Precision | None, *, tensorrt: bool = False) -> str | None:
    """Why ``backend`` cannot run ``precision`` on ``device`` on any machine (None: it can, as far
    as can be told without probing this one); AUTO and None are checked once resolved."""
    cuda = device.startswith("cuda")
    if tensorrt and backend not in (Backend.ONNX, Backend.AUTO):
        return "--tensorrt: TensorRT is available through the onnx backend only"
    if tensorrt and not cuda:
        return "--tensorrt: needs --device cuda or cuda:N"
    if backend is Backend.OPENVINO and cuda:
        return f"--backend openvino runs on the CPU only: use --device cpu, or --backend onnx on {device}"
    if backend is Backend.OPENVINO and precision is Precision.FP16:
        return "--precision fp16 with --backend openvino: OpenVINO runs on the CPU here; use bf16 or fp32"
    if backend is Backend.ONNX and precision is Precision.BF16:
        return ("--precision bf16 with --backend onnx: bundles carry float32 and float16 ONNX graphs; use "
                "--backend openvino (CPU) or torch")
    if backend is Backend.TORCHSCRIPT and precision not in (None, Precision.FP32):
        return f"--precision {precision.value}: use --backend torch (model.ts is float32)"
    if backend is Backend.TORCH and precision is Precision.FP16 and not cuda:
        # measured: the default U-Net's float16 convolutions on a CPU take minutes per chunk
        return ("--precision fp16 with --backend torch needs --device cuda (a CPU has no fast float16 "
                "convolutions); use bf16 or fp32 on a CPU")
    return None


def _openvino_runs(precision: Precision) -> bool:
    """Whether OpenVINO imports here and this CPU runs ``precision`` natively."""
    from famos import openvino_runner  # imports no OpenVINO until asked

    capabilities = openvino_runner.cpu_capabilities()
    return capabilities is not None and (precision is not Precision.BF16 or "BF16" in capabilities)


def check_device(device: str) -> int | None:
    """The CUDA device index of ``device`` (None for the CPU); UserError for anything else."""
    kind, colon, index = device.partition(":")
    if kind == "cpu" and not colon:
        return None
    if kind == "cuda" and (not colon or index.isdigit()):
        return int(index or 0)
    raise UserError(f"device {device!r}: use cpu, cuda or cuda:N")


def add_runner_arguments(parser) -> None:
    """``--backend --device --precision --tensorrt --autotune``, read back with ``runner_options``."""
    defaults = RunnerOptions()
    group = parser.add_argument_group("backend and device")
    group.add_argument("--backend", choices=[b.value for b in Backend], default=defaults.backend.value,
                       help="auto (default): on a CPU openvino where it is installed, else onnx; onnx on cuda; "
                            "with a --precision, the first of openvino, onnx, torch that runs it. openvino (CPU), "
                            "onnx (onnxruntime), torchscript, or torch (the eager reference)")
    group.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    group.add_argument("--precision", choices=[AUTO_PRECISION, *(p.value for p in Precision)],
                       default=defaults.precision.value if defaults.precision else AUTO_PRECISION,
                       help="of the U-Net: auto (default): bf16 for openvino on a CPU with native bfloat16, "
                            "else fp32; fp32; bf16 (openvino on such a CPU, or torch); fp16 (torch on cuda, or onnx "
                            "with a bundle exported with --fp16)")
    group.add_argument("--tensorrt", action="store_true",
                       help="onnx on cuda: put onnxruntime's TensorRT provider first (engines cached per bundle)")
    group.add_argument("--autotune", action="store_true",
                       help="torch on cuda: let cuDNN time its algorithms per chunk shape (faster; bytes may then "
                            "differ from another process's by a rounding step, so a resumed job may not match)")


def runner_options(args) -> RunnerOptions:
    precision = None if args.precision == AUTO_PRECISION else Precision(args.precision)
    return RunnerOptions(backend=Backend(args.backend), device=args.device, precision=precision,
                         tensorrt=args.tensorrt, autotune=args.autotune)


def open_runner(bundle: Bundle, options: RunnerOptions = RunnerOptions()) -> WindowRunner:
    """A runner of ``bundle``'s graph on ``options.resolved()``; BackendUnavailable when this
    machine cannot run it."""
    options = options.resolved()
    manifest = bundle.manifest
    inputs = manifest.graph_inputs()
    if options.backend is Backend.OPENVINO:
        from famos.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(bundle.path / ONNX_FILE, inputs=inputs, precision=options.precision,
                              threads=options.threads)
    if options.backend is Backend.ONNX:
        name = manifest.fp16_file if options.fp16 else ONNX_FILE
        if name is None:
            raise BundleError(f"{bundle.path}: no fp16 graph in this bundle (export it with --fp16)")
        cache = pathlib.Path(tempfile.gettempdir()) / "famos-tensorrt" / bundle.sha256[:16]
        providers = onnx_providers(options, cache_dir=cache)
        return OnnxRunner(bundle.path / name, providers=providers, inputs=inputs, threads=options.threads,
                          device_id=check_device(options.device))
    from famos import torch_runners  # torch is optional: loaded only for its own backends

    if options.threads:
        torch_runners.set_threads(options.threads)
    torch_runners.configure_math(options.device_settings())

    if options.backend is Backend.TORCHSCRIPT:
        return torch_runners.TorchScriptRunner(bundle.path / TORCHSCRIPT_FILE, settings=options.device_settings(), inputs=inputs)
    return torch_runners.eager_runner(bundle.path / WEIGHTS_FILE, settings=options.device_settings())


class OnnxRunner:
    """Windows through one onnxruntime session, all graph optimizations on. On a CUDA device the
    inputs and the image are bound to device memory (IO binding): one upload per input, the image
    kept on the GPU until it is copied out once, and the diagnostic outputs never leave it."""

    def __init__(self, model: pathlib.Path, *, providers: list[Any], inputs: GraphInputs, threads: int = 0,
                 device_id: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
        if device_id is not None and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to the CPU when its CUDA libraries do not load (another CUDA major)
            raise BackendUnavailable(f"device cuda:{device_id}: onnxruntime's CUDA provider did not load here "
                                     "(an onnxruntime-gpu built for another CUDA version?)")
        self.inputs = inputs
        self.device_id = device_id
        self._ort = ort
        # the inputs the graph kept: an exporter drops one the model never reads (the canvas of a
        # U-Net without ψ, --no-coord-copy), though the manifest names it
        self._names = {i.name for i in self.session.get_inputs()}
        # a failing window is raised as GraphFailed, said once: not also logged by onnxruntime
        self._quiet = ort.RunOptions()
        self._quiet.log_severity_level = 4

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: np.ndarray | None, canvas: np.ndarray | None = None
    ) -> np.ndarray:
        feeds = {name: array for name, array in self.inputs(content, origin, noise, canvas).items() if name in self._names}
        state = self._ort.capi.onnxruntime_pybind11_state
        try:
            if self.device_id is None:
                return self.session.run([IMAGE_OUTPUT], feeds, self._quiet)[0]
            binding = self.session.io_binding()
            for name, array in feeds.items():
                binding.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id))
            binding.bind_output(IMAGE_OUTPUT, "cuda", self.device_id)
            self.session.run_with_iobinding(binding, self._quiet)
            return binding.copy_outputs_to_cpu()[0]
        except (state.Fail, state.InvalidArgument, state.RuntimeException, state.NotImplemented) as err:
            # a graph that loaded but cannot compute this window: the bundle's problem, said as such
            raise window_failed("onnxruntime", content.shape, err) from None


def check_available(options: RunnerOptions) -> None:
    """BackendUnavailable now when this machine cannot run ``options`` (resolved): a server checks
    at start rather than accepting calls and failing each one."""
    options = options.resolved()
    if options.backend is Backend.OPENVINO:
        from famos.openvino_runner import check_precision

        check_precision(options.precision)
    elif options.backend is Backend.ONNX:
        onnx_providers(options, cache_dir=pathlib.Path(tempfile.gettempdir()))
    else:
        from famos.torch_runners import torch_device

        torch_device(options.device_settings())


def onnx_providers(options: RunnerOptions, *, cache_dir: pathlib.Path) -> list[Any]:
    """Execution providers for a device, best first, with the CPU as the fallback for any node
    the accelerator's provider does not take."""
    import onnxruntime as ort

    device_id = check_device(options.device)
    if device_id is None:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailable(
            f"device {options.device!r}: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    if options.tensorrt:
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailable("--tensorrt: this onnxruntime has no TensorrtExecutionProvider")
        # Engines take minutes to build: cache them per bundle, outside the (possibly read-only) bundle.
        trt = {
            "device_id": device_id,
            "trt_fp16_enable": options.fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
        }
        providers.insert(0, ("TensorrtExecutionProvider", trt))
    return providers
