"""Model bundles: the versioned manifest schema, its validation, and the registry of installed styles.

A bundle is a folder ``<style_id>/`` holding ``manifest.json``, one or more model files per compute
tier, and a preview image. The manifest is the single source of truth: nothing is inferred from
file names. Training's bundle writer builds manifests with :func:`manifest_to_dict` from this module,
so what training writes the engine can read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.align import TEMPLATES
from engine.errors import BundleError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUNTIMES = ("onnx", "mnn")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TierFile:
    """One model file of a tier. ``file`` is relative to the bundle folder."""

    runtime: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Tier:
    """A compute tier: the same style at a given cost. ``gmacs`` is per inference at ``input_size``²."""

    id: str
    input_size: int
    gmacs: float
    params: int
    files: tuple[TierFile, ...]

    def file_for(self, runtime: str) -> TierFile | None:
        return next((f for f in self.files if f.runtime == runtime), None)


@dataclass(frozen=True)
class IOSpec:
    """Tensor contract of every tier: NCHW float32, ``color`` order, values in ``value_range``.

    ``alpha``: the output has a 4th channel, the learned blend mask, in the same value range (low keeps
    the photo, high shows the style). Manifests without the field (older bundles) have none.
    """

    layout: str = "NCHW"
    color: str = "RGB"
    value_range: tuple[float, float] = (-1.0, 1.0)
    input_name: str = "input"
    output_name: str = "output"
    alpha: bool = False

    @property
    def output_channels(self) -> int:
        return 4 if self.alpha else 3


@dataclass(frozen=True)
class AlignSpec:
    template: str = "ffhq"
    crop_size: int = 256


@dataclass(frozen=True)
class BlendDefaults:
    """Blend-back defaults a style ships with; the user can override them live."""

    intensity: float = 1.0
    feather: float = 0.1
    color_match: float = 0.0
    temporal: float = 0.5
    skin_tone_limit: float = 0.0  # L*: the most the face's skin lightness may move (SkinToneGuard); 0 = off


# The values each blend setting may take, for a manifest's defaults and a user's overrides alike. A NaN or
# an out-of-range value does not fail: it draws wrong faces (NaN intensity shows the photo, NaN colour
# matching darkens the face) or stalls the render thread (a feather of 100 crops blurs for seconds).
BLEND_RANGES = {
    "intensity": (0.0, 1.0),
    "feather": (0.0, 0.5),  # blur sigma as a fraction of the crop side
    "color_match": (0.0, 1.0),
    "temporal": (0.0, 1.0),
    "skin_tone_limit": (0.0, 100.0),  # L*
}


def blend_setting_problem(name: str, value: float) -> str | None:
    """Why ``value`` cannot be the blend setting ``name`` (None when it can)."""
    low, high = BLEND_RANGES[name]
    if not (math.isfinite(value) and low <= value <= high):
        return f"must be a number from {low:g} to {high:g}, got {value}"
    return None


@dataclass(frozen=True)
class Manifest:
    schema: int
    id: str
    name: str
    version: str
    description: str
    license: str
    tiers: tuple[Tier, ...]
    io: IOSpec = IOSpec()
    align: AlignSpec = AlignSpec()
    blend: BlendDefaults = BlendDefaults()
    preview: str | None = None
    created: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    model_card: str = ""


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    root: Path
    manifest: Manifest

    @property
    def id(self) -> str:
        return self.manifest.id

    def tier(self, tier_id: str) -> Tier:
        for tier in self.manifest.tiers:
            if tier.id == tier_id:
                return tier
        known = ", ".join(t.id for t in self.manifest.tiers)
        raise BundleError(f"{self.root / MANIFEST}: no tier '{tier_id}' (tiers: {known})")

    def path(self, tier_file: TierFile) -> Path:
        return self.root / tier_file.file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 already computed


def verified_sha256(path: Path) -> str:
    """sha256 of a model file, hashed once per (path, size, modification time).

    The window rescans the model folders on every refresh; hashing every file each time blocked it. A
    replaced or rewritten file has a new size or time, so it is hashed again.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


