"""Fusion: α=0/1 and the extreme swap levels reproduce a parent exactly; chaining; incompatible parents."""

import copy

import pytest
import torch

from training.errors import TrainingError
from training.stylegan.checkpoint import load_generator, save_generator
from training.stylegan.fusion import FusionSpec, fuse, parse_spec, write_fusion_grid
from training.stylegan.networks import Generator, GeneratorConfig

CFG = GeneratorConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=512, channel_max=32)


def _pair():
    torch.manual_seed(0)
    a = Generator(CFG).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():  # a "fine-tuned" child: every tensor moved
        for p in b.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        b.mapping.w_avg.normal_()
    return a, b


def _same(x, y):
    sx, sy = x.state_dict(), y.state_dict()
    return all(torch.equal(sx[k], sy[k]) for k in sx)


def _images(G):
    z = torch.randn([4, 16], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return G(z, noise_mode="const")


def test_alpha_zero_and_one_reproduce_the_parents_exactly():
    a, b = _pair()
    assert _same(fuse(a, b, FusionSpec.blend(0.0)), a)
    assert _same(fuse(a, b, FusionSpec.blend(1.0)), b)
    assert torch.equal(_images(fuse(a, b, FusionSpec.blend(0.0))), _images(a))
    assert torch.equal(_images(fuse(a, b, FusionSpec.blend(1.0))), _images(b))


def test_extreme_swap_levels_reproduce_one_parent():
    a, b = _pair()
    assert _same(fuse(a, b, FusionSpec.swap(32)), a)  # every level from A
    assert _same(fuse(a, b, FusionSpec.swap(0)), b)  # every level from B


def test_intermediate_swap_takes_coarse_layers_from_a_and_fine_from_b():
    a, b = _pair()
    child = fuse(a, b, FusionSpec.swap(8)).state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        if name.startswith(("synthesis.b4.", "synthesis.b8.", "mapping.")):
            assert torch.equal(child[name], sa[name]), name
        else:
            assert torch.equal(child[name], sb[name]), name
    half = fuse(a, b, parse_spec("4:0,8:0.5,mapping:1")).state_dict()
    w = "synthesis.b8.conv1.weight"
    torch.testing.assert_close(half[w], (sa[w] + sb[w]) / 2)
    assert torch.equal(half["mapping.fc0.weight"], sb["mapping.fc0.weight"])
    assert torch.equal(half["synthesis.b16.conv1.weight"], sb["synthesis.b16.conv1.weight"])  # default α = 1


def test_chaining_and_files(tmp_path):
    a, b = _pair()
    c = copy.deepcopy(b)
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(0.5)
    step1 = fuse(a, b, FusionSpec.swap(8))
    chained = fuse(step1, c, FusionSpec.blend(1.0))
    assert _same(chained, c)
    path = save_generator(step1, tmp_path / "fused.pt", {"fusion": "swap=8"})
    assert _same(load_generator(path), step1)
    grid = write_fusion_grid(a, b, tmp_path / "grid.png", n=3)
    assert grid.stat().st_size > 0


def test_incompatible_generators_and_bad_specs_are_rejected():
    a, _ = _pair()
    other = Generator(
        GeneratorConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=512, channel_max=16)
    )
    with pytest.raises(TrainingError, match="differ in shape"):
        fuse(a, other, FusionSpec.blend(0.5))
    with pytest.raises(TrainingError, match="not understood"):
        parse_spec("swap=big")
