"""U-GAT-IT networks: shapes, CAM, AdaLIN / LIN, ρ clipping, spectral norm, configuration checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.errors import TrainingError
from training.modules import count_params
from training.ugatit.networks import (
    LIN,
    AdaLIN,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    clip_rho,
)


@pytest.mark.parametrize("light", [False, True])
def test_generator_shapes_and_range(light):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(img_size=32, ngf=8, n_blocks=2, light=light))
    out, cam_logit, heatmap = G(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert out.shape == (3, 3, 32, 32) and cam_logit.shape == (3, 2) and heatmap.shape == (3, 1, 8, 8)
    assert out.abs().max() <= 1.0 and torch.isfinite(out).all()
    assert (heatmap >= 0).all()  # a sum of ReLU features


def test_light_generator_is_smaller_and_size_agnostic():
    full = Generator(GeneratorConfig(img_size=64, ngf=8, n_blocks=2, light=False))
    light = Generator(GeneratorConfig(img_size=64, ngf=8, n_blocks=2, light=True))
    # The full MLP reads the flattened (S/4)² feature map; the light one reads pooled features.
    assert count_params(full) - count_params(light) == 32 * (16 * 16 - 1) * 32
    assert light(torch.zeros(1, 3, 48, 48))[0].shape == (1, 3, 48, 48)
    with pytest.raises(TrainingError, match="takes 64² images"):
        full(torch.zeros(1, 3, 48, 48))


@pytest.mark.parametrize(("n_layers", "patch"), [(7, 2), (5, 14)])
def test_discriminator_shapes_at_128(n_layers, patch):
    D = Discriminator(DiscriminatorConfig(img_size=128, ndf=4, n_layers=n_layers))
    logits, cam_logit, heatmap = D(torch.zeros(2, 3, 128, 128))
    assert logits.shape == (2, 1, patch, patch) and cam_logit.shape == (2, 2)
    assert heatmap.shape == (2, 1, patch + 1, patch + 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiscriminatorConfig(img_size=64, n_layers=7),  # 64 / 32 = 2 pixels left: too small
        lambda: DiscriminatorConfig(img_size=100, n_layers=5),  # not divisible by 8
        lambda: GeneratorConfig(img_size=30),
    ],
)
def test_impossible_shapes_are_refused(make):
    with pytest.raises(TrainingError):
        make()


def test_generator_cam_logits_and_heatmap_come_from_the_pooled_features():
    torch.manual_seed(1)
    G = Generator(GeneratorConfig(img_size=32, ngf=8, n_blocks=1, light=True))
    features = {}
    G.down.register_forward_hook(lambda _m, _i, out: features.setdefault("x", out))
    _, cam_logit, heatmap = G(torch.randn(2, 3, 32, 32))
    x = features["x"]
    w_gap, w_gmp = G.gap_fc.weight, G.gmp_fc.weight
    assert torch.allclose(cam_logit[:, 0], x.mean(dim=(2, 3)) @ w_gap[0], atol=1e-5)
    assert torch.allclose(cam_logit[:, 1], x.amax(dim=(2, 3)) @ w_gmp[0], atol=1e-5)
    attended = torch.cat([x * w_gap[0, :, None, None], x * w_gmp[0, :, None, None]], dim=1)
    assert torch.allclose(heatmap, F.relu(G.conv1x1(attended)).sum(1, keepdim=True), atol=1e-5)


def test_adalin_interpolates_instance_and_layer_norm_then_applies_gamma_beta():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 8) * 3 + 1
    gamma, beta = torch.rand(2, 4) + 0.5, torch.randn(2, 4)
    norm = AdaLIN(4, eps=1e-9)
    n = 8 * 8
    unbiased = math.sqrt((n - 1) / n)  # the reference normalises by the unbiased variance
    expected_in = F.instance_norm(x, eps=1e-9) * unbiased
    expected_ln = F.layer_norm(x, x.shape[1:], eps=1e-9) * math.sqrt((4 * n - 1) / (4 * n))
    scale = (gamma[:, :, None, None], beta[:, :, None, None])
    with torch.no_grad():
        norm.rho.fill_(1.0)
        assert torch.allclose(norm(x, gamma, beta), expected_in * scale[0] + scale[1], atol=1e-4)
        norm.rho.fill_(0.0)
        assert torch.allclose(norm(x, gamma, beta), expected_ln * scale[0] + scale[1], atol=1e-4)
        norm.rho.copy_(torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 4, 1, 1))
        mixed = norm(x, torch.ones(2, 4), torch.zeros(2, 4))
        rho = norm.rho
        assert torch.allclose(mixed, rho * expected_in + (1 - rho) * expected_ln, atol=1e-4)


def test_rho_starts_as_in_the_paper_and_clipping_keeps_it_in_unit_interval():
    G = Generator(GeneratorConfig(img_size=32, ngf=8, n_blocks=2, light=True))
    adalins = [m for m in G.modules() if isinstance(m, AdaLIN)]
    lins = [m for m in G.modules() if isinstance(m, LIN)]
    assert len(adalins) == 4 and len(lins) == 2  # two per residual block; one per up-sampling step
    assert all(torch.all(m.rho == 0.9) for m in adalins) and all(torch.all(m.rho == 0) for m in lins)
    with torch.no_grad():
        adalins[0].rho.fill_(1.7)
        lins[0].rho.fill_(-0.3)
        adalins[1].rho.copy_(torch.linspace(-1, 2, adalins[1].rho.numel()).view_as(adalins[1].rho))
    clip_rho(G)
    assert torch.all(adalins[0].rho == 1) and torch.all(lins[0].rho == 0)
    assert adalins[1].rho.min() == 0 and adalins[1].rho.max() == 1
    assert 0 < adalins[1].rho.flatten()[adalins[1].rho.numel() // 2] < 1  # values inside are untouched


def test_discriminator_weights_are_spectrally_normalised():
    torch.manual_seed(3)
    D = Discriminator(DiscriminatorConfig(img_size=32, ndf=8, n_layers=4))
    with torch.no_grad():
        for _ in range(30):  # one power iteration per forward (training mode)
            D(torch.randn(1, 3, 32, 32))
    normalised = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(normalised) == 1 + 1 + 1 + 1 + 2  # first conv, 1 middle, last stride-1 conv, head, 2 CAM units
    for m in normalised:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        raw = torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1) < 0.05 and abs(float(raw) - 1) > 0.05
