import json
import threading
import time

import numpy as np
import pytest

from engine.backends import MnnStylizer, OnnxStylizer, load_tier, time_stylizer
from engine.errors import BackendUnavailable, BundleError


def _input(size=256, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)


def test_onnx_and_mnn_agree_within_2e3(fixture_bundle):
    for tier in fixture_bundle.manifest.tiers:
        onnx = OnnxStylizer(fixture_bundle.path(tier.file_for("onnx")), threads=2)
        mnn = MnnStylizer(fixture_bundle.path(tier.file_for("mnn")), threads=2)
        x = _input()
        a, b = onnx(x), mnn(x)
        assert a.shape == b.shape == (1, 3, 256, 256)
        assert np.abs(a - b).max() <= 2e-3


def test_mnn_output_is_copied_out_of_mnn_memory(fixture_bundle):
    mnn = MnnStylizer(fixture_bundle.path(fixture_bundle.tier("light").file_for("mnn")))
    first = mnn(_input(seed=1))
    keep = first.copy()
    mnn(_input(seed=2))
    assert np.array_equal(first, keep)


def test_mnn_inference_releases_the_gil(fixture_bundle):
    """Another Python thread keeps running while MNN infers (runSession releases the GIL)."""
    mnn = MnnStylizer(fixture_bundle.path(fixture_bundle.tier("standard").file_for("mnn")), threads=1)
    x = _input()
    mnn(x)
    count = 0
    stop = threading.Event()

    def spin():
        nonlocal count
        while not stop.is_set():
            count += 1

    # baseline: how far the spinner gets while the main thread sleeps for the same time
    t0 = time.perf_counter()
    for _ in range(3):
        mnn(x)
    infer_s = (time.perf_counter() - t0) / 3
    th = threading.Thread(target=spin)
    th.start()
    time.sleep(infer_s * 3)
    free_count, count = count, 0
    for _ in range(3):
        mnn(x)
    busy_count = count
    stop.set()
    th.join()
    # with the GIL held during inference the spinner would only run in the gaps between calls (~0)
    # measured here: ~0.8 with runSession, ~0.2 with MNN.nn.Module.forward (which holds the GIL)
    assert busy_count > 0.5 * free_count


def test_corrupt_model_file_is_a_bundle_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError, match="bad.onnx"):
        OnnxStylizer(bad)
    bad_mnn = tmp_path / "bad.mnn"
    bad_mnn.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError, match="bad.mnn"):
        MnnStylizer(bad_mnn)


def test_auto_backend_times_both_and_keeps_one(fixture_bundle):
    model = load_tier(fixture_bundle, fixture_bundle.tier("light"), backend="auto")
    assert model.stylizer.runtime in ("onnx", "mnn")
    assert model.ms > 0
    forced = load_tier(fixture_bundle, fixture_bundle.tier("light"), backend="mnn")
    assert forced.stylizer.runtime == "mnn"
    assert time_stylizer(forced.stylizer, runs=2) > 0


def test_tier_without_requested_backend(fixture_bundle_root, tmp_path):
    from bench.fixture_net import LIGHT, write_bundle
    from engine.bundle import load_bundle

    bundle = load_bundle(write_bundle(tmp_path, "onnxonly", {"light": LIGHT}, runtimes=("onnx",)))
    with pytest.raises(BackendUnavailable, match="no mnn model"):
        load_tier(bundle, bundle.tier("light"), backend="mnn")


def test_stylize_roundtrips_value_range(fixture_bundle):
    model = load_tier(fixture_bundle, fixture_bundle.tier("light"), backend="onnx")
    crop = np.full((256, 256, 3), (20, 120, 220), np.uint8)
    out = model.stylize(crop)
    assert out.shape == crop.shape and out.dtype == np.uint8


def test_missing_libraries_raise_typed_errors(monkeypatch, tmp_path):
    import sys

    from engine.tracking import FaceMeshDetector

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="onnxruntime"):
        OnnxStylizer(tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh", None)
    with pytest.raises(BackendUnavailable, match="face_mesh"):
        FaceMeshDetector()


def test_a_second_start_takes_the_runtimes_from_the_warmup_cache(fixture_bundle, tmp_path, monkeypatch):
    from engine import backends
    from engine.backends import WarmupCache
    from engine.pipeline import load_style

    cache = WarmupCache(tmp_path / "warmup.json")
    first = load_style(fixture_bundle, "auto", "auto", 1, cache=cache)
    chosen = [m.stylizer.runtime for m in first.models]
    first.close()
    entries = json.loads((tmp_path / "warmup.json").read_text())
    assert len(entries) == 4 and all(backends.cpu_model() in k for k in entries)  # 2 tiers x 2 runtimes
    timed = []
    monkeypatch.setattr(backends, "time_stylizer", lambda *a, **k: timed.append(1) or 1.0)
    second = load_style(fixture_bundle, "auto", "auto", 1, cache=cache)
    assert not timed and [m.stylizer.runtime for m in second.models] == chosen
    second.close()
    (tmp_path / "warmup.json").write_text("{broken")  # a damaged cache is measured again, not an error
    third = load_style(fixture_bundle, "auto", "auto", 1, cache=cache)
    assert timed and len(json.loads((tmp_path / "warmup.json").read_text())) == 4
    third.close()


def test_a_tier_smaller_than_the_crop_is_resized_back_to_it(fixture_bundle):
    """A 64² tier with the default 256² crop: the pipeline pastes the output through a 256² mask."""
    model = load_tier(fixture_bundle, fixture_bundle.tier("light"), backend="onnx")
    crop = np.full((96, 96, 3), (20, 120, 220), np.uint8)
    assert model.stylizer.input_size != 96 and model.stylize(crop).shape == (96, 96, 3)


def _broken_model(path, kind):
    """A model that loads but cannot serve: a half-size output, a float16 input, NaN output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    in_type = TensorProto.FLOAT16 if kind == "fp16_input" else TensorProto.FLOAT
    out_shape = [1, 3, 128, 128] if kind == "half" else [1, 3, 256, 256]
    inits, nodes, x = [], [], "input"
    if kind == "fp16_input":
        nodes.append(helper.make_node("Cast", [x], ["x32"], to=TensorProto.FLOAT))
        x = "x32"
    if kind == "half":
        nodes.append(helper.make_node("AveragePool", [x], ["output"], kernel_shape=[2, 2], strides=[2, 2]))
    else:
        inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
        nodes.append(helper.make_node("Mul", [x, "nan"], ["output"]))
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("input", in_type, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("half", r"output shape \[1, 3, 128, 128\], the manifest expects 3 channels \(colour\) at the input's 256"),
        ("fp16_input", r"input 'input' is tensor\(float16\)"),
        ("nan", "NaN or infinite values"),
    ],
)
def test_a_model_that_loads_but_cannot_serve_is_a_bundle_error(tmp_path, kind, message):
    from engine.backends import convert_onnx_to_mnn, open_stylizer

    model = _broken_model(tmp_path / f"{kind}.onnx", kind)
    with pytest.raises(BundleError, match=message):
        open_stylizer(model, "onnx")
    if kind == "half":  # MNN fills a host tensor of the input's size: a run alone would not show it
        convert_onnx_to_mnn(model, tmp_path / "half.mnn")
        with pytest.raises(BundleError, match=message):
            open_stylizer(tmp_path / "half.mnn", "mnn")
