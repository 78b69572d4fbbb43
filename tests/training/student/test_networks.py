import pytest
import torch
from torch import nn

from training.modules import count_params
from training.student.networks import TIER_BUDGET_GMACS, TIERS, InferenceStudent, build_student, count_macs


@pytest.mark.parametrize("tier", list(TIERS))
def test_each_tier_fits_its_compute_budget_and_maps_images_to_images(tier):
    net = build_student(tier)
    gmacs = count_macs(net, 256) / 1e9
    assert gmacs <= TIER_BUDGET_GMACS[tier]
    assert gmacs > 0.4 * TIER_BUDGET_GMACS[tier]  # a tier uses most of its budget
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = net.eval()(x)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_tiers_grow_in_cost_and_size():
    macs = [count_macs(build_student(t), 128) for t in TIERS]
    params = [count_params(build_student(t)) for t in TIERS]
    assert macs == sorted(macs) and params == sorted(params)


def test_mac_counter_counts_convolutions_exactly():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 4, 1))
    expected = 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 16 * 16 * 4 * 8
    assert count_macs(net, 32) == expected


def test_build_from_checkpoint_kwargs_matches_the_named_tier():
    from dataclasses import asdict

    a, b = build_student("standard"), build_student(**asdict(TIERS["standard"]))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


@pytest.mark.parametrize("tier", list(TIERS))
def test_the_inference_arrangement_computes_the_same_function(tier):
    torch.manual_seed(0)
    net = build_student(tier)
    for m in net.modules():  # trained-like BatchNorm statistics, so that folding them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    fast = InferenceStudent(net)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), atol=1e-5)
