"""Inference backends for the student networks: onnxruntime and MNN behind one ``Stylizer`` protocol.

Both run a static (1, 3, S, S) float32 graph. MNN runs through the Interpreter/Session API because
``Interpreter.runSession`` releases the GIL (``MNN.nn.Module.forward`` does not): the capture and
sink threads keep running while a face is being stylized.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.bundle import Bundle, IOSpec, Tier, user_folder
from engine.errors import BackendUnavailable, BundleError
from engine.stats import median_ms

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "mnn")


class Stylizer(Protocol):
    """A loaded network: (1, 3, S, S) float32 in, (1, 3, S, S) float32 out, in the bundle's value range."""

    runtime: str
    input_size: int

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def onnx_session_options(threads: int, spinning: bool = False):
    """onnxruntime options for one network on ``threads`` intra-op threads, run one node at a time.

    The live engine keeps ``spinning`` off, so idle intra-op threads sleep: spinning workers steal the cores
    that tracking, blending, decoding and encoding need between two inferences (measured: smoothing 0.6 ->
    4.7 ms). Spinning is onnxruntime's default, and the faster choice for a network timed alone.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxStylizer:
    runtime = "onnx"

    def __init__(self, path: Path, threads: int = 2, io_spec: IOSpec = IOSpec(), spinning: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed: {exc}") from exc
        try:
            self._session = ort.InferenceSession(
                str(path), onnx_session_options(threads, spinning), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise BundleError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        names = [i.name for i in inputs]
        if io_spec.input_name not in names or io_spec.output_name not in [o.name for o in outputs]:
            raise BundleError(
                f"{path}: expected input '{io_spec.input_name}' and output '{io_spec.output_name}',"
                f" model has inputs {names} and outputs {[o.name for o in outputs]}"
            )
        model_input = next(i for i in inputs if i.name == io_spec.input_name)
        model_output = next(o for o in outputs if o.name == io_spec.output_name)
        for kind, tensor in (("input", model_input), ("output", model_output)):
            if tensor.type != "tensor(float)":
                raise BundleError(f"{path}: its {kind} '{tensor.name}' is {tensor.type}, the engine feeds float32")
        self.input_size = _check_shape(path, model_input.shape)
        _check_output(path, model_output.shape, io_spec, self.input_size)
        self._in, self._out = io_spec.input_name, io_spec.output_name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self._out], {self._in: x})[0]

    def close(self) -> None:
        self._session = None


class MnnStylizer:
    runtime = "mnn"

    def __init__(self, path: Path, threads: int = 2, io_spec: IOSpec = IOSpec()) -> None:
        mnn = _import_mnn()
        self._mnn = mnn
        try:
            self._interp = mnn.Interpreter(str(path))
        except Exception as exc:
            raise BundleError(f"{path}: MNN cannot load this model: {exc}") from exc
        # Thread count goes through the session config (there is no thread_num argument).
        self._session = self._interp.createSession({"numThread": threads, "precision": "normal"})
        self._input = self._interp.getSessionInput(self._session)
        self._output = self._interp.getSessionOutput(self._session)
        self.input_size = _check_shape(path, list(self._input.getShape()))
        self._shape = (1, 3, self.input_size, self.input_size)
        _check_output(path, list(self._output.getShape()), io_spec, self.input_size)
        self._out_shape = (1, io_spec.output_channels, self.input_size, self.input_size)
        self._host_out = mnn.Tensor(
            self._out_shape,
            mnn.Halide_Type_Float,
            np.zeros(self._out_shape, np.float32),
            mnn.Tensor_DimensionType_Caffe,
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mnn = self._mnn
        host_in = mnn.Tensor(
            self._shape, mnn.Halide_Type_Float, np.ascontiguousarray(x, np.float32), mnn.Tensor_DimensionType_Caffe
        )
        self._input.copyFrom(host_in)
        self._interp.runSession(self._session)  # releases the GIL
        self._output.copyToHostTensor(self._host_out)
        # copy out at once: the host tensor's memory is reused by the next call
        return np.array(self._host_out.getNumpyData(), dtype=np.float32, copy=True).reshape(self._out_shape)

    def close(self) -> None:
        self._interp = self._session = self._input = self._output = None


@contextlib.contextmanager
def _quiet_native_stdout():
    """Silence what MNN's C++ code prints to stdout (CPU features, converter chatter), which would
    otherwise corrupt JSON printed by the CLI and benchmarks."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _import_mnn():
    # Only the compiled core is imported. Never MNN.tools: importing it runs pip and sends telemetry.
    try:
        with _quiet_native_stdout():
            import MNN
    except ImportError as exc:
        raise BackendUnavailable(f"MNN is not installed: {exc}") from exc
    return MNN


