"""Fixture networks for tests and benchmarks: random-weight encoder–decoder graphs built with onnx.helper.

They have the cost and shape of a real student (stride-2 encoder, 3×3 body, upsampling head, residual
to the input, tanh) but no training, so engine tests and benchmarks need neither torch nor a trained
style. They are never installed as styles: bundles made here live in temporary folders and say
"fixture" in their name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends import convert_onnx_to_mnn
from engine.bundle import (
    SCHEMA_VERSION,
    BlendDefaults,
    IOSpec,
    Manifest,
    Tier,
    TierFile,
    manifest_to_dict,
    sha256_file,
)


@dataclass(frozen=True)
class FixtureSpec:
    size: int = 256
    enc1: int = 32
    enc2: int = 64
    body: int = 5
    residual_gain: float = 0.3

    @property
    def gmacs(self) -> float:
        s = self.size
        macs = 9 * 3 * self.enc1 * (s // 2) ** 2
        macs += 9 * self.enc1 * self.enc2 * (s // 4) ** 2
        macs += self.body * 9 * self.enc2 * self.enc2 * (s // 4) ** 2
        macs += 9 * self.enc2 * 3 * s * s
        return macs / 1e9

    @property
    def params(self) -> int:
        return 9 * (3 * self.enc1 + self.enc1 * self.enc2 + self.body * self.enc2**2 + self.enc2 * 3)


# About 1 GMAC at 256², like the "standard" student tier.
ONE_GMAC = FixtureSpec()
LIGHT = FixtureSpec(enc1=16, enc2=32, body=3)


def build_onnx(path: Path, spec: FixtureSpec = ONE_GMAC, seed: int = 0, alpha: float | None = None) -> Path:
    """The fixture graph; with ``alpha``, a 4th output channel holding that constant blend alpha (in [-1, 1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(name: str, x: str, cin: int, cout: int, stride: int, relu: bool) -> str:
        w = rng.normal(0.0, 0.5 * np.sqrt(2.0 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
        b = np.zeros(cout, np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
        nodes.append(
            helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=[1, 1, 1, 1], strides=[stride] * 2)
        )
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        return f"{name}.relu"

    x = conv("enc1", "input", 3, spec.enc1, 2, True)
    x = conv("enc2", x, spec.enc1, spec.enc2, 2, True)
    for i in range(spec.body):
        x = conv(f"body{i}", x, spec.enc2, spec.enc2, 1, True)
    inits.append(numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "up.scales"))
    nodes.append(helper.make_node("Resize", [x, "", "up.scales"], ["up"], mode="nearest"))
    x = conv("head", "up", spec.enc2, 3, 1, False)
    inits.append(numpy_helper.from_array(np.array(spec.residual_gain, np.float32), "gain"))
    nodes.append(helper.make_node("Mul", [x, "gain"], ["scaled"]))
    nodes.append(helper.make_node("Add", ["input", "scaled"], ["sum"]))
    nodes.append(helper.make_node("Tanh", ["sum"], ["colour" if alpha is not None else "output"]))
    if alpha is not None:
        for name, value in (("c.starts", 0), ("c.ends", 1), ("c.axes", 1)):
            inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("alpha", alpha))]
        nodes += [
            helper.make_node("Slice", ["input", "c.starts", "c.ends", "c.axes"], ["plane"]),
            helper.make_node("Mul", ["plane", "zero"], ["blank"]),
            helper.make_node("Add", ["blank", "alpha"], ["alpha_plane"]),
            helper.make_node("Concat", ["colour", "alpha_plane"], ["output"], axis=1),
        ]
    shape = [1, 3, spec.size, spec.size]
    graph = helper.make_graph(
        nodes,
        "fixture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3 if alpha is None else 4, *shape[2:]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_bundle(
    root: Path,
    style_id: str = "fixture",
    tiers: dict[str, FixtureSpec] | None = None,
    runtimes: tuple[str, ...] = ("onnx", "mnn"),
    temporal: float = 0.7,
    alpha: float | None = None,
) -> Path:
    """A complete, valid bundle folder of fixture tiers (default: light + a ~1 GMAC standard); with ``alpha``,
    its tiers predict that constant blend alpha."""
    tiers = tiers or {"light": LIGHT, "standard": ONE_GMAC}
    folder = Path(root) / style_id
    folder.mkdir(parents=True, exist_ok=True)
    tier_values = []
    for seed, (tier_id, spec) in enumerate(tiers.items()):
        files = []
        onnx_path = build_onnx(folder / f"{tier_id}.onnx", spec, seed=seed, alpha=alpha)
        if "onnx" in runtimes:
            files.append(TierFile("onnx", onnx_path.name, sha256_file(onnx_path)))
        if "mnn" in runtimes:
            mnn_path = folder / f"{tier_id}.mnn"
            convert_onnx_to_mnn(onnx_path, mnn_path)
            files.append(TierFile("mnn", mnn_path.name, sha256_file(mnn_path)))
        if "onnx" not in runtimes:
            onnx_path.unlink()
        tier_values.append(Tier(tier_id, spec.size, round(spec.gmacs, 4), spec.params, tuple(files)))
    manifest = Manifest(
        schema=SCHEMA_VERSION,
        id=style_id,
        name=f"{style_id} (random-weight test fixture, not a style)",
        version="0",
        description="Random-weight network with a student's cost; for tests and benchmarks only.",
        license="test fixture",
        tiers=tuple(tier_values),
        io=IOSpec(alpha=alpha is not None),
        blend=BlendDefaults(temporal=temporal),
        model_card="Not a style: random weights.",
    )
    (folder / "manifest.json").write_text(json.dumps(manifest_to_dict(manifest), indent=2))
    return folder
