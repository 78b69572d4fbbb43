"""Pretrained teachers: teacher.json validation, conventions applied as declared, bad teachers, blend targets."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.training.conftest import write_onnx_teacher
from training.errors import TeacherError
from training.pairs import FolderPairs
from training.teachers.masks import BlendTargets, fill_holes, keep_skin_tone, skin_mean_lab
from training.teachers.network import load_teacher_spec, open_teacher

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
SHARED_TEACHERS = REPO.parent / "shared" / "teachers"


def _expected(crop: np.ndarray) -> np.ndarray:
    """What the default toy teacher does to a BGR crop: red kept, green and blue inverted."""
    out = 255 - crop.astype(np.int16)
    out[:, :, 2] = crop[:, :, 2]
    return out


@pytest.mark.parametrize(
    "layout,dtype,color", [("NHWC", "float32", "RGB"), ("NCHW", "float16", "RGB"), ("NHWC", "float32", "BGR")]
)
def test_conventions_are_applied_exactly_as_declared(tmp_path, layout, dtype, color):
    write_onnx_teacher(tmp_path / "t", layout=layout, dtype=dtype, color=color)
    teacher = open_teacher(tmp_path / "t", threads=1)
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    out = teacher([crop])[0]
    assert out.shape == crop.shape and out.dtype == np.uint8
    expected = _expected(crop)
    if color == "BGR":  # the network's channel 0 is then blue: blue kept, green and red inverted
        expected = 255 - crop.astype(np.int16)
        expected[:, :, 0] = crop[:, :, 0]
    tolerance = 2 if dtype == "float16" else 1
    assert np.abs(out.astype(np.int16) - expected).max() <= tolerance


def test_crops_are_resized_to_the_preferred_size_and_back(tmp_path):
    write_onnx_teacher(tmp_path / "t", size=96, multiple=32)
    teacher = open_teacher(tmp_path / "t", threads=1)
    assert teacher.model_side() == (96, 96)
    flat = np.full((256, 256, 3), (30, 60, 200), np.uint8)
    out = teacher([flat])[0]
    assert out.shape == (256, 256, 3)
    assert np.abs(out.astype(int) - _expected(flat)).max() <= 1


def _edit(folder, **changes):
    spec = json.loads((folder / "teacher.json").read_text())
    for key, value in changes.items():
        target = spec
        *path, last = key.split("__")
        for p in path:
            target = target[p]
        target[last] = value
    (folder / "teacher.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"schema": 2}, "unknown schema 2"),
        ({"kind": "painter"}, "field 'kind' is 'painter'"),
        ({"runtime": "tensorrt"}, "field 'runtime' is 'tensorrt'"),
        ({"input__layout": "HWC"}, "field 'input.layout' is 'HWC'"),
        ({"input__range": [1, -1]}, "field 'input.range' must have low < high"),
        ({"input__size": [64]}, "field 'input.size' must be"),
        ({"input__multiple": 7}, "field 'input.multiple' = 7"),
        ({"output__color": "CMYK"}, "field 'output.color' is 'CMYK'"),
        ({"sha256": "0" * 64}, "sha256 mismatch"),
        ({"file": "../elsewhere.onnx"}, "must name a file beside"),
        ({"input__normalize": {"mean": [0, 0, 0], "std": ["a", "b", "c"]}}, "field 'input.normalize' needs 3"),
    ],
)
def test_bad_descriptions_name_the_file_and_the_field(tmp_path, change, message):
    folder = write_onnx_teacher(tmp_path / "t")
    _edit(folder, **change)
    with pytest.raises(TeacherError, match=message) as info:
        load_teacher_spec(folder)
    assert "teacher.json" in str(info.value)


def test_missing_corrupt_and_undeclared_files_are_refused(tmp_path):
    with pytest.raises(TeacherError, match="no teacher description"):
        load_teacher_spec(tmp_path)
    folder = write_onnx_teacher(tmp_path / "t")
    (folder / "teacher.json").write_text("{not json")
    with pytest.raises(TeacherError, match="not a readable JSON"):
        load_teacher_spec(folder)
    folder = write_onnx_teacher(tmp_path / "u")
    (folder / "teacher.onnx").unlink()
    with pytest.raises(TeacherError, match="model file teacher.onnx is missing"):
        load_teacher_spec(folder)
    folder = write_onnx_teacher(tmp_path / "v")
    (folder / "teacher.onnx").write_bytes(b"garbage")
    import hashlib

    _edit(folder, sha256=hashlib.sha256(b"garbage").hexdigest())  # a matching sha256, still no model
    with pytest.raises(TeacherError, match="onnxruntime cannot load it"):
        open_teacher(folder)


def test_wrong_dtype_wrong_size_and_nan_outputs_are_refused(tmp_path):
    folder = write_onnx_teacher(tmp_path / "fp16", dtype="float16")
    _edit(folder, input__dtype="float32")
    with pytest.raises(TeacherError, match="input 'x' is tensor\\(float16\\), teacher.json says float32"):
        open_teacher(folder)
    crop = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(TeacherError, match="teacher 'toy': output shape \\(63, 64, 3\\)"):
        open_teacher(write_onnx_teacher(tmp_path / "shrink", fault="shrink"))([crop])
    with pytest.raises(TeacherError, match="teacher 'toy': output holds NaN"):
        open_teacher(write_onnx_teacher(tmp_path / "nan", fault="nan"))([crop])


def _fixed_input(folder, dims):
    """Give the teacher's model the fixed input ``dims`` (its sha256 updated)."""
    import hashlib

    import onnx

    model = onnx.load(str(folder / "teacher.onnx"))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
        dim.dim_value = value
    onnx.save(model, str(folder / "teacher.onnx"))
    _edit(folder, sha256=hashlib.sha256((folder / "teacher.onnx").read_bytes()).hexdigest())
    return folder


