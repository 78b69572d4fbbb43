import numpy as np
import pytest
import torch

from training import metrics, pretrained
from training.errors import TrainingError
from training.images import to_tensor
from training.student.identity import IdentityLoss, SFaceTorch


def test_the_torch_rebuild_of_sface_matches_onnxruntime(astronaut_crop):
    aligned = pretrained.SFace.align(astronaut_crop, metrics.template_points5(256))
    reference = pretrained.sface().embed([aligned])[0]
    x = torch.from_numpy(aligned[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()
    ours = torch.nn.functional.normalize(SFaceTorch()(x), dim=1)[0].detach().numpy()
    assert float(reference @ ours) > 0.9999


def test_identity_loss_is_zero_for_the_same_face_and_passes_gradients(astronaut_crop):
    loss = IdentityLoss()
    photo = to_tensor(astronaut_crop[None], "bgr")
    assert float(loss(photo, photo)) == pytest.approx(0.0, abs=1e-5)
    other = photo.flip(2).clone().requires_grad_(True)  # upside down: not a recognisable face
    value = loss(photo, other)
    value.backward()
    assert float(value.detach()) > 0.5 and other.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def _ctx(root):
    from training.runs import AbortFlag, Progress, RunDir, StageContext

    return StageContext(RunDir.open(root, "student", {}), Progress("none"), AbortFlag())


def test_identity_loss_refuses_random_crops(tmp_path, ink_pairs):
    from training.student.losses import LossWeights
    from training.student.train import config_from, train_student

    cfg = config_from("tiny", weights=LossWeights(identity=0.5))
    with pytest.raises(TrainingError, match="identity loss needs whole aligned faces: use --crop 256"):
        train_student(ink_pairs, cfg, _ctx(tmp_path / "r"))


@pytest.mark.slow
def test_a_student_trains_with_the_identity_loss(tmp_path, ink_pairs):
    from training.student.losses import LossWeights
    from training.student.train import config_from, train_student

    ctx = _ctx(tmp_path / "r")
    ok = config_from("tiny", weights=LossWeights(identity=0.5), crop=256, batch=2, steps=2, gan_start=0)
    assert train_student(ink_pairs, ok, ctx)["finished"]
    stats = ctx.run.read_stats()
    assert stats and "identity" in stats[-1] and np.isfinite(stats[-1]["identity"])
