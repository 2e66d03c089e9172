"""How an image encoder is executed: the runtime (PyTorch eager or OpenVINO) and the precision.

Measured on 2 cores of an AMD EPYC with AVX2 (benchmarks/speed.py): the LiteMedSAM encoder takes
2.3 s per 256x256 slice in fp32 PyTorch eager and 0.86 s in OpenVINO fp32, with features equal to
1e-5; bf16 autocast on a CPU without native bf16 takes 56 s. So ``auto`` picks OpenVINO in the
precision the CPU runs natively (bf16 only where the CPU has avx512_bf16 or AMX), and falls back
to PyTorch when OpenVINO is missing or cannot convert the model. On CUDA, ``auto`` is PyTorch with
autocast in bf16 where the GPU supports it, else fp16.

The converted OpenVINO model is cached in the user's cache folder (``MEDSAM2_CACHE_DIR``, else
platformdirs' user cache dir), keyed by the weights' SHA-256, the input shape, medsam2's version
and OpenVINO's version; never in the working folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from medsam2.backbones.registry import PRECISIONS, RUNTIMES  # noqa: F401  (their owner is the registry)
from medsam2.errors import CheckpointError, UsageError


@dataclass(frozen=True)
class ExecutionPlan:
    """The runtime and precision an encoder runs with, and why.

    Attributes:
        runtime: "torch" or "openvino".
        precision: "fp32", "bf16" or "fp16".
        notes: warnings for the report (a fallback taken, an emulated precision).
    """

    runtime: str
    precision: str
    notes: tuple[str, ...] = ()


#: the CPU flags that decide how fast the encoder runs and which precision ``auto`` picks
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none); read once per process."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        text = cpuinfo.read_text(errors="ignore") if cpuinfo.is_file() else ""
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (avx512_bf16 or AMX); probed once per process.

    Reads /proc/cpuinfo on Linux; elsewhere asks PyTorch's CPU capability (no bf16 when unsure).
    """
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return "AMX" in str(capability).upper()


def describe_cpu() -> str:
    """One line: which of :data:`CPU_FLAGS_OF_INTEREST` this CPU has, and the CPU plan that
    ``--runtime auto --precision auto`` resolves to here, e.g.
    ``avx2 yes, avx512f yes, avx512_bf16 yes, amx_tile no, amx_bf16 no; auto -> openvino bf16``."""
    flags = cpu_flags()
    listed = ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in CPU_FLAGS_OF_INTEREST)
    plan = plan_execution("auto", "auto", torch.device("cpu"))
    return f"{listed}; auto -> {plan.runtime} {plan.precision}"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def plan_execution(runtime: str, precision: str, device: torch.device) -> ExecutionPlan:
    """Resolve ``--runtime`` and ``--precision`` for a device.

    Raises:
        UsageError: an unknown name, OpenVINO asked for but not installed or not on a CPU, fp16 on a CPU.
    """
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    notes: list[str] = []
    if device.type == "cuda":
        if runtime == "openvino":
            raise UsageError("--runtime openvino runs on the CPU only; use --runtime torch (or auto) with --device cuda")
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return ExecutionPlan("torch", precision)
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 is for GPUs; on a CPU use fp32 or bf16 (or auto)")
    if device.type != "cpu":  # mps: eager PyTorch, fp32 unless asked
        if runtime == "openvino":
            raise UsageError("--runtime openvino runs on the CPU only; use --runtime torch with this device")
        return ExecutionPlan("torch", "fp32" if precision == "auto" else precision)
    native_bf16 = cpu_has_native_bf16()
    if precision == "auto":
        precision = "bf16" if native_bf16 else "fp32"
    if runtime == "openvino" and not openvino_available():
        raise UsageError("--runtime openvino needs the 'openvino' package: pip install openvino (or use --runtime torch)")
    if runtime == "auto":
        runtime = "openvino" if openvino_available() else "torch"
        if runtime == "torch":
            notes.append("OpenVINO is not installed; the encoder runs in PyTorch eager (about 2.3x slower on CPUs)")
    if precision == "bf16" and not native_bf16:
        if runtime == "openvino":
            notes.append("bf16 was asked for but this CPU has no native bf16 (avx512_bf16/AMX): OpenVINO runs fp32")
            precision = "fp32"
        else:
            notes.append("bf16 was asked for but this CPU has no native bf16 (avx512_bf16/AMX): it is emulated, about 25x slower than fp32")
    return ExecutionPlan(runtime, precision, tuple(notes))