def _check_shape(path: Path, shape: list) -> int:
    if len(shape) != 4 or shape[0] not in (1, "N", None) or shape[1] != 3 or shape[2] != shape[3]:
        raise BundleError(f"{path}: input shape {shape} is not (1, 3, S, S)")
    if not isinstance(shape[2], int):
        raise BundleError(f"{path}: input size must be static, got {shape}")
    return int(shape[2])


def _check_output(path: Path, shape: list, io_spec: IOSpec, size: int) -> None:
    """The output must have the manifest's channel count (3, or 4 with a learned alpha) at the input's size.
    Checked on the declared shape, before any run: MNN copies its output into a host tensor of the input's
    size, so a smaller output would pass a run unnoticed. A named, dynamic side is checked by the first run
    (:func:`open_stylizer`)."""
    expected = [io_spec.output_channels, size, size]
    if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
        what = "colour + alpha" if io_spec.alpha else "colour"
        raise BundleError(
            f"{path}: output shape {shape}, the manifest expects {io_spec.output_channels} channels ({what})"
            f" at the input's {size}×{size}"
        )


def open_stylizer(path: Path, runtime: str, threads: int = 2, io_spec: IOSpec = IOSpec()) -> Stylizer:
    """Open a model file on a runtime and run it once on a grey input: a model that loads but cannot run
    (an input type or shape its graph rejects, NaN weights) fails here with a BundleError, before a
    style swap would replace a working style with it."""
    if runtime == "onnx":
        stylizer: Stylizer = OnnxStylizer(path, threads, io_spec)
    elif runtime == "mnn":
        stylizer = MnnStylizer(path, threads, io_spec)
    else:
        raise BackendUnavailable(f"unknown backend '{runtime}' (known: {', '.join(BACKENDS)})")
    size = stylizer.input_size
    try:
        out = np.asarray(stylizer(np.zeros((1, 3, size, size), np.float32)))
    except Exception as exc:  # the runtimes raise their own untyped errors
        stylizer.close()
        raise BundleError(f"{path}: {runtime} cannot run this model: {exc}") from exc
    expected = (1, io_spec.output_channels, size, size)
    problem = None
    if out.shape != expected:
        problem = f"gives an output of shape {out.shape}, not {expected}"
    elif not np.isfinite(out).all():
        problem = "gives NaN or infinite values on a grey input"
    if problem:
        stylizer.close()
        raise BundleError(f"{path}: the model {problem}")
    return stylizer


