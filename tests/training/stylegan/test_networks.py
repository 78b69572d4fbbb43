"""Networks and ops: shapes, exact CPU reproducibility, fused == non-fused modulation, resampling ops."""

import pytest
import torch

from training.stylegan import ops
from training.stylegan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, truncate

TINY_G = GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32)
TINY_D = DiscriminatorConfig(resolution=16, channel_base=256, channel_max=32)


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    G, D = Generator(TINY_G), Discriminator(TINY_D)
    assert G.num_ws == 2 * 3  # log2(16)·2 − 2
    img = G(torch.randn(4, 16))
    assert img.shape == (4, 3, 16, 16)
    assert D(img).shape == (4, 1)


def test_same_seed_same_weights_and_images_exactly():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        G = Generator(TINY_G).eval()
        outs.append(G(torch.randn(2, 16), noise_mode="random"))
    assert torch.equal(outs[0], outs[1])


def test_fused_and_unfused_modulated_conv_agree():
    torch.manual_seed(0)
    G = Generator(TINY_G)
    ws = G.mapping(torch.randn(3, 16))
    fused = G.synthesis(ws, noise_mode="const", fused=True)
    unfused = G.synthesis(ws, noise_mode="const", fused=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)


def test_noise_modes_and_truncation():
    torch.manual_seed(0)
    G = Generator(TINY_G).eval()
    for layer in G.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    ws = G.mapping(torch.randn(2, 16))
    const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    assert not torch.equal(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    G.mapping.w_avg.normal_()
    assert torch.equal(truncate(ws, G.mapping.w_avg, 0.0)[0, 0], G.mapping.w_avg)
    assert torch.equal(truncate(ws, G.mapping.w_avg, 1.0), ws)
    cut = truncate(ws, G.mapping.w_avg, 0.5, cutoff=2)
    assert torch.equal(cut[:, 2:], ws[:, 2:]) and not torch.equal(cut[:, :2], ws[:, :2])


def test_fir_resampling_preserves_constant_images():
    f = ops.setup_filter()
    x = torch.full([1, 2, 8, 8], 3.0)
    up, down = ops.upsample2d(x, f), ops.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # Interior pixels keep the DC value exactly (borders see zero padding).
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (1, 1)])
def test_conv2d_resample_shapes_and_double_backward(up, down):
    f = ops.setup_filter()
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(5, 4, 3, 3)
    y = ops.conv2d_resample(x, w, f=f, up=up, down=down, padding=1)
    assert y.shape == (2, 5, 8 * up // down, 8 * up // down)
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.square().sum().backward()  # second order works (R1 and path length need it)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_resolution_is_rejected():
    with pytest.raises(ValueError, match="power of two"):
        Generator(GeneratorConfig(resolution=48))
