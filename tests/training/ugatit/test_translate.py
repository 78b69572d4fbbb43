"""U-GAT-IT as a pair teacher: the ``ugatit`` → ``pairs --teacher ugatit:RUN`` CLI path, the pairs folder the
student reads."""

import json

import cv2
import numpy as np
import pytest
import torch

from engine.bundle import sha256_file
from training.cli import main
from training.errors import TrainingError
from training.images import to_tensor, to_uint8
from training.pairs import FolderPairs, TeacherPairs
from training.ugatit.translate import UgatitTeacher, load_translator


def _train_cli(faces, styles, run, steps, *extra):
    args = ["ugatit", "--faces", str(faces), "--styles", str(styles), "--run", str(run), "--preset", "tiny"]
    return main([*args, "--steps", str(steps), "--threads", "1", "--progress", "none", *extra])


@pytest.fixture(scope="module")
def trained(toy_domains, tmp_path_factory):
    faces, styles = toy_domains
    run = tmp_path_factory.mktemp("ugatit") / "run"
    assert _train_cli(faces, styles, run, 3) == 0
    return run


def test_teacher_translates_with_the_ema_generator_at_its_resolution(trained, toy_domains):
    faces, _ = toy_domains
    teacher = UgatitTeacher(trained)
    G, info = load_translator(trained)
    assert info["step"] == 3 and info["weights"] == "ema" and teacher.size == 32
    photo = cv2.imread(str(faces / "000.png"))  # 48² BGR
    native = cv2.resize(photo, (32, 32), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        expected = to_uint8(G(to_tensor(cv2.cvtColor(native, cv2.COLOR_BGR2RGB)[None], "rgb"))[0], "rgb")[0]
    out_native = teacher([native])[0]
    assert np.array_equal(out_native, cv2.cvtColor(expected, cv2.COLOR_RGB2BGR))
    batched, out_48 = teacher([native, photo])
    assert np.abs(batched.astype(int) - out_native).max() <= 1  # batching changes float rounding only
    assert out_48.shape == photo.shape and out_48.dtype == np.uint8  # resized back: pairs have equal sizes
    raw = UgatitTeacher(trained, weights="raw")([native])[0]
    assert not np.array_equal(raw, out_native)  # EMA and raw weights are different networks
    b2a = UgatitTeacher(trained, direction="B2A")([native])[0]
    assert not np.array_equal(b2a, out_native)


def test_pair_source_fits_the_student_protocol(trained, toy_domains):
    faces, _ = toy_domains
    source = TeacherPairs(faces, UgatitTeacher(trained), "ugatit")
    assert len(source) == 12
    pairs = source.pairs(source.names()[:3])
    assert [p.key for p in pairs] == ["000", "001", "002"]
    assert all(p.photo.shape == p.stylized.shape == (48, 48, 3) and p.split == "train" for p in pairs)


def test_pairs_stage_writes_a_folder_the_student_reads_and_resumes(trained, toy_domains, tmp_path):
    faces, styles = toy_domains
    out = tmp_path / "pairs"
    args = ["pairs", "--teacher", f"ugatit:{trained}", "--photos", str(faces), "--out", str(out)]
    assert main([*args, "--batch", "5", "--progress", "none"]) == 0
    pairs = FolderPairs(out)  # the student stage's reader
    assert len(pairs) == 12
    teacher = UgatitTeacher(trained)
    for key in ("000", "011"):
        pair = pairs.pair(key)
        photo = cv2.imread(str(faces / f"{key}.png"))
        assert np.array_equal(pair.photo, photo)
        # batch 5 against batch 1: CPU kernels may round differently (one grey level, seen on AMX cores)
        assert np.abs(pair.stylized.astype(int) - teacher([photo])[0]).max() <= 1
    manifest = json.loads((out / "teacher.json").read_text())["teacher"]
    model_file = trained / "checkpoints" / "model.json"
    assert manifest["sha256"] == sha256_file(model_file) and manifest["step"] == 3
    assert manifest["direction"] == "A2B" and manifest["weights"] == "ema"
    assert json.loads((out / "pairs.json").read_text())["source"] == f"ugatit-{manifest['sha256'][:12]}"
    # Rerun: nothing is rewritten; one missing pair is redone.
    stamp = (out / "stylized" / "003.png").stat().st_mtime_ns
    (out / "stylized" / "007.png").unlink()
    assert main([*args, "--progress", "none"]) == 0
    assert (out / "stylized" / "003.png").stat().st_mtime_ns == stamp
    assert len(FolderPairs(out)) == 12
    # Pairs of another checkpoint never mix into this folder.
    other = tmp_path / "other"
    assert _train_cli(faces, styles, other, 1) == 0
    with pytest.raises(TrainingError, match="pass --resume"):
        _train_cli(faces, styles, other, 2)
    assert _train_cli(faces, styles, other, 2, "--resume") == 0
    assert load_translator(other)[1]["step"] == 2
    with pytest.raises(TrainingError, match="holds pairs made by teacher 'ugatit' with other settings"):
        main(["pairs", "--teacher", f"ugatit:{other}", "--photos", str(faces), "--out", str(out)])


def test_unusable_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(TrainingError, match="no such checkpoint"):
        load_translator(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="junk.pt: not a readable checkpoint"):
        load_translator(tmp_path / "junk.pt")
    torch.save({"arch": "stylegan2", "init_kwargs": {}, "params": {}}, tmp_path / "sg.pt")
    with pytest.raises(TrainingError, match="a 'stylegan2' checkpoint, not a U-GAT-IT one"):
        load_translator(tmp_path / "sg.pt")
    torch.save({"arch": "ugatit", "init_kwargs": {"generator": {"img_size": 32, "ngf": 8}}, "params": {},
                "params_ema": {"genA2B": {"down.0.weight": torch.zeros(1)}}}, tmp_path / "bad.pt")  # fmt: skip
    with pytest.raises(TrainingError, match=r"bad.pt \[genA2B ema\]: incompatible .*missing"):
        load_translator(tmp_path / "bad.pt")
    with pytest.raises(TrainingError, match="without a usable genB2A"):
        load_translator(tmp_path / "bad.pt", direction="B2A")
