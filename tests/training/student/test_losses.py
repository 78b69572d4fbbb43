"""The detail loss: it asks for as much local detail as the target has, not for the same pixels."""

import cv2
import numpy as np
import torch

from engine.metrics import sharpness
from training.images import to_tensor
from training.student.losses import detail_energy, detail_loss


def test_detail_loss_punishes_blur_but_hardly_a_one_pixel_shift(astronaut_crop):
    target = to_tensor(astronaut_crop[None], "bgr")
    blurred = to_tensor(cv2.GaussianBlur(astronaut_crop, (0, 0), 1.0)[None], "bgr")
    shifted = torch.roll(target, 1, dims=-1)
    assert float(detail_loss(target, target)) == 0.0
    l1_blur, l1_shift = (blurred - target).abs().mean(), (shifted - target).abs().mean()
    assert l1_shift > 0.5 * l1_blur  # to L1, a shift is about as wrong as a blur
    assert detail_loss(blurred, target) > 0.3  # the blur lost a third of the detail or more
    assert detail_loss(shifted, target) < 0.5 * detail_loss(blurred, target)


def test_detail_energy_is_the_sharpness_metric_per_cell(astronaut_crop):
    x = to_tensor(astronaut_crop[None], "bgr")
    energy = detail_energy(x)
    assert energy.shape == (1, 1, 32, 32)
    # sharpness is mean |Laplacian| of grey 0..255; the energy is the same on [-1, 1] images, per 8×8 cell
    inner = float(energy[..., 1:-1, 1:-1].mean()) * 127.5
    grey = cv2.cvtColor(astronaut_crop, cv2.COLOR_BGR2GRAY)
    assert abs(inner - sharpness(grey[8:-8, 8:-8])) < 0.06 * sharpness(grey[8:-8, 8:-8])


def test_detail_loss_gradient_sharpens_a_blurred_edge():
    edge = np.zeros((32, 32, 3), np.uint8)
    edge[:, 16:] = 200
    target = to_tensor(edge[None], "bgr")
    blurred = to_tensor(cv2.GaussianBlur(edge, (0, 0), 2.0)[None], "bgr")
    x = blurred.clone().requires_grad_(True)
    for _ in range(20):
        (grad,) = torch.autograd.grad(detail_loss(x, target), x)
        x = (x - 0.02 * grad / (grad.abs().max() + 1e-12)).detach().requires_grad_(True)
    with torch.no_grad():
        assert detail_loss(x, target) < 0.7 * detail_loss(blurred, target)
        assert detail_energy(x).mean() > 1.3 * detail_energy(blurred).mean()
