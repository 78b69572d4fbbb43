import json

import onnx
import pytest
import torch

from engine.backends import OnnxStylizer
from engine.bundle import load_bundle
from engine.errors import BundleError
from engine.stability import FLICKER_TARGET, STRENGTHS
from tests.training.conftest import make_student_run
from training.errors import TrainingError
from training.student.export import ExportedTier, export_bundle, export_tier, write_bundle
from training.student.networks import load_student


def test_export_tier_writes_checked_static_graphs_that_match_torch(tmp_path):
    run, ema = make_student_run(tmp_path / "run")
    tier = export_tier(run, tmp_path / "out", size=64)
    model = onnx.load(str(tier.onnx))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "input" and model.graph.output[0].name == "output"
    assert dims == [1, 3, 64, 64] and model.opset_import[0].version == 17
    assert tier.onnx_max_abs <= 1e-3 and tier.mnn_max_abs <= 3e-3 and tier.mnn.stat().st_size > 0
    net, record = load_student(run)
    assert record["tier"] == "light"
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(net(x), ema(x))  # the EMA weights are what gets exported


def test_bundle_is_written_with_the_engine_schema_and_validates(tmp_path, ink_pairs):
    runs = [make_student_run(tmp_path / t, t)[0] for t in ("standard", "light")]
    bundle = export_bundle(runs, tmp_path / "ink", style_id="ink", pairs=ink_pairs, data="test pairs", size=64)
    assert [t.id for t in bundle.manifest.tiers] == ["light", "standard"]  # cheapest first
    assert bundle.manifest.schema == 1 and bundle.manifest.io.input_name == "input"
    metrics = bundle.manifest.metrics
    assert metrics["n"] == 2 and set(metrics["tiers"]) == {"light", "standard"}
    assert "test pairs" in bundle.manifest.model_card and "non-commercial" in bundle.manifest.license
    assert (tmp_path / "ink" / "preview.png").exists()
    raw = json.loads((tmp_path / "ink" / "manifest.json").read_text())
    assert raw["created"]["runs"] == ["standard", "light"]
    assert set(metrics["export_parity"]) == {"light", "standard"}
    calibration = metrics["temporal_calibration"]  # the default smoothing is the weakest that calms flicker
    tried = {float(k): v for k, v in calibration["flicker_by_strength"].items()}
    chosen = bundle.manifest.blend.temporal
    assert calibration["tier"] == "light" and calibration["chosen"] == chosen == max(tried)
    assert tried[chosen] <= FLICKER_TARGET or chosen == STRENGTHS[-1]
    assert all(v > FLICKER_TARGET for k, v in tried.items() if k < chosen)
    for tier_id, record in metrics["sharpen"].items():  # calibrated on the 6 training pairs
        assert record["calibrated_on"] == "6 training pairs" and record["amount"] >= 0
        layer_named = f"{tier_id}: ends in an edge-gated sharpening layer" in bundle.manifest.model_card
        assert layer_named == (record["amount"] > 0)  # a student as sharp as its teacher gets no layer
    (tmp_path / "ink" / "light.mnn").write_bytes(b"corrupt")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(tmp_path / "ink")


def test_no_sharpen_exports_the_student_alone(tmp_path, ink_pairs):
    run, ema = make_student_run(tmp_path / "light")
    bundle = export_bundle([run], tmp_path / "ink", pairs=ink_pairs, size=64, sharpen=False, temporal=0.6)
    assert "sharpen" not in bundle.manifest.metrics and "sharpening" not in bundle.manifest.model_card
    assert bundle.manifest.blend.temporal == 0.6 and "temporal_calibration" not in bundle.manifest.metrics
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    out = OnnxStylizer(tmp_path / "ink" / "light.onnx", threads=1)(x.numpy())
    assert float(abs(torch.from_numpy(out) - ema(x).detach()).max()) < 1e-3


def test_bad_runs_and_duplicate_tiers_are_refused(tmp_path):
    with pytest.raises(TrainingError, match="no such checkpoint"):
        load_student(tmp_path / "nothing")
    tier = ExportedTier("light", tmp_path / "a.onnx", tmp_path / "a.mnn", 64, 0.1, 10, 0.0, 0.0)
    with pytest.raises(TrainingError, match="same tier"):
        write_bundle(tmp_path, "x", "X", [tier, tier])