def test_a_declared_layout_or_size_that_the_model_does_not_take_is_named(tmp_path):
    folder = _fixed_input(write_onnx_teacher(tmp_path / "size", layout="NHWC", size=64), (1, 64, 64, 3))
    _edit(folder, input__size=[32, 32], input__multiple=1)
    with pytest.raises(TeacherError, match=r"its input is \[1, 64, 64, 3\], teacher.json's input.size is \[32, 32\]"):
        open_teacher(folder)
    folder = _fixed_input(write_onnx_teacher(tmp_path / "layout", layout="NHWC", size=64), (1, 64, 64, 3))
    _edit(folder, input__layout="NCHW")
    with pytest.raises(TeacherError, match="no 3 colour channels where teacher.json's input.layout NCHW"):
        open_teacher(folder)


def test_a_tflite_teacher_checks_the_names_teacher_json_gives(tmp_path):
    shared = SHARED_TEACHERS / "flat"
    if not (shared / "teacher.json").is_file():
        pytest.skip("../shared/teachers/flat is not here")
    pytest.importorskip("ai_edge_litert.interpreter")
    folder = tmp_path / "flat"
    shutil.copytree(shared, folder)
    _edit(folder, output__name="nonexistent")
    with pytest.raises(TeacherError, match="names input 'input_photo' and output 'nonexistent'"):
        open_teacher(folder)


def test_a_tflite_teacher_without_an_interpreter_says_so(tmp_path, monkeypatch):
    folder = write_onnx_teacher(tmp_path / "t")
    _edit(folder, runtime="tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if the package were absent
    with pytest.raises(TeacherError, match="TFLite model and no TFLite interpreter is installed"):
        open_teacher(folder)


def test_pairs_stage_refuses_a_bad_teacher_before_writing_anything(tmp_path, astronaut_crop):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut_crop)
    teacher = write_onnx_teacher(tmp_path / "nan", fault="nan")
    out = tmp_path / "pairs"
    cmd = [sys.executable, "main.py", "train", "pairs", "--teacher", str(teacher), "--photos", str(photos)]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "teacher 'toy': output holds NaN" in proc.stderr
    assert not out.exists()  # no half-written pairs folder


