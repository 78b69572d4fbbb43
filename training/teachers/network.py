"""Pretrained network teachers described by a ``teacher.json`` (schema 1): loading, checks and inference.

A teacher folder holds one model file and a ``teacher.json`` that fixes its I/O conventions (the format is
documented in docs/teachers.md). :func:`load_teacher_spec` validates the json, naming the file and field in
every error, and checks the model file's sha256. :class:`NetworkTeacher` runs the model on aligned face
crops exactly as declared: each crop is resized with anti-aliasing to the teacher's preferred size and
converted to its colour order, range, normalisation, dtype and layout; the output is checked (finite, the
expected shape) and converted back to a BGR uint8 crop of the input's size (stylizers) or to per-class
probabilities (masks).

Runtimes: onnxruntime, and a TFLite interpreter from the ``ai-edge-litert`` package (training extra).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends import onnx_session_options
from engine.bundle import FieldReader, sha256_file
from training.errors import TeacherError
from training.images import resize_antialiased

log = logging.getLogger(__name__)

SCHEMA = 1
TEACHER_FILE = "teacher.json"
KINDS = ("stylizer", "mask")
RUNTIMES = ("onnx", "tflite")
LAYOUTS = ("NHWC", "NCHW")
DTYPES = {"float32": np.float32, "float16": np.float16}
COLORS = ("RGB", "BGR")


@dataclass(frozen=True)
class TensorSpec:
    """One side of a teacher's I/O. Stylizer outputs have ``color``/``value_range``; masks ``classes``."""

    name: str
    layout: str
    dtype: str = "float32"
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    size: tuple[int, int] | None = None
    multiple: int = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    extra_channel: bool = False
    activation: str = ""
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeacherSpec:
    path: Path  # the teacher.json
    id: str
    name: str
    kind: str
    runtime: str
    file: Path
    sha256: str
    input: TensorSpec
    output: TensorSpec
    license: str
    commercial_use: bool
    source: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def record(self) -> dict[str, Any]:
        """What a pairs folder and a model card say about the teacher that made them."""
        return {
            "id": self.id,
            "name": self.name,
            "file": self.file.name,
            "sha256": self.sha256,
            "license": self.license,
            "commercial_use": self.commercial_use,
            "source": self.source,
        }


def _range(r: FieldReader, obj: dict, ctx: str) -> tuple[float, float]:
    value = r.get(obj, "range", list, ctx)
    if len(value) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise r.fail(f"field '{ctx}range' must be [low, high], got {value}")
    if value[0] >= value[1]:
        raise r.fail(f"field '{ctx}range' must have low < high, got {value}")
    return float(value[0]), float(value[1])


def _choice(r: FieldReader, obj: dict, key: str, choices, ctx: str, default: Any = ...) -> str:
    value = r.get(obj, key, str, ctx, default)
    if value not in choices:
        raise r.fail(f"field '{ctx}{key}' is '{value}', expected one of {list(choices)}")
    return value


def _input_spec(r: FieldReader, raw: dict) -> TensorSpec:
    ctx = "input."
    size = r.get(raw, "size", list, ctx)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 16 for v in size):
        raise r.fail(f"field 'input.size' must be [H, W] of integers >= 16, got {size}")
    multiple = r.get(raw, "multiple", int, ctx, 1)
    if multiple < 1 or any(s % multiple for s in size):
        raise r.fail(f"field 'input.multiple' = {multiple} must be >= 1 and divide input.size {size}")
    mean = std = None
    if "normalize" in raw:
        norm = r.get(raw, "normalize", dict, ctx)
        mean, std = (tuple(r.get(norm, k, list, "input.normalize.")) for k in ("mean", "std"))
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in mean + std)
        if len(mean) != 3 or len(std) != 3 or not numbers or not all(s > 0 for s in std):
            raise r.fail("field 'input.normalize' needs 3 means and 3 positive stds")
    return TensorSpec(
        name=r.get(raw, "name", str, ctx),
        layout=_choice(r, raw, "layout", LAYOUTS, ctx),
        dtype=_choice(r, raw, "dtype", DTYPES, ctx),
        color=_choice(r, raw, "color", COLORS, ctx),
        value_range=_range(r, raw, ctx),
        size=(size[0], size[1]),
        multiple=multiple,
        mean=mean,
        std=std,
        extra_channel="extra_channel" in raw,
    )


def _output_spec(r: FieldReader, raw: dict, kind: str) -> TensorSpec:
    ctx = "output."
    name, layout = r.get(raw, "name", str, ctx), _choice(r, raw, "layout", LAYOUTS, ctx)
    if kind == "stylizer":
        color = _choice(r, raw, "color", COLORS, ctx)
        return TensorSpec(name, layout, color=color, value_range=_range(r, raw, ctx))
    classes = r.get(raw, "classes", list, ctx)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise r.fail(f"field 'output.classes' must be a non-empty list of names, got {classes}")
    return TensorSpec(name, layout, activation=r.get(raw, "activation", str, ctx, ""), classes=tuple(classes))


