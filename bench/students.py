"""``python main.py bench students``: student tiers vs published peers' generators, same run, same runtimes.

Every network is exported to ONNX (opset 17, static 1×3×256×256) and converted to MNN (fp16 weights) in
this run, then timed on onnxruntime and MNN with 1 and 2 threads (median of ``--runs`` inferences after
warm-up). Peers are rebuilt from their papers/code with random weights (speed does not depend on the
weights):

* ``whitebox_unet32`` — the U-Net generator of White-box Cartoonization (Wang & Yu 2020), 32 base
  channels, the family DCT-Net also uses;
* ``animeganv2`` — the AnimeGANv2 generator (GroupNorm conv blocks, inverted residuals);
* ``pix2pix_unet256`` — pix2pix ``unet_256`` (Isola et al. 2017), ngf 64, BatchNorm;

plus the student tiers (the trained ``models/ink`` graphs when present, else fresh random students) and
the procedural ink teacher (torch HED + OpenCV, per 256² crop). Each network's achieved GFLOP/s (2 × MACs
per second) is given as a fraction of this machine's sgemm GFLOP/s, measured in the same run on
onnxruntime (a 1024³ MatMul, MLAS) with the same thread count: how far a small-channel network is from
what the cores can do. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import finish, machine_info

TARGETS_MS_2T = {"light": 5.0, "standard": 12.0, "high": 30.0}


def _reference_nets() -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class WhiteBoxUNet(nn.Module):
        """White-box Cartoonization's ``unet_generator`` (channel=32, num_blocks=4), leaky ReLU, add-skips."""

        def __init__(self, ch: int = 32, blocks: int = 4) -> None:
            super().__init__()
            c = lambda i, o, k=3, s=1: nn.Conv2d(i, o, k, s, k // 2)  # noqa: E731
            self.c0, self.c1, self.c2 = c(3, ch, 7), c(ch, ch, 3, 2), c(ch, ch * 2)
            self.c3, self.c4 = c(ch * 2, ch * 2, 3, 2), c(ch * 2, ch * 4)
            self.res = nn.ModuleList(nn.ModuleList([c(ch * 4, ch * 4), c(ch * 4, ch * 4)]) for _ in range(blocks))
            self.c5, self.c6, self.c7 = c(ch * 4, ch * 2), c(ch * 2, ch * 2), c(ch * 2, ch)
            self.c8, self.c9 = c(ch, ch), c(ch, 3, 7)

        def forward(self, x):
            a = F.leaky_relu
            x0 = a(self.c0(x), 0.2)
            x1 = a(self.c2(a(self.c1(x0), 0.2)), 0.2)
            x2 = a(self.c4(a(self.c3(x1), 0.2)), 0.2)
            for r1, r2 in self.res:
                x2 = x2 + r2(a(r1(x2), 0.2))
            x3 = F.interpolate(a(self.c5(x2), 0.2), scale_factor=2.0, mode="bilinear")
            x3 = a(self.c7(a(self.c6(x3 + x1), 0.2)), 0.2)
            x4 = F.interpolate(x3, scale_factor=2.0, mode="bilinear")
            return torch.tanh(self.c9(a(self.c8(x4 + x0), 0.2)))

    def cnl(i, o, k=3, s=1, pad=None):
        """AnimeGANv2 ConvNormLReLU: reflection pad, conv without bias, GroupNorm(1), leaky ReLU."""
        return nn.Sequential(
            nn.ReflectionPad2d(pad if pad is not None else k // 2),
            nn.Conv2d(i, o, k, s, 0, bias=False),
            nn.GroupNorm(1, o),
            nn.LeakyReLU(0.2),
        )

    class InvRes(nn.Module):
        def __init__(self, i: int, o: int, expand: int = 2) -> None:
            super().__init__()
            mid = i * expand
            self.body = nn.Sequential(
                cnl(i, mid, 1, pad=0),
                nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False),
                nn.GroupNorm(1, mid),
                nn.LeakyReLU(0.2),
                nn.Conv2d(mid, o, 1, bias=False),
                nn.GroupNorm(1, o),
            )
            self.skip = i == o

        def forward(self, x):
            return x + self.body(x) if self.skip else self.body(x)

    class AnimeGANv2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(cnl(3, 32, 7), cnl(32, 64, s=2, pad=(0, 1, 0, 1)), cnl(64, 64))
            self.b = nn.Sequential(cnl(64, 128, s=2, pad=(0, 1, 0, 1)), cnl(128, 128))
            self.c = nn.Sequential(
                cnl(128, 128), InvRes(128, 256), *[InvRes(256, 256) for _ in range(3)], cnl(256, 128)
            )
            self.d = nn.Sequential(cnl(128, 128), cnl(128, 128))
            self.e = nn.Sequential(cnl(128, 64), cnl(64, 64), cnl(64, 32, 7))
            self.out = nn.Conv2d(32, 3, 1, bias=False)

        def forward(self, x):
            x = self.c(self.b(self.a(x)))
            x = self.d(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True))
            x = self.e(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True))
            return torch.tanh(self.out(x))

    class UnetBlock(nn.Module):
        """pix2pix UnetSkipConnectionBlock (BatchNorm, no dropout)."""

        def __init__(self, outer: int, inner: int, sub=None, outermost=False, innermost=False, cin=None) -> None:
            super().__init__()
            cin = cin or outer
            down = [nn.Conv2d(cin, inner, 4, 2, 1, bias=False)]
            self.outermost = outermost
            if outermost:
                up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
                model = down + [sub] + up
            elif innermost:
                up = [nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
                model = [nn.LeakyReLU(0.2, True)] + down + up
            else:
                up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
                model = [nn.LeakyReLU(0.2, True)] + down + [nn.BatchNorm2d(inner), sub] + up
            self.model = nn.Sequential(*model)

        def forward(self, x):
            return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)

    def pix2pix_unet256(ngf: int = 64):
        block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(3):
            block = UnetBlock(ngf * 8, ngf * 8, block)
        block = UnetBlock(ngf * 4, ngf * 8, block)
        block = UnetBlock(ngf * 2, ngf * 4, block)
        block = UnetBlock(ngf, ngf * 2, block)
        return UnetBlock(3, ngf, block, outermost=True, cin=3)

    return {"whitebox_unet32": WhiteBoxUNet(), "animeganv2": AnimeGANv2(), "pix2pix_unet256": pix2pix_unet256()}