def cache_root() -> Path:
    """The folder where converted models are kept: $MEDSAM2_CACHE_DIR, else the user cache dir."""
    override = os.environ.get("MEDSAM2_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("medsam2"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TorchEncoder:
    """Runs a module in PyTorch eager, under autocast when the precision is bf16 or fp16; returns
    the module's outputs as a tuple."""

    def __init__(self, module: torch.nn.Module, device: torch.device, precision: str) -> None:
        self.module = module
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.dtype is None:
            return _as_tuple(self.module(batch))
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            return tuple(out.float() for out in _as_tuple(self.module(batch)))


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


class OpenVINOModel:
    """A module converted to OpenVINO for fixed input shapes and compiled for the CPU in a precision.

    The conversion (about 17 s for LiteMedSAM's encoder, 2 s for its decoder) happens once per
    weights file, graph and version; later runs load the cached model (about 0.7 s).
    """

    def __init__(
        self, make_module: Callable[[], torch.nn.Module], input_shapes: tuple[tuple[int, ...], ...], weights_key: str, precision: str
    ) -> None:
        """``make_module`` is called only when the converted model is not cached yet."""
        import openvino as ov

        self.input_shapes = input_shapes
        folder = cache_root() / "openvino" / self._key(weights_key, input_shapes, ov.__version__)
        model_path = folder / "model.xml"
        if not model_path.is_file():
            self._convert(make_module(), input_shapes, folder)
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # as many threads as torch uses, so that batch workers (torch.set_num_threads) share the cores
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        }
        self.compiled = core.compile_model(str(model_path), "CPU", config)
        self.model_path = model_path

    @staticmethod
    def _key(weights_key: str, input_shapes: tuple[tuple[int, ...], ...], ov_version: str) -> str:
        from medsam2._version import __version__

        text = f"{weights_key}|{input_shapes}|medsam2 {__version__}|openvino {ov_version}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @staticmethod
    def _convert(module: torch.nn.Module, input_shapes: tuple[tuple[int, ...], ...], folder: Path) -> None:
        import openvino as ov

        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
        try:
            examples = tuple(torch.zeros(shape) for shape in input_shapes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = ov.convert_model(
                    module, example_input=examples if len(examples) > 1 else examples[0], input=[list(s) for s in input_shapes]
                )
            ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            try:
                os.replace(staging, folder)
            except OSError:  # another process finished first: keep its copy
                if not (folder / "model.xml").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The module's outputs for inputs of the converted shapes (float32, on the CPU)."""
        result = self.compiled(tuple(t.detach().cpu().numpy() for t in inputs))
        return tuple(torch.from_numpy(result[i].copy()) for i in range(len(result)))


class OpenVINOEncoder(OpenVINOModel):
    """An image encoder in OpenVINO for one input shape (N=1, C, S, S); a batch is run item by item
    and the module's outputs are returned batched again, as a tuple."""

    def __init__(
        self, make_module: Callable[[], torch.nn.Module], input_shape: tuple[int, int, int, int], weights_key: str, precision: str
    ) -> None:
        super().__init__(make_module, (input_shape,), weights_key, precision)

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        per_item = [[output[0] for output in self.run(item[None])] for item in batch.cpu()]
        return tuple(torch.stack(outputs) for outputs in zip(*per_item))


def build_encoder(
    make_module: Callable[[], torch.nn.Module],
    plan: ExecutionPlan,
    device: torch.device,
    input_shape: tuple[int, int, int, int],
    weights_digest: str,
    graph: str,
) -> tuple[Callable[[torch.Tensor], tuple[torch.Tensor, ...]], ExecutionPlan]:
    """An encoder callable for the plan; falls back to PyTorch when OpenVINO conversion fails.

    Arguments:
        make_module: builds the encoder's PyTorch module (called only where it runs in PyTorch, or
            to convert it to OpenVINO the first time).
        weights_digest: the weights file's SHA-256 (:func:`file_sha256`; part of the converted
            model's cache key, read only for OpenVINO).
        graph: a name for what ``module`` computes (part of the cache key, with the weights' hash).

    Returns:
        (encoder, plan actually used): the encoder maps (N, C, S, S) float32 to the module's
        outputs, as a tuple.
    """
    if plan.runtime == "openvino":
        try:
            encoder = OpenVINOEncoder(make_module, input_shape, f"{graph}|{weights_digest}", plan.precision)
        except CheckpointError:
            raise
        except Exception as exc:  # OpenVINO raises its own types for models it cannot convert
            note = f"OpenVINO could not run the encoder ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}); using PyTorch"
            return TorchEncoder(make_module(), device, plan.precision), ExecutionPlan("torch", plan.precision, plan.notes + (note,))
        return encoder, plan
    return TorchEncoder(make_module(), device, plan.precision), plan