def load_teacher_spec(path: Path | str, verify: bool = True) -> TeacherSpec:
    """Read and validate a teacher: a folder holding ``teacher.json``, or the json file itself.

    With ``verify``, the model file must exist and match its sha256. Raises :class:`TeacherError`.
    """
    path = Path(path)
    json_path = path / TEACHER_FILE if path.is_dir() else path
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TeacherError(f"{json_path}: no teacher description (a teacher folder needs {TEACHER_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{json_path}: not a readable JSON teacher description ({exc})") from exc
    r = FieldReader(str(json_path), TeacherError)
    if not isinstance(data, dict):
        raise r.fail("a teacher description must be a JSON object")
    schema = r.get(data, "schema", int)
    if schema != SCHEMA:
        raise r.fail(f"unknown schema {schema}; this Stylecast reads teacher schema {SCHEMA}")
    kind = _choice(r, data, "kind", KINDS, "")
    file = json_path.parent / r.get(data, "file", str)
    if file.parent != json_path.parent:
        raise r.fail(f"field 'file' must name a file beside {json_path.name}, got '{data['file']}'")
    spec = TeacherSpec(
        path=json_path,
        id=r.get(data, "id", str),
        name=r.get(data, "name", str, default=data.get("id", "")),
        kind=kind,
        runtime=_choice(r, data, "runtime", RUNTIMES, ""),
        file=file,
        sha256=r.get(data, "sha256", str).lower(),
        input=_input_spec(r, r.get(data, "input", dict)),
        output=_output_spec(r, r.get(data, "output", dict), kind),
        license=r.get(data, "license", str),
        commercial_use=r.get(data, "commercial_use", bool),
        source=r.get(data, "source", dict, default={}),
        notes=r.get(data, "notes", str, default=""),
    )
    if verify:
        if not file.is_file():
            raise r.fail(f"model file {file.name} is missing")
        actual = sha256_file(file)
        if actual != spec.sha256:
            raise r.fail(
                f"{file.name}: sha256 mismatch (teacher.json {spec.sha256[:12]}…, file {actual[:12]}…);"
                " the file is corrupt or was replaced"
            )
    return spec


# ----- runtimes -----------------------------------------------------------------------------------


class _OnnxRuntime:
    def __init__(self, spec: TeacherSpec, threads: int, spinning: bool) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                str(spec.file), onnx_session_options(threads, spinning), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise TeacherError(f"teacher '{spec.id}' ({spec.file}): onnxruntime cannot load it: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if spec.input.name not in inputs or spec.output.name not in outputs:
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}): teacher.json names input '{spec.input.name}' and output"
                f" '{spec.output.name}', the model has inputs {list(inputs)} and outputs {outputs}"
            )
        declared, actual = f"tensor({spec.input.dtype.replace('float32', 'float')})", inputs[spec.input.name].type
        if actual != declared:
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}): input '{spec.input.name}' is {actual}, teacher.json says"
                f" {spec.input.dtype}"
            )
        shape = inputs[spec.input.name].shape
        if len(shape) != 4:
            raise TeacherError(f"teacher '{spec.id}': input shape {shape} is not 4-d")
        _check_fixed_input(spec, shape)
        self.spec = spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.spec.output.name], {self.spec.input.name: x})[0]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise TeacherError(
                f"teacher '{self.spec.id}' ({self.spec.file}): onnxruntime cannot run it on an input of shape"
                f" {x.shape}: {exc}"
            ) from exc


def _check_fixed_input(spec: TeacherSpec, shape: list) -> None:
    """The model's fixed input dimensions (a name or None is free) must be what teacher.json declares."""
    channel, height, width = (1, 2, 3) if spec.input.layout == "NCHW" else (3, 1, 2)
    if isinstance(shape[channel], int) and shape[channel] != 3:
        raise TeacherError(
            f"teacher '{spec.id}' ({spec.file}): its input {list(shape)} has no 3 colour channels where"
            f" teacher.json's input.layout {spec.input.layout} puts them"
        )
    fixed = [(d, s) for d, s in zip((shape[height], shape[width]), spec.input.size) if isinstance(d, int)]
    if any(d != s for d, s in fixed):
        raise TeacherError(
            f"teacher '{spec.id}' ({spec.file}): its input is {list(shape)}, teacher.json's input.size is"
            f" {list(spec.input.size)} ({spec.input.layout})"
        )


