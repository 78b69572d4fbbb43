import cv2
import numpy as np
import torch

from training.images import to_tensor, to_uint8
from training.student.augment import AugmentConfig, augment_batch, colour_jitter, degrade, gaussian_blur, jpeg


def _batch(astronaut_crop, n=4):
    return to_tensor(np.stack([cv2.resize(astronaut_crop, (64, 64))] * n), "bgr")


def test_paired_geometry_and_colour_are_identical_for_photo_and_targets(astronaut_crop):
    x = _batch(astronaut_crop)
    torch.manual_seed(0)
    photo, (t1, t2), _ = augment_batch(x.clone(), [x.clone(), x.clone()], AugmentConfig(blur_p=0, noise_p=0, jpeg_p=0))
    assert torch.equal(photo, t1) and torch.equal(t1, t2)
    assert not torch.equal(t1, x)  # something did change
    assert not torch.equal(t1[0], t1[1])  # per-sample parameters


def test_targets_keep_every_pixel_only_mirrored(astronaut_crop):
    """No resampling reaches the targets: each comes back as it was or mirrored, to float rounding (a
    resampled target teaches the student to blur)."""
    x = _batch(astronaut_crop, 8)
    torch.manual_seed(0)
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0)
    _, (target,), (mask,) = augment_batch(x.clone(), [x.clone()], cfg, [x[:, :1].clone()])
    same = lambda a, b: torch.allclose(a, b, atol=1e-5)  # noqa: E731
    mirrored = [same(t, x[i].flip(-1)) for i, t in enumerate(target)]
    assert all(same(t, x[i]) or mirrored[i] for i, t in enumerate(target))
    assert 0 < sum(mirrored) < len(mirrored)  # mirrored at random, per sample
    assert all(torch.equal(m, x[i, :1].flip(-1) if mirrored[i] else x[i, :1]) for i, m in enumerate(mask))


def test_degradations_touch_the_photo_only(astronaut_crop):
    x = _batch(astronaut_crop)
    torch.manual_seed(1)
    cfg = AugmentConfig(flip=0, brightness=0, contrast=0, saturation=0)
    cfg = AugmentConfig(**{**cfg.__dict__, "blur_p": 1.0, "noise_p": 1.0, "jpeg_p": 1.0})
    photo, (target,), _ = augment_batch(x.clone(), [x.clone()], cfg)
    assert torch.allclose(target, x, atol=1e-5)
    assert (photo - x).abs().mean() > 0.01


def test_jpeg_simulation_resembles_a_real_encoder(astronaut_crop):
    img = astronaut_crop[64:192, 64:192]
    _, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 20])
    real = cv2.imdecode(enc, cv2.IMREAD_COLOR).astype(float)
    sim = to_uint8(jpeg(to_tensor(img[None], "bgr"), torch.tensor([20.0])), "bgr")[0].astype(float)
    real_loss, sim_loss = np.abs(img - real).mean(), np.abs(img - sim).mean()
    assert np.abs(sim - real).mean() < 0.6 * real_loss  # artefacts land where the encoder puts them
    assert 0.75 * real_loss < sim_loss < 1.25 * real_loss  # and as strong
    same = jpeg(to_tensor(img[None], "bgr"), torch.tensor([100.0]))
    assert (same - to_tensor(img[None], "bgr")).abs().mean() < 0.01


def test_blur_and_jitter_behave(astronaut_crop):
    x = _batch(astronaut_crop, 2)
    blurred = gaussian_blur(x, torch.tensor([0.5, 2.0]))
    from engine.metrics import sharpness

    s = [sharpness(im) for im in to_uint8(blurred, "bgr")]
    assert s[1] < s[0] < sharpness(to_uint8(x, "bgr")[0])
    torch.manual_seed(0)
    a, b = colour_jitter([x, x.clone()], AugmentConfig())
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    torch.manual_seed(0)
    assert torch.equal(degrade(x, AugmentConfig()), (torch.manual_seed(0), degrade(x, AugmentConfig()))[1])