def test_parity_failure_is_reported(tmp_path, monkeypatch):
    run, _ = make_student_run(tmp_path / "run")
    import training.student.export as export

    monkeypatch.setattr(export, "max_parity_error", lambda runtime, *a: 0.5 if runtime == "mnn" else 0.0)
    with pytest.raises(TrainingError, match=r"MNN \(fp32 weights\) differs from the reference by 5.00e-01"):
        export_tier(run, tmp_path / "out", size=64)


def test_mnn_falls_back_to_fp32_weights_when_fp16_misses_the_tolerance(tmp_path, monkeypatch):
    run, _ = make_student_run(tmp_path / "run")
    import training.student.export as export

    errors = iter([1e-7, 8e-3, 2e-6])  # onnx, mnn fp16, mnn fp32
    monkeypatch.setattr(export, "max_parity_error", lambda *a: next(errors))
    tier = export_tier(run, tmp_path / "out", size=64)
    assert tier.mnn_weights == "fp32" and tier.mnn_fp16_max_abs == 8e-3 and tier.mnn_max_abs == 2e-6
    assert tier.parity()["mnn_weights"] == "fp32"


def test_a_style_trained_to_keep_skin_tone_ships_the_run_time_guard_and_says_so(tmp_path, ink_pairs):
    import shutil

    from engine.blend import SKIN_TONE_LIMIT
    from training.pairs import SOURCE_FILE

    pairs = tmp_path / "pairs"
    shutil.copytree(ink_pairs, pairs)
    teacher = {"id": "toy", "name": "Toy", "license": "test fixture", "commercial_use": False}
    run, _ = make_student_run(tmp_path / "light")
    for skin_tone, limit in (("keep", SKIN_TONE_LIMIT), ("teacher", 0.0)):
        (pairs / SOURCE_FILE).write_text(json.dumps({"teacher": teacher, "skin_tone": skin_tone}))
        bundle = export_bundle([run], tmp_path / skin_tone, pairs=pairs, size=64, sharpen=False, temporal=0.5)
        assert bundle.manifest.blend.skin_tone_limit == limit
        assert (f"to {limit:g} L*" in bundle.manifest.model_card) == (limit > 0)


def test_a_bundles_tier_becomes_again_the_trainable_student_it_was_exported_from(tmp_path, ink_pairs):
    """A style whose training run is gone can still be fine-tuned: its ONNX tier (BatchNorms folded, the
    full-resolution block split, a sharpening layer after the head) becomes a StudentNet computing the same
    function in eval mode, and in training mode on the photos that calibrated its BatchNorms."""
    from dataclasses import asdict

    from training.runs import RunDir
    from training.student.networks import TIERS, build_student, student_from_onnx
    from training.student.train import load_pairs

    torch.manual_seed(1)
    net = build_student("standard", alpha=True)  # squeeze-excitation and an alpha channel
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics as training leaves them
        bn.running_mean.uniform_(-0.3, 0.3), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.2, 0.2)
    spec = asdict(TIERS["standard"]) | {"alpha": True}
    run = RunDir.open(tmp_path / "standard", "student", {"tier": "standard"})
    record = {"arch": "student", "init_kwargs": spec, "params": net.state_dict(), "params_ema": net.state_dict()}
    run.save_checkpoint(record | {"step": 1, "tier": "standard"}, {"step": 1})
    run.close()
    export_bundle([tmp_path / "standard"], tmp_path / "style", style_id="style", pairs=ink_pairs, size=64)

    photos = load_pairs(ink_pairs, "train").photos[:8].float() / 127.5 - 1.0
    rebuilt = student_from_onnx(tmp_path / "style" / "standard.onnx", spec, photos)
    with torch.no_grad():
        assert (rebuilt.eval()(photos) - net.eval()(photos)).abs().max() < 1e-4
        assert (rebuilt.train()(photos) - net.eval()(photos)).abs().max() < 1e-3

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(TrainingError, match="broken.onnx: not a readable ONNX model"):
        student_from_onnx(broken, spec, photos)
    with pytest.raises(TrainingError, match="do not match"):
        student_from_onnx(tmp_path / "style" / "standard.onnx", asdict(TIERS["light"]) | {"alpha": True}, photos)