class FieldReader:
    """Typed field access that names the JSON file and the field in every error.

    Bundle manifests raise :class:`BundleError`; other schema readers (training's ``teacher.json``) pass
    their own error type.
    """

    def __init__(self, where: str, error: type[Exception] = BundleError) -> None:
        self.where = where
        self.error = error

    def fail(self, msg: str) -> Exception:
        return self.error(f"{self.where}: {msg}")

    def get(self, obj: dict, key: str, kind: type | tuple[type, ...], ctx: str = "", default: Any = ...) -> Any:
        name = f"{ctx}{key}"
        if key not in obj:
            if default is ...:
                raise self.fail(f"missing field '{name}'")
            return default
        value = obj[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(f"field '{name}' must be {expected}, got {type(value).__name__}")
        return value


def _parse_tier(r: FieldReader, raw: Any, index: int) -> Tier:
    ctx = f"tiers[{index}]."
    if not isinstance(raw, dict):
        raise r.fail(f"tiers[{index}] must be an object")
    # A tier lists its files; the flat single-file form {runtime, file, sha256} is accepted too.
    raw_files = r.get(raw, "files", list, ctx) if "files" in raw else [raw]
    files = []
    for j, f in enumerate(raw_files):
        fctx = f"{ctx}files[{j}]." if "files" in raw else ctx
        if not isinstance(f, dict):
            raise r.fail(f"{fctx[:-1]} must be an object")
        runtime = r.get(f, "runtime", str, fctx)
        if runtime not in RUNTIMES:
            raise r.fail(f"field '{fctx}runtime' is '{runtime}', expected one of {RUNTIMES}")
        rel = r.get(f, "file", str, fctx)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise r.fail(f"field '{fctx}file' must be a path inside the bundle, got '{rel}'")
        files.append(TierFile(runtime, rel, r.get(f, "sha256", str, fctx).lower()))
    if not files:
        raise r.fail(f"{ctx}files is empty")
    size = r.get(raw, "input_size", int, ctx)
    if not 16 <= size <= 2048:
        raise r.fail(f"field '{ctx}input_size' = {size} is out of range 16..2048")
    return Tier(
        id=r.get(raw, "id", str, ctx),
        input_size=size,
        gmacs=r.get(raw, "gmacs", float, ctx),
        params=r.get(raw, "params", int, ctx),
        files=tuple(files),
    )


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a decoded manifest and build a :class:`Manifest`; raises BundleError naming the field."""
    r = FieldReader(where)
    if not isinstance(data, dict):
        raise r.fail("manifest must be a JSON object")
    schema = r.get(data, "schema", int)
    if schema != SCHEMA_VERSION:
        raise r.fail(f"unknown schema version {schema}; this Stylecast reads schema {SCHEMA_VERSION}")
    raw_tiers = r.get(data, "tiers", list)
    if not raw_tiers:
        raise r.fail("a bundle needs at least one tier")
    tiers = tuple(_parse_tier(r, t, i) for i, t in enumerate(raw_tiers))
    if len({t.id for t in tiers}) != len(tiers):
        raise r.fail("tier ids must be unique")
    io_raw = r.get(data, "io", dict, default={})
    vrange = r.get(io_raw, "range", list, "io.", default=[-1.0, 1.0])
    if (
        len(vrange) != 2
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in vrange)
        or vrange[0] >= vrange[1]
    ):
        raise r.fail(f"field 'io.range' must be [low, high], got {vrange}")
    io = IOSpec(
        layout=r.get(io_raw, "layout", str, "io.", default="NCHW"),
        color=r.get(io_raw, "color", str, "io.", default="RGB"),
        value_range=(float(vrange[0]), float(vrange[1])),
        input_name=r.get(io_raw, "input", str, "io.", default="input"),
        output_name=r.get(io_raw, "output", str, "io.", default="output"),
        alpha=r.get(io_raw, "alpha", bool, "io.", default=False),
    )
    if io.layout != "NCHW" or io.color not in ("RGB", "BGR"):
        raise r.fail(f"unsupported io: layout {io.layout}, color {io.color} (NCHW with RGB or BGR)")
    align_raw = r.get(data, "align", dict, default={})
    align = AlignSpec(
        template=r.get(align_raw, "template", str, "align.", default="ffhq"),
        crop_size=r.get(align_raw, "crop_size", int, "align.", default=256),
    )
    # fields the engine uses on every frame are checked here, so a bad one fails the load, not a frame
    if align.template not in TEMPLATES:
        raise r.fail(f"field 'align.template' is '{align.template}', known templates: {sorted(TEMPLATES)}")
    if not 16 <= align.crop_size <= 2048:
        raise r.fail(f"field 'align.crop_size' = {align.crop_size} is out of range 16..2048")
    blend_raw = r.get(data, "blend", dict, default={})
    blend = BlendDefaults(
        **{k: r.get(blend_raw, k, float, "blend.", default=v) for k, v in asdict(BlendDefaults()).items()}
    )
    for name, value in asdict(blend).items():
        if problem := blend_setting_problem(name, value):
            raise r.fail(f"field 'blend.{name}' {problem}")
    ident = r.get(data, "id", str)
    if not ident or not all(c.isalnum() or c in "-_" for c in ident):
        raise r.fail(f"field 'id' must be a non-empty name of letters, digits, '-' or '_', got '{ident}'")
    return Manifest(
        schema=schema,
        id=ident,
        name=r.get(data, "name", str),
        version=r.get(data, "version", str),
        description=r.get(data, "description", str, default=""),
        license=r.get(data, "license", str),
        tiers=tiers,
        io=io,
        align=align,
        blend=blend,
        preview=r.get(data, "preview", (str, type(None)), default=None),
        created=r.get(data, "created", dict, default={}),
        metrics=r.get(data, "metrics", dict, default={}),
        model_card=r.get(data, "model_card", str, default=""),
    )


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of a manifest (inverse of :func:`parse_manifest`)."""
    return {
        "schema": manifest.schema,
        "id": manifest.id,
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "license": manifest.license,
        "preview": manifest.preview,
        "created": manifest.created,
        "align": asdict(manifest.align),
        "io": {
            "layout": manifest.io.layout,
            "color": manifest.io.color,
            "range": list(manifest.io.value_range),
            "input": manifest.io.input_name,
            "output": manifest.io.output_name,
            "alpha": manifest.io.alpha,
        },
        "blend": asdict(manifest.blend),
        "tiers": [
            {
                "id": t.id,
                "input_size": t.input_size,
                "gmacs": t.gmacs,
                "params": t.params,
                "files": [asdict(f) for f in t.files],
            }
            for t in manifest.tiers
        ],
        "metrics": manifest.metrics,
        "model_card": manifest.model_card,
    }


def load_bundle(root: Path | str, verify: bool = True) -> Bundle:
    """Read and validate ``root/manifest.json``; with ``verify``, check every file exists and its sha256."""
    root = Path(root)
    path = root / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest.json in this bundle folder") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise BundleError(f"{path}: not a manifest (JSON nested too deeply)") from None
    manifest = parse_manifest(data, str(path))
    if manifest.id != root.name:
        log.debug("bundle folder %s holds style id %s", root.name, manifest.id)
    bundle = Bundle(root, manifest)
    if verify:
        for tier in manifest.tiers:
            for f in tier.files:
                verify_file(bundle, f)
    return bundle


def verify_file(bundle: Bundle, tier_file: TierFile) -> None:
    path = bundle.path(tier_file)
    if not path.is_file():
        raise BundleError(f"{path}: model file listed in the manifest is missing")
    actual = verified_sha256(path)
    if actual != tier_file.sha256:
        raise BundleError(
            f"{path}: sha256 mismatch (manifest {tier_file.sha256[:12]}…, file {actual[:12]}…);"
            " the file is corrupt or was replaced"
        )


def bundled_models_dir() -> Path:
    """``models/`` shipped with the app (next to the sources, or inside a frozen build)."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base / "models"


def user_folder(override_env: str, kind: str, leaf: str = "") -> Path:
    """The per-user ``kind`` folder ("data" or "cache") of this platform, or ``$override_env`` when set."""
    if os.environ.get(override_env):
        return Path(os.environ[override_env])
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA" if kind == "data" else "LOCALAPPDATA", Path.home())) / "Stylecast"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / ("Application Support" if kind == "data" else "Caches") / "Stylecast"
    else:
        env, default = ("XDG_DATA_HOME", ".local/share") if kind == "data" else ("XDG_CACHE_HOME", ".cache")
        base = Path(os.environ.get(env, Path.home() / default)) / "stylecast"
    return base / leaf if leaf else base


def user_models_dir() -> Path:
    """Per-user folder for styles trained or installed by the user (``STYLECAST_MODELS`` overrides)."""
    return user_folder("STYLECAST_MODELS", "data", "models")


@dataclass(frozen=True)
class RegistryScan:
    """What a scan of the model folders found: valid bundles by id, and the rejected folders' errors."""

    bundles: dict[str, Bundle]
    errors: dict[Path, str]


class BundleRegistry:
    """Installed styles from the bundled folder and the user folder (user bundles win on id clashes)."""

    def __init__(self, roots: list[Path] | None = None) -> None:
        self.roots = roots if roots is not None else [bundled_models_dir(), user_models_dir()]

    def scan(self) -> RegistryScan:
        bundles: dict[str, Bundle] = {}
        errors: dict[Path, str] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                if not (folder / MANIFEST).exists():
                    continue
                try:
                    bundle = load_bundle(folder)
                except BundleError as exc:
                    errors[folder] = str(exc)
                    log.warning("skipping bundle: %s", exc)
                    continue
                bundles[bundle.id] = bundle
        return RegistryScan(bundles, errors)

    def get(self, style_id: str) -> Bundle:
        scan = self.scan()
        if style_id in scan.bundles:
            return scan.bundles[style_id]
        for folder, err in scan.errors.items():
            if folder.name == style_id:
                raise BundleError(err)
        known = ", ".join(sorted(scan.bundles)) or "none installed"
        raise BundleError(f"no style '{style_id}' (installed: {known})")