def _student_graphs(folder: Path, bundle: Path | None) -> dict[str, dict]:
    """{tier: {"onnx", "gmacs", "params", "source"}} from a bundle, or random students exported now."""
    if bundle is not None and (bundle / "manifest.json").exists():
        from engine.bundle import load_bundle

        b = load_bundle(bundle)
        out = {}
        for t in b.manifest.tiers:
            f = t.file_for("onnx")
            if f is not None:
                out[t.id] = {
                    "onnx": b.path(f),
                    "gmacs": t.gmacs,
                    "params": t.params,
                    "source": str(bundle),
                    "io": b.manifest.io,
                }
        return out
    from training.modules import count_params
    from training.student.export import export_onnx
    from training.student.networks import TIERS, build_student, count_macs

    out = {}
    for tier in TIERS:
        net = build_student(tier).eval()
        path = folder / f"student_{tier}.onnx"
        export_onnx(net, path, 256)
        out[tier] = {"onnx": path, "gmacs": count_macs(net) / 1e9, "params": count_params(net), "source": "random"}
    return out


def _time(path: Path, runtime: str, threads: int, runs: int, warmup: int, io_spec=None) -> float:
    from engine.backends import open_stylizer, time_stylizer
    from engine.bundle import IOSpec

    stylizer = open_stylizer(path, runtime, threads, io_spec or IOSpec())
    try:
        return round(time_stylizer(stylizer, runs=runs, warmup=warmup), 3)
    finally:
        stylizer.close()


SGEMM_N = 1024


