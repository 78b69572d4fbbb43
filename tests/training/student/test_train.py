"""The student stage end to end (tiny preset), its resume and abort paths, and its bad inputs."""

import json
import shutil
from dataclasses import asdict, replace

import cv2
import numpy as np
import pytest
import torch

from training import runs as runs_module
from training.cli import main as train_main
from training.errors import DatasetError, DiskFullError, TrainingError
from training.runs import AbortFlag, Progress, RunDir, StageContext, load_model_file
from training.student.train import StudentConfig, config_from, load_pairs, train_student


def _ctx(root, abort=None, options=None):
    run = RunDir.open(root, "student", options or {})
    return StageContext(run, Progress("none"), abort if abort is not None else AbortFlag())


@pytest.mark.timeout(120)
def test_tiny_preset_trains_exports_and_the_engine_stylizes_with_both_backends(tmp_path, ink_pairs):
    from engine.bundle import load_bundle
    from engine.pipeline import Pipeline, load_style
    from engine.sources import DemoConfig, DemoSource
    from engine.tracking import MeshFaceTracker

    bundle_dir = tmp_path / "bundle" / "ink"
    code = train_main(
        ["student", "--pairs", str(ink_pairs), "--run", str(tmp_path / "run"), "--preset", "tiny", "--progress", "none"]
        + ["--export-to", str(bundle_dir)]
    )
    assert code == 0
    bundle = load_bundle(bundle_dir)
    tier = bundle.manifest.tiers[0]
    assert tier.id == "light" and {f.runtime for f in tier.files} == {"onnx", "mnn"}
    assert tier.input_size == 256 and 0 < tier.gmacs <= 0.3
    assert set(bundle.manifest.metrics["tiers"]["light"]) >= {
        "sharpness",
        "block_ratio",
        "identity",
        "fid_el0_to_teacher",
    }
    assert "non-commercial" in bundle.manifest.model_card and (bundle_dir / "preview.png").exists()
    frames = DemoSource(DemoConfig(frames=12)).read, 12
    images = [frames[0]() for _ in range(frames[1])]
    for backend in ("onnx", "mnn"):
        pipe = Pipeline(MeshFaceTracker(), load_style(bundle, "light", backend))
        try:
            results = [pipe.process(f) for f in images]
        finally:
            pipe.close()
        last = results[-1]
        assert last.error is None and last.backend == backend and last.style == "ink"
        assert last.faces and last.faces[0].stylized
        assert np.abs(last.image.astype(int) - images[-1].image.astype(int)).mean() > 0.5


def test_too_few_pairs_is_a_clear_error(tmp_path, ink_pairs):
    cfg = config_from("tiny", min_pairs=50)
    with pytest.raises(DatasetError, match="only 6 training pairs; this preset needs at least 50"):
        train_student(ink_pairs, cfg, _ctx(tmp_path / "run"))


def test_empty_or_broken_pairs_folder_is_a_clear_error(tmp_path):
    (tmp_path / "p" / "photos").mkdir(parents=True)
    (tmp_path / "p" / "stylized").mkdir()
    with pytest.raises(DatasetError, match="no image pairs"):
        train_student(tmp_path / "p", config_from("tiny"), _ctx(tmp_path / "r1"))
    (tmp_path / "p" / "photos" / "a.png").write_bytes(b"not a png")
    (tmp_path / "p" / "stylized" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="a.png: not a readable image"):
        train_student(tmp_path / "p", config_from("tiny", min_pairs=1), _ctx(tmp_path / "r2"))


def _final_params(root):
    return load_model_file(root / "checkpoints" / "model.json")["params_ema"]