def test_pairs_from_a_teacher_carry_alpha_and_the_teacher_record(tmp_path, astronaut_crop):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut_crop)
    cv2.imwrite(str(photos / "b.png"), astronaut_crop[:, ::-1])
    teacher = write_onnx_teacher(tmp_path / "t")
    out = tmp_path / "pairs"
    cmd = [sys.executable, "main.py", "train", "pairs", "--teacher", str(teacher), "--photos", str(photos)]
    proc = subprocess.run([*cmd, "--out", str(out), "--size", "128"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = FolderPairs(out)
    pair = pairs.pair("a")
    assert pairs.has_alpha and pair.photo.shape == (128, 128, 3) and pair.alpha.shape == (128, 128)
    assert pair.alpha[64, 64] > 200 and pair.alpha[0, 0] == 0  # the face is covered, the crop's edge is not
    record = json.loads((out / "teacher.json").read_text())
    assert record["teacher"]["id"] == "toy" and record["teacher"]["commercial_use"] is False
    assert record["skin_tone"] == "teacher"  # no skin model given: nothing to keep it with
    other = write_onnx_teacher(tmp_path / "other", gains=(1.0, 1.0, -1.0))
    proc = subprocess.run(
        [*cmd[:5], str(other), *cmd[6:], "--out", str(out), "--size", "128"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "holds pairs made by teacher 'toy' with other settings" in proc.stderr


def test_blend_target_without_mask_models_covers_the_face_and_fades_at_the_edge(astronaut_crop):
    targets = BlendTargets({})
    try:
        alpha, skin = targets(astronaut_crop)
    finally:
        targets.close()
    assert skin is None and alpha.dtype == np.uint8
    assert alpha[128, 128] == 255 and alpha[:4].max() == 0 and alpha[:, -4:].max() == 0


def test_fill_holes_closes_what_the_border_cannot_reach():
    ring = np.zeros((40, 40), np.float32)
    cv2.circle(ring, (20, 20), 12, 1.0, 3)
    filled = fill_holes(ring)
    assert filled[20, 20] == 1.0 and filled[0, 0] == 0.0


def test_keep_skin_tone_restores_lightness_and_keeps_the_shading():
    photo = np.full((64, 64, 3), (60, 80, 110), np.uint8)  # dark skin
    stylized = np.full((64, 64, 3), (180, 200, 230), np.uint8)  # the teacher lightened it
    stylized[:, :32] -= 30  # its own shading: the left half darker
    skin = np.ones((64, 64), np.float32)
    kept = keep_skin_tone(photo, stylized, skin, lambda image: skin)
    assert abs(skin_mean_lab(kept, skin)[0] - skin_mean_lab(photo, skin)[0]) < 1.5

    def shade(image):
        lightness = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0].astype(float)
        return lightness[:, 32:].mean() - lightness[:, :32].mean()

    assert shade(kept) == pytest.approx(shade(stylized), abs=3)


def test_keep_skin_tone_gives_back_the_photos_hue_too():
    """A pale, nearly grey teacher skin darkened to the photo's lightness alone turns grey-brown: the
    photo's redness (a*) and yellowness (b*) come back as well."""
    photo = np.full((64, 64, 3), (70, 95, 160), np.uint8)  # warm, reddish skin
    stylized = np.full((64, 64, 3), (205, 210, 220), np.uint8)  # porcelain: light, little colour
    skin = np.ones((64, 64), np.float32)
    kept = skin_mean_lab(keep_skin_tone(photo, stylized, skin, lambda image: skin), skin)
    assert np.abs(kept - skin_mean_lab(photo, skin)).max() < 1.5


def test_keep_skin_tone_measures_again_until_the_skin_found_on_the_result_matches():
    """The skin found on the treated image is not the skin the shift was weighted by (here: a mask that
    shrinks as the skin darkens, as a model's confidence might): one pass falls short, three get there."""
    photo = np.full((64, 64, 3), (60, 80, 110), np.uint8)
    stylized = np.full((64, 64, 3), (180, 200, 230), np.uint8)
    photo_skin = np.ones((64, 64), np.float32)

    def skin_of(image):  # soft edges: the blurred weights move the mean only part of the way
        lightness = float(cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0].mean()) / 255
        mask = np.zeros((64, 64), np.float32)
        half = int(10 + 14 * lightness)
        mask[32 - half : 32 + half, 32 - half : 32 + half] = 1.0
        return cv2.GaussianBlur(mask, (0, 0), 4.0)

    def error(image):
        return abs(skin_mean_lab(image, skin_of(image))[0] - skin_mean_lab(photo, photo_skin)[0])

    once = keep_skin_tone(photo, stylized, photo_skin, skin_of, passes=1)
    thrice = keep_skin_tone(photo, stylized, photo_skin, skin_of)
    assert error(thrice) < 1.0 < error(once)


@pytest.mark.skipif(not SHARED_TEACHERS.is_dir(), reason="../shared/teachers is not present")
@pytest.mark.parametrize("teacher", ["cute", "flat"])
def test_shared_teachers_load_and_stylize_an_aligned_face(teacher, astronaut_crop):
    model = open_teacher(SHARED_TEACHERS / teacher, threads=2)
    out = model([astronaut_crop])[0]
    assert out.shape == astronaut_crop.shape
    diff = np.abs(out.astype(int) - astronaut_crop).mean()
    assert 3 < diff < 80  # stylized, not a copy and not noise
    if teacher == "flat":  # BGR in and out: the skin stays warm (red above blue), not pink-green
        skin = out[150:170, 110:150].reshape(-1, 3).mean(0)
        assert skin[2] > skin[0]


def test_pairs_from_a_folder_without_photos_start_no_pairs_folder(tmp_path):
    from training.errors import DatasetError
    from training.pairs import PairsConfig, make_pairs
    from training.runs import AbortFlag, Progress

    (tmp_path / "photos").mkdir()
    out = tmp_path / "pairs"
    with pytest.raises(DatasetError, match="no photos"):
        make_pairs(
            str(write_onnx_teacher(tmp_path / "t")), tmp_path / "photos", out, PairsConfig(alpha=False),
            Progress("none"), AbortFlag(),
        )  # fmt: skip
    assert not out.exists()


def test_a_mask_model_that_cannot_run_starts_no_pairs_folder(tmp_path, astronaut_crop):
    if not (SHARED_TEACHERS / "masks" / "hair.json").is_file():
        pytest.skip("../shared/teachers/masks is not here")
    pytest.importorskip("ai_edge_litert.interpreter")
    from training.pairs import PairsConfig, make_pairs
    from training.runs import AbortFlag, Progress

    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("hair.json", "hair_segmentation.tflite"):
        shutil.copy(SHARED_TEACHERS / "masks" / name, masks / name)
    spec = json.loads((masks / "hair.json").read_text())
    spec["input"].update(size=[256, 256], multiple=256)  # the model takes 512²
    (masks / "hair.json").write_text(json.dumps(spec))
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut_crop)
    out = tmp_path / "pairs"
    with pytest.raises(TeacherError, match="takes"):
        make_pairs(
            str(write_onnx_teacher(tmp_path / "t")), photos, out, PairsConfig(size=256, skin_tone="teacher"),
            Progress("none"), AbortFlag(), masks,
        )  # fmt: skip
    assert not out.exists()