def sgemm_gflops(folder: Path, threads: int, runs: int = 10) -> float:
    """This machine's float32 matrix-multiply rate on onnxruntime (one N³ MatMul), GFLOP/s."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    b = helper.make_tensor("b", TensorProto.FLOAT, [SGEMM_N, SGEMM_N], np.ones(SGEMM_N * SGEMM_N, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [SGEMM_N, SGEMM_N])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [SGEMM_N, SGEMM_N])],
        [b],
    )
    path = folder / "sgemm.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.20 reads
    onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    from engine.stats import median_ms

    ms = median_ms(lambda: session.run(None, {"a": a}), runs, warmup=2)
    return round(2 * SGEMM_N**3 / (ms / 1000) / 1e9, 1)


def _efficiency(entry: dict, sgemm: dict[int, float]) -> None:
    """Add achieved GFLOP/s and its fraction of sgemm to each timed setting of ``entry``."""
    for key in [k for k in entry if k.endswith("t_ms")]:
        threads = int(key.split("_")[-2][:-1])
        gflops = 2 * entry["gmacs"] / (entry[key] / 1000)
        entry[key.replace("_ms", "_gflops")] = round(gflops, 1)
        entry[key.replace("_ms", "_of_sgemm")] = round(gflops / sgemm[threads], 3)


def _teacher_ms(runs: int, threads: int) -> float:
    import cv2
    import torch

    from engine.sources import astronaut
    from training.teachers.ink import InkTeacher

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    crop = astronaut(256)
    teacher = InkTeacher()
    teacher([crop])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        teacher([crop])
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def bench(runs: int, warmup: int, bundle: Path | None, teacher_runs: int) -> dict:
    import torch

    from engine.backends import convert_onnx_to_mnn
    from training.modules import count_params
    from training.student.export import export_onnx
    from training.student.networks import count_macs

    torch.set_num_threads(1)
    result: dict = {
        "machine": machine_info(),
        "input": "1x3x256x256 float32",
        "runs": runs,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graphs = {f"student_{k}": v for k, v in _student_graphs(folder, bundle).items()}
        for name, net in _reference_nets().items():
            net.eval()
            path = folder / f"{name}.onnx"
            export_onnx(net, path, 256)
            graphs[name] = {
                "onnx": path,
                "gmacs": count_macs(net) / 1e9,
                "params": count_params(net),
                "source": "random",
            }
        for name, g in graphs.items():
            entry = {"gmacs": round(g["gmacs"], 3), "params": g["params"], "weights": g["source"]}
            mnn = folder / f"{name}.mnn"
            try:
                convert_onnx_to_mnn(g["onnx"], mnn)
            except Exception as exc:  # a peer graph MNN cannot convert is reported, not fatal
                entry["mnn_error"] = str(exc)
            for threads in (1, 2):
                entry[f"onnx_{threads}t_ms"] = _time(g["onnx"], "onnx", threads, runs, warmup, g.get("io"))
                if mnn.exists():
                    entry[f"mnn_{threads}t_ms"] = _time(mnn, "mnn", threads, runs, warmup, g.get("io"))
            result["models"][name] = entry
        sgemm = {threads: sgemm_gflops(folder, threads) for threads in (1, 2)}
        result["sgemm_gflops_onnxruntime"] = {f"{t}t": v for t, v in sgemm.items()}
        for entry in result["models"].values():
            _efficiency(entry, sgemm)
    for threads in (1, 2):
        result["models"].setdefault("ink_teacher", {})[f"torch_cv_{threads}t_ms"] = _teacher_ms(teacher_runs, threads)
    models = result["models"]
    result["targets_2t_ms"] = {
        tier: {
            "target": target,
            "onnx": models[f"student_{tier}"]["onnx_2t_ms"],
            "mnn": models[f"student_{tier}"].get("mnn_2t_ms"),
            "met_by_fastest": min(
                v for v in (models[f"student_{tier}"]["onnx_2t_ms"], models[f"student_{tier}"].get("mnn_2t_ms")) if v
            )
            <= target,
        }
        for tier, target in TARGETS_MS_2T.items()
        if f"student_{tier}" in models
    }
    refs = [n for n in models if not n.startswith("student_") and "onnx_1t_ms" in models[n]]
    for threads in (1, 2):
        key = f"onnx_{threads}t_ms"
        result[f"speedup_vs_references_onnx_{threads}t"] = {
            f"student_{tier}": {r: round(models[r][key] / models[f"student_{tier}"][key], 2) for r in refs}
            for tier in TARGETS_MS_2T
            if f"student_{tier}" in models
        }
    finish(result["machine"])
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stylecast bench students", description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="timed inferences per model and setting")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--teacher-runs", type=int, default=5)
    parser.add_argument("--bundle", type=Path, default=Path("models/ink"), help="bundle whose tiers to time")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = bench(args.runs, args.warmup, args.bundle, args.teacher_runs)
    text = json.dumps(result, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0