class _TfliteRuntime:
    def __init__(self, spec: TeacherSpec, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}) is a TFLite model and no TFLite interpreter is installed"
                f" (the training extra installs ai-edge-litert): {exc}"
            ) from exc
        try:
            self.interp = Interpreter(model_path=str(spec.file), num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError for bad files
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}): the TFLite interpreter cannot load it: {exc}"
            ) from exc
        inputs, outputs = self.interp.get_input_details(), self.interp.get_output_details()
        names = [i["name"] for i in inputs], [o["name"] for o in outputs]
        if len(inputs) != 1 or spec.input.name not in names[0] or spec.output.name not in names[1]:
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}): teacher.json names input '{spec.input.name}' and output"
                f" '{spec.output.name}', the model has inputs {names[0]} and outputs {names[1]}"
            )
        (self.input,) = inputs
        self.output = next(o for o in outputs if o["name"] == spec.output.name)
        if np.dtype(self.input["dtype"]) != np.dtype(DTYPES[spec.input.dtype]):
            raise TeacherError(
                f"teacher '{spec.id}' ({spec.file}): input is {np.dtype(self.input['dtype'])}, teacher.json says"
                f" {spec.input.dtype}"
            )
        self.spec = spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if tuple(self.input["shape"]) != x.shape:
            raise TeacherError(
                f"teacher '{self.spec.id}': the TFLite model takes {tuple(self.input['shape'])}, fed {x.shape}"
                " (check input.size and input.multiple)"
            )
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return np.array(self.interp.get_tensor(self.output["index"]), copy=True)


# ----- the teacher --------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class NetworkTeacher:
    """A loaded teacher. Stylizers: ``__call__(crops) -> stylized crops``; masks: :meth:`probabilities`.

    Crops are (S, S, 3) uint8 BGR (the engine's aligned crops); outputs have the crops' size.
    ``network(model_input(crop))`` is the bare model, for timing it against a student on the same runtime
    and options (``spinning``: onnxruntime's idle threads spin, its default; the engine's sleep).
    """

    def __init__(self, spec: TeacherSpec, threads: int = 2, spinning: bool = True) -> None:
        self.spec = spec
        self.name = spec.id
        # TFLite's interpreter has no spinning option
        onnx = spec.runtime == "onnx"
        self.network = _OnnxRuntime(spec, threads, spinning) if onnx else _TfliteRuntime(spec, threads)
        self._classes = len(spec.output.classes) if spec.kind == "mask" else 3

    def model_side(self) -> tuple[int, int]:
        """The (H, W) the model is fed: its preferred size (validated to be a multiple of ``input.multiple``)."""
        return self.spec.input.size

    def model_input(self, crop: np.ndarray) -> np.ndarray:
        spec = self.spec.input
        h, w = self.model_side()
        x = resize_antialiased(crop, h, w)
        x = (x[:, :, ::-1] if spec.color == "RGB" else x).astype(np.float32)
        lo, hi = spec.value_range
        x = x * ((hi - lo) / 255.0) + lo
        if spec.mean is not None:
            x = (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
        if spec.extra_channel:  # e.g. the previous frame's mask; zeros for a single image
            x = np.concatenate([x, np.zeros((h, w, 1), np.float32)], axis=2)
        x = x[None] if spec.layout == "NHWC" else x.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x.astype(DTYPES[spec.dtype]))

    def _output(self, y: np.ndarray) -> np.ndarray:
        """Raw model output -> (H, W, C) float32, checked against the declared shape and for NaN."""
        spec, (h, w) = self.spec, self.model_side()
        y = np.asarray(y)
        if y.ndim != 4 or y.shape[0] != 1:
            raise TeacherError(f"teacher '{spec.id}': output shape {y.shape} is not (1, ·, ·, ·)")
        y = y[0] if spec.output.layout == "NHWC" else y[0].transpose(1, 2, 0)
        if y.shape != (h, w, self._classes):
            raise TeacherError(
                f"teacher '{spec.id}': output shape {y.shape} (HWC), expected {(h, w, self._classes)} for a"
                f" {h}x{w} input"
            )
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise TeacherError(f"teacher '{spec.id}': output holds NaN or infinite values")
        return y

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        if self.spec.kind != "stylizer":
            raise TeacherError(f"teacher '{self.spec.id}' is a {self.spec.kind} model, not a stylizer")
        lo, hi = self.spec.output.value_range
        out = []
        for crop in crops:
            y = self._output(self.network(self.model_input(crop)))
            y = np.clip((y - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
            y = y[:, :, ::-1] if self.spec.output.color == "RGB" else y
            out.append(np.ascontiguousarray(resize_antialiased(y, crop.shape[0], crop.shape[1])))
        return out

    def probabilities(self, crop: np.ndarray) -> dict[str, np.ndarray]:
        """Mask models: class name -> (H, W) float32 probability at the crop's size."""
        if self.spec.kind != "mask":
            raise TeacherError(f"teacher '{self.spec.id}' is a {self.spec.kind} model, not a mask model")
        y = self._output(self.network(self.model_input(crop)))
        activation = self.spec.output.activation.lower()
        if "softmax" in activation:
            y = _softmax(y)
        elif "sigmoid" in activation and "already" not in activation:
            y = 1.0 / (1.0 + np.exp(-y))
        y = resize_antialiased(np.clip(y, 0.0, 1.0), crop.shape[0], crop.shape[1])
        y = y.reshape(crop.shape[0], crop.shape[1], -1)
        return {name: y[:, :, i] for i, name in enumerate(self.spec.output.classes)}


def open_teacher(path: Path | str, threads: int = 2) -> NetworkTeacher:
    """Validate and load a teacher folder (or its teacher.json)."""
    return NetworkTeacher(load_teacher_spec(path), threads)