def test_an_aborted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, ink_pairs):
    cfg = config_from("tiny", steps=6, crop=32, batch=2, ckpt_every=100, sample_every=100, log_every=3, gan_start=2)
    assert train_student(ink_pairs, cfg, _ctx(tmp_path / "straight"))["finished"]

    abort = AbortFlag()
    ctx = _ctx(tmp_path / "killed", abort)
    real_update = ctx.progress.update

    def stop_at_4(step, total, **m):
        real_update(step, total, **m)
        if step == 4:
            abort.request()

    ctx.progress.update = stop_at_4
    summary = train_student(ink_pairs, cfg, ctx)
    assert not summary["finished"] and summary["steps"] == 4
    resumed = train_student(ink_pairs, cfg, _ctx(tmp_path / "killed"))
    assert resumed["finished"] and resumed["steps"] == 6
    a, b = _final_params(tmp_path / "straight"), _final_params(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, ink_pairs, monkeypatch):
    cfg = config_from("tiny", steps=4, crop=32, batch=2, ckpt_every=2, sample_every=100)
    train_student(ink_pairs, cfg, _ctx(tmp_path / "run"))
    good = (tmp_path / "run" / "checkpoints" / "model.safetensors").read_bytes()
    real = shutil.disk_usage
    monkeypatch.setattr(runs_module.shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    longer = config_from("tiny", steps=8, crop=32, batch=2, ckpt_every=2, sample_every=100)
    with pytest.raises(DiskFullError, match="MB free.*previous checkpoint is kept"):
        train_student(ink_pairs, longer, _ctx(tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "model.safetensors").read_bytes() == good
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_presets_and_ablation_rows_differ_only_where_they_should():
    from training.student.train import ABLATION_ROWS

    tiny, cpu = config_from("tiny"), config_from("cpu")
    assert tiny.steps < cpu.steps and tiny.crop < cpu.crop
    rows = {name: config_from("cpu", **row) for name, row in ABLATION_ROWS.items()}
    assert rows["pixel"].weights.perceptual == 0 and rows["pixel"].weights.gan == 0
    assert rows["perceptual_gan"].weights.gan > 0 and not rows["perceptual_gan"].weights.edge
    assert rows["edge"].weights.edge and not rows["edge"].augment
    # the last row is the full recipe the tiers used before the detail loss
    assert rows["augment"] == replace(cpu, weights=replace(cpu.weights, detail=0.0))
    assert all(r.weights.detail == 0 for r in rows.values()) and cpu.weights.detail > 0
    assert len({(r.steps, r.seed, r.batch, r.crop) for r in rows.values()}) == 1
    with pytest.raises(Exception, match="unknown preset"):
        config_from("huge")
    assert isinstance(cpu, StudentConfig)


def test_a_crashed_run_loses_nothing_before_its_last_checkpoint(tmp_path, ink_pairs):
    cfg = config_from("tiny", steps=8, crop=32, batch=2, ckpt_every=4, sample_every=100, log_every=2)
    ctx = _ctx(tmp_path / "run")

    def crash(step, total, **m):
        if step == 6:
            raise KeyboardInterrupt  # killed hard: no graceful save

    ctx.progress.update = crash
    with pytest.raises(KeyboardInterrupt):
        train_student(ink_pairs, cfg, ctx)
    saved = load_model_file(tmp_path / "run" / "checkpoints" / "model.json")
    assert saved["step"] == 4
    resumed = train_student(ink_pairs, cfg, _ctx(tmp_path / "run"))
    assert resumed["finished"] and resumed["steps"] == 8


def test_fine_tuning_starts_from_another_runs_student(tmp_path, ink_pairs):
    base = config_from("tiny", steps=2, crop=32, batch=2, sample_every=100)
    train_student(ink_pairs, base, _ctx(tmp_path / "base"))
    start = load_model_file(tmp_path / "base" / "checkpoints" / "model.json")["params"]
    tuned = config_from("tiny", steps=1, crop=32, batch=2, sample_every=100, gan_start=0)
    ctx = _ctx(tmp_path / "tuned")
    trainer_log = train_student(ink_pairs, tuned, ctx, init_from=tmp_path / "base")
    assert trainer_log["finished"]
    after = load_model_file(tmp_path / "tuned" / "checkpoints" / "model.json")["params"]
    # one Adam step (lr 2e-4) away from the base weights, not from a fresh initialisation
    weights = [k for k in start if k.endswith("weight")]
    assert max(float((after[k] - start[k]).abs().max()) for k in weights) < 1e-3
    with pytest.raises(Exception, match="not"):
        train_student(ink_pairs, config_from("tiny", tier="high"), _ctx(tmp_path / "x"), init_from=tmp_path / "base")


def test_one_tier_fine_tunes_from_its_own_folder_of_a_multi_tier_run(tmp_path, ink_pairs):
    """`--tier light --init-from RUN`, where RUN trained several tiers side by side (RUN/light, RUN/...)."""
    base = config_from("tiny", steps=1, crop=32, batch=2, sample_every=100)
    train_student(ink_pairs, base, _ctx(tmp_path / "base" / "light"))
    args = ["student", "--pairs", str(ink_pairs), "--run", str(tmp_path / "tuned"), "--tier", "light"]
    args += ["--preset", "tiny", "--steps", "1", "--progress", "none", "--init-from", str(tmp_path / "base")]
    code = train_main(args)
    assert code == 0
    options = json.loads((tmp_path / "tuned" / "options.json").read_text())["options"]
    assert options["init_from"] == str(tmp_path / "base" / "light")


def test_tiers_trained_side_by_side_learn_what_each_learns_alone_and_resume(tmp_path, ink_pairs):
    from training.student.train import train_students

    cfg = config_from("tiny", steps=8, ckpt_every=4, sample_every=4)
    alone = train_student(ink_pairs, cfg, _ctx(tmp_path / "alone"))
    assert alone["finished"]
    cfgs = [cfg, replace(cfg, tier="standard")]
    abort = AbortFlag()
    ctxs = [_ctx(tmp_path / "joint" / c.tier, abort) for c in cfgs]
    ctxs[0].progress.sample = lambda path: "step_0000004" in path.name and abort.request()  # stop at step 4
    cut = train_students(ink_pairs, cfgs, ctxs)
    assert [s["steps"] for s in cut] == [4, 4] and not cut[0]["finished"]
    resumed = train_students(ink_pairs, cfgs, [_ctx(tmp_path / "joint" / c.tier) for c in cfgs])
    assert [s["steps"] for s in resumed] == [8, 8] and all(s["finished"] for s in resumed)
    solo = load_model_file(tmp_path / "alone" / "checkpoints" / "model.json")["params_ema"]
    joint = load_model_file(tmp_path / "joint" / "light" / "checkpoints" / "model.json")["params_ema"]
    # the lead tier sees exactly the batches it would see alone: sharing them changes nothing but float order
    worst = max(float((solo[k].float() - joint[k].float()).abs().max()) for k in solo)
    assert worst < 1e-4
    with pytest.raises(Exception, match="share every option but the tier"):
        train_students(ink_pairs, [cfg, replace(cfg, steps=9, tier="high")], ctxs)


def test_alpha_crops_come_with_the_engines_crop_edge_window_at_the_same_places():
    """The window the engine multiplies a predicted alpha by travels with each random crop (and its mirroring),
    so the alpha loss can apply it: a random crop alone cannot tell the student where the crop edges are."""
    from engine.blend import crop_edge_window
    from training.student.train import PairTensors, SharedBatches, sample_batch

    size, n = 64, 6
    window = crop_edge_window(size)
    as_alpha = torch.from_numpy(np.round(window * 255).astype(np.uint8))[None, None].repeat(n, 1, 1, 1)
    photos = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    data = PairTensors([str(i) for i in range(n)], photos, photos, photos, as_alpha)
    torch.manual_seed(0)
    *_, alpha, crop_window = sample_batch(data, 8, 40, "cpu")
    assert crop_window.shape == (8, 1, 40, 40) and (crop_window < 1).any()
    assert torch.allclose((alpha + 1) / 2, crop_window, atol=1 / 255)
    cfg = replace(config_from("tiny", crop=40, batch=8), augment=True)
    (_, _, _, (alpha, crop_window)), _ = SharedBatches(data, cfg, "cpu", None).at(0)
    assert torch.allclose((alpha + 1) / 2, crop_window, atol=1 / 255)  # mirrored together (the window is not
    # symmetric about an off-centre crop)


def _toned_pairs(tones: list[int], size: int = 32):
    """Pairs whose face (the alpha target's middle) has the given luma; the background is the opposite."""
    from training.student.train import PairTensors

    n = len(tones)
    photos = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i, tone in enumerate(tones):
        photos[i] = 255 - tone
        photos[i, :, size // 4 : -size // 4, size // 4 : -size // 4] = tone
    alpha = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    alpha[:, :, size // 4 : -size // 4, size // 4 : -size // 4] = 255
    return PairTensors([str(i) for i in range(n)], photos, photos, photos, alpha)


def test_tone_balanced_sampling_draws_rare_skin_tones_as_often_as_common_ones_within_its_cap():
    """Four dark faces among twenty come up half the time (each band of lightness as often as the other);
    one among a hundred is capped at four times the uniform weight. The tone is the face's, not the
    background's."""
    from training.student.train import sample_batch, tone_weights

    data = _toned_pairs([200] * 16 + [50] * 4)
    weights = tone_weights(data.photos, data.alpha)
    assert float(weights[16:].sum() / weights.sum()) == pytest.approx(0.5)
    rare = _toned_pairs([200] * 99 + [50])
    assert float(tone_weights(rare.photos, rare.alpha)[-1]) == pytest.approx(4.0)
    torch.manual_seed(0)
    photo, *_ = sample_batch(data, 400, 32, "cpu", weights)
    dark = (photo[:, 0, 16, 16] < 0).float().mean()
    assert 0.4 < float(dark) < 0.6
    only_last = torch.zeros(20)
    only_last[-1] = 1.0
    photo, *_ = sample_batch(data, 8, 32, "cpu", only_last)
    assert torch.equal(photo, (data.photos[-1:].float() / 127.5 - 1).expand(8, -1, -1, -1))


def test_colour_targets_keep_the_photo_where_the_alpha_target_keeps_it(tmp_path, ink_pairs):
    """A teacher repaints the whole crop; the student is taught the photo wherever its alpha keeps the photo,
    so an alpha that spills past the hair shows the photo, not the teacher's background."""
    pairs = tmp_path / "pairs"
    shutil.copytree(ink_pairs, pairs)
    (pairs / "alpha").mkdir()
    keys = sorted(p.stem for p in (pairs / "photos").glob("*.png"))
    size = cv2.imread(str(pairs / "photos" / f"{keys[0]}.png")).shape[0]
    alpha = np.zeros((size, size), np.uint8)
    alpha[size // 4 : -size // 4, size // 4 : -size // 4] = 255  # the head
    alpha[: size // 8] = 128  # half shown
    for key in keys:
        cv2.imwrite(str(pairs / "alpha" / f"{key}.png"), alpha)

    teacher, taught = load_pairs(pairs, "train"), load_pairs(pairs, "train", photo_outside_alpha=True)
    photos, painted, targets = (t.numpy().astype(np.float32) for t in (teacher.photos, teacher.targets, taught.targets))
    head, outside, half = alpha == 255, alpha == 0, alpha == 128
    assert (painted != photos)[:, :, outside].mean() > 0.5  # the teacher repaints the whole crop
    assert np.array_equal(targets[:, :, outside], photos[:, :, outside])
    assert np.array_equal(targets[:, :, head], painted[:, :, head])
    mixed = painted * 128 / 255 + photos * 127 / 255
    assert np.abs(targets[:, :, half] - mixed[:, :, half]).max() <= 1.0
    assert StudentConfig().photo_outside_alpha  # on by default


def test_a_3x3_head_tier_is_rebuilt_as_it_is_and_fine_tuned_into_a_1x1_head(tmp_path, ink_pairs):
    """`--head-kernel 1` (a faster light tier) fine-tunes an installed 3×3-head tier: it starts from the
    1×1 head that computes the same on locally constant features. Rebuilding the file (re-export,
    carry-over) keeps its own head, so it still computes the file's function; the change back, 1×1 into
    3×3, is exact."""
    from tests.training.conftest import make_student_run
    from training.student.export import export_bundle
    from training.student.networks import TIERS, build_student, fit_head, load_student, student_from_onnx

    run, earlier = make_student_run(tmp_path / "light")
    export_bundle([run], tmp_path / "style", style_id="style", pairs=ink_pairs, size=64)
    cfg = config_from("tiny", steps=1, crop=32, batch=2, sample_every=100, gan_start=0, head_kernel=1)
    assert train_student(ink_pairs, cfg, _ctx(tmp_path / "tuned"), init_from=tmp_path / "style")["finished"]
    tuned, record = load_student(tmp_path / "tuned")
    assert tuned.head.kernel_size == (1, 1) and record["init_kwargs"]["head"] == 1

    photos = torch.rand(4, 3, 64, 64) * 2 - 1
    rebuilt = student_from_onnx(tmp_path / "style" / "light.onnx", asdict(TIERS["light"]) | {"head": 1}, photos)
    assert rebuilt.head.kernel_size == (3, 3)
    with torch.no_grad():
        assert (rebuilt.eval()(photos) - earlier(photos)).abs().max() < 1e-4

    one = build_student("light", head=1).eval()
    one.load_state_dict(fit_head(earlier.state_dict(), one))
    flat = torch.full((1, one.head.in_channels, 9, 9), 0.3)  # locally constant features
    with torch.no_grad():
        assert (one.head(flat) - earlier.head(flat))[:, :, 1:-1, 1:-1].abs().max() < 1e-5
        three = build_student("light").eval()
        three.load_state_dict(fit_head(one.state_dict(), three))
        assert (three(photos) - one(photos)).abs().max() < 1e-6
    with pytest.raises(TrainingError, match="--head-kernel must be 1 or 3"):
        train_student(ink_pairs, replace(cfg, head_kernel=5), _ctx(tmp_path / "x"))


def test_fine_tuning_can_start_from_an_installed_bundle(tmp_path, ink_pairs):
    """`--init-from models/STYLE`: each tier starts from the bundle's own tier (the shipped styles keep no
    training run), so the first step's student already draws what the bundle draws."""
    from tests.training.conftest import make_student_run
    from training.student.export import export_bundle
    from training.student.networks import load_student

    run, shipped = make_student_run(tmp_path / "light")
    export_bundle([run], tmp_path / "style", style_id="style", pairs=ink_pairs, size=64)
    cfg = config_from("tiny", steps=1, crop=32, batch=2, sample_every=100, gan_start=0)
    assert train_student(ink_pairs, cfg, _ctx(tmp_path / "tuned"), init_from=tmp_path / "style")["finished"]
    tuned, _ = load_student(tmp_path / "tuned")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (tuned(x) - shipped(x)).abs().max() < 0.05
    with pytest.raises(Exception, match="standard"):  # the bundle has no such tier
        train_student(ink_pairs, replace(cfg, tier="standard"), _ctx(tmp_path / "x"), init_from=tmp_path / "style")