def time_stylizer(stylizer: Stylizer, runs: int = 10, warmup: int = 2) -> float:
    """Median wall time of one inference in milliseconds, on a fixed random input."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, stylizer.input_size, stylizer.input_size))
    x = x.astype(np.float32)
    return median_ms(lambda: stylizer(x), runs, warmup)


@dataclass(frozen=True)
class TierModel:
    """A tier of a bundle, loaded on one backend, with its measured speed."""

    bundle: Bundle
    tier: Tier
    stylizer: Stylizer
    ms: float

    def stylize(self, crop: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 BGR aligned crop -> (S, S, 3) uint8 BGR stylized crop, or (S, S, 4) BGRA when
        the bundle's students predict a blend alpha (255: show the style). A tier whose input side is not
        the crop's works on a resized crop, and its output is resized back to the crop's side."""
        spec = self.bundle.manifest.io
        lo, hi = spec.value_range
        size, crop_size = self.stylizer.input_size, crop.shape[0]
        if crop_size != size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        # OpenCV's single passes instead of numpy's chains of temporaries: 2.5 → 0.4 ms per face on AVX2
        grey_at_zero = -lo * 255.0 / (hi - lo)  # blobFromImage computes (pixel - mean) × scale
        x = cv2.dnn.blobFromImage(crop, (hi - lo) / 255.0, None, (grey_at_zero,) * 3, swapRB=spec.color == "RGB")
        y = self.stylizer(x)[0]
        channels, side = y.shape[0], y.shape[1:]
        planes = y.reshape(channels * side[0], side[1])  # NCHW planes as one 2-D image: one saturating pass
        y8 = cv2.addWeighted(planes, 255.0 / (hi - lo), planes, 0.0, grey_at_zero, dtype=cv2.CV_8U).reshape(y.shape)
        order = [2, 1, 0, 3][:channels] if spec.color == "RGB" else range(channels)
        out = cv2.merge([y8[c] for c in order])
        if crop_size != size:
            out = cv2.resize(out, (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
        return out

    def close(self) -> None:
        self.stylizer.close()


class WarmupCache:
    """Warm-up timings per machine, so a second start skips the benchmark (seconds on a slow CPU).

    Keyed by the CPU model, the runtime's version, the thread count and the model file's sha256: another
    machine, runtime release or model is measured afresh. One small JSON file in the user's cache folder
    (``STYLECAST_CACHE`` overrides it); an unreadable file is ignored and rewritten.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_dir() / "warmup.json"
        self._lock = threading.Lock()

    @staticmethod
    def key(tier_file, runtime: str, threads: int) -> str:
        return f"{cpu_model()}|{runtime}-{runtime_version(runtime)}|{threads}t|{tier_file.sha256}"

    def knows(self, bundle: Bundle, backend: str, threads: int) -> bool:
        """True when every file of every tier that ``backend`` would time has a cached timing."""
        files = [f for t in bundle.manifest.tiers for f in t.files if backend in ("auto", f.runtime)]
        return all(self.get(self.key(f, f.runtime, threads)) is not None for f in files)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        value = self._read().get(key)
        return float(value) if isinstance(value, int | float) else None

    def put(self, key: str, ms: float) -> None:
        with self._lock:
            data = self._read()
            data[key] = round(ms, 3)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, self.path)
            except OSError as exc:  # a read-only home only costs the next start its benchmark
                log.warning("could not write the warm-up cache %s: %s", self.path, exc)


def default_cache_dir() -> Path:
    return user_folder("STYLECAST_CACHE", "cache")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=4)
def runtime_version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"onnx": "onnxruntime", "mnn": "MNN"}[runtime])
    except (PackageNotFoundError, KeyError):
        return "unknown"


def load_tier(
    bundle: Bundle,
    tier: Tier,
    backend: str = "auto",
    threads: int = 2,
    bench_runs: int = 5,
    cache: WarmupCache | None = None,
) -> TierModel:
    """Open ``tier`` of ``bundle`` on ``backend`` ('onnx', 'mnn' or 'auto').

    With 'auto', every runtime the tier ships that can load is timed on a warm-up benchmark and the
    fastest wins; a runtime that fails to load is skipped with a warning (the others can still serve).
    With a ``cache``, the timing is always taken (the compute-tier controller needs it) and remembered;
    when the cache holds this machine's timings of every candidate, only the fastest is opened and
    nothing is timed.
    """
    if tier.input_size != bundle.manifest.align.crop_size:
        log.debug("tier %s runs at %d, crops are %d", tier.id, tier.input_size, bundle.manifest.align.crop_size)
    candidates = [f for f in tier.files if backend == "auto" or f.runtime == backend]
    if not candidates:
        have = ", ".join(f.runtime for f in tier.files)
        raise BackendUnavailable(f"tier '{tier.id}' of '{bundle.id}' has no {backend} model (has: {have})")
    timed = len(candidates) > 1 or cache is not None  # a caller with a cache wants the timing too
    if cache is not None:
        known = {f.runtime: cache.get(cache.key(f, f.runtime, threads)) for f in candidates}
        if all(ms is not None for ms in known.values()):
            best = min(candidates, key=lambda f: known[f.runtime])
            try:
                stylizer = open_stylizer(bundle.path(best), best.runtime, threads, bundle.manifest.io)
            except (BackendUnavailable, BundleError) as exc:
                log.warning("cached choice failed (%s); measuring again", exc)
            else:
                log.info("tier %s: %s from the warm-up cache (%.1f ms)", tier.id, best.runtime, known[best.runtime])
                return TierModel(bundle, tier, stylizer, known[best.runtime])
    loaded: list[TierModel] = []
    errors = []
    for f in candidates:
        try:
            stylizer = open_stylizer(bundle.path(f), f.runtime, threads, bundle.manifest.io)
        except (BackendUnavailable, BundleError) as exc:
            errors.append(str(exc))
            log.warning("%s", exc)
            continue
        if stylizer.input_size != tier.input_size:
            stylizer.close()
            errors.append(f"{bundle.path(f)}: input size {stylizer.input_size}, manifest says {tier.input_size}")
            continue
        ms = time_stylizer(stylizer, runs=bench_runs) if timed else float("nan")
        if timed and cache is not None:
            cache.put(cache.key(f, f.runtime, threads), ms)
        loaded.append(TierModel(bundle, tier, stylizer, ms))
    if not loaded:
        raise BundleError("; ".join(errors))
    best = min(loaded, key=lambda m: m.ms)
    for m in loaded:
        if m is not best:
            m.close()
    if len(loaded) > 1:
        log.info("tier %s: %s", tier.id, ", ".join(f"{m.stylizer.runtime} {m.ms:.1f} ms" for m in loaded))
    return best


def convert_onnx_to_mnn(onnx_path: Path, mnn_path: Path, fp16: bool = True) -> None:
    """Convert with MNN's compiled converter (never the console scripts or MNN.tools).

    The converter returns True even when it fails, so success is judged by the output file.
    """
    try:
        with _quiet_native_stdout():
            import _tools
    except ImportError as exc:
        raise BackendUnavailable(f"MNN's converter is not installed: {exc}") from exc
    mnn_path = Path(mnn_path)
    mnn_path.unlink(missing_ok=True)
    args = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path)]
    args += ["--bizCode", "stylecast"] + (["--fp16"] if fp16 else [])
    with _quiet_native_stdout():
        _tools.mnnconvert(args)
    if not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        raise BackendUnavailable(f"MNN conversion of {onnx_path} produced no model")
