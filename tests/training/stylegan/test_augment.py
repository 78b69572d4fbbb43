"""ADA: identity at p=0, every transform reachable at p=1, differentiable, and the r_t controller."""

import torch

from training.stylegan.augment import AdaController, AugmentConfig, AugmentPipe


def _images():
    torch.manual_seed(0)
    return torch.rand(8, 3, 16, 16) * 2 - 1


def test_p_zero_is_exactly_the_identity():
    x = _images()
    assert torch.equal(AugmentPipe()(x), x)


def test_p_one_transforms_every_image_and_passes_gradients():
    x = _images().requires_grad_(True)
    pipe = AugmentPipe()
    pipe.p = 1.0
    y = pipe(x)
    assert y.shape == x.shape
    assert all(not torch.allclose(y[i], x[i]) for i in range(len(x)))
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_geometric_only_integer_translation_moves_pixels_exactly():
    cfg = AugmentConfig(
        **{
            k: 0.0
            for k in (
                "xflip",
                "rotate90",
                "scale",
                "rotate",
                "aniso",
                "brightness",
                "contrast",
                "lumaflip",
                "hue",
                "saturation",
            )
        }
    )
    pipe = AugmentPipe(cfg)
    pipe.p = 1.0
    x = _images()
    torch.manual_seed(1)
    y = pipe(x)
    # Each image is its own copy shifted by whole pixels (up to 1/8 of 16 = 2): find that shift.
    for i in range(len(x)):
        matches = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.allclose(y[i, :, 2:-2, 2:-2], torch.roll(x[i], (dy, dx), (1, 2))[:, 2:-2, 2:-2], atol=1e-5)
        ]
        assert len(matches) == 1


def test_random_draws_do_not_depend_on_p():
    pipe = AugmentPipe()
    x = _images()
    torch.manual_seed(5)
    pipe.p = 0.3
    pipe(x)
    after_low = torch.rand(1)
    torch.manual_seed(5)
    pipe.p = 0.9
    pipe(x)
    assert torch.equal(after_low, torch.rand(1))


def test_controller_follows_the_overfitting_heuristic():
    ada = AdaController(target=0.6, interval=4, speed_kimg=1.0)
    ada.accumulate(torch.ones(8))  # D sure of every real: r_t = 1 > 0.6 → more augmentation
    ada.adjust(batch_size=8)
    assert ada.r_t == 1.0 and ada.p > 0
    p = ada.p
    ada.accumulate(-torch.ones(8))  # r_t = −1 < 0.6 → less
    ada.adjust(batch_size=8)
    assert ada.p < p
    for _ in range(100):
        ada.accumulate(-torch.ones(8))
        ada.adjust(batch_size=8)
    assert ada.p == 0.0
    state = ada.state_dict()
    other = AdaController()
    other.load_state_dict(state)
    assert other.state_dict() == state
