import numpy as np

from engine.stability import measure_temporal
from engine.temporal import TemporalConfig, TemporalSmoother


def test_smoother_calms_still_pixels_and_passes_motion():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    smoother = TemporalSmoother(TemporalConfig(strength=0.7))
    raw, outs = [], []
    for _ in range(30):  # the input is still; the network output flickers (σ=6)
        noisy_out = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        raw.append(noisy_out.astype(float))
        outs.append(smoother(base, noisy_out).astype(float))
    assert np.std(np.diff(outs[10:], axis=0)) < 0.6 * np.std(np.diff(raw[10:], axis=0))
    # a real change of the input (eyes closing) must come through at once
    moved_in = base.copy()
    moved_in[:32] = 255 - moved_in[:32]
    moved_out = moved_in.copy()
    out = smoother(moved_in, moved_out)
    assert np.abs(out[:32].astype(int) - moved_out[:32].astype(int)).mean() < 6


def test_reset_forgets_the_previous_face():
    smoother = TemporalSmoother()
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    smoother(a, a)
    smoother.reset()
    assert np.array_equal(smoother(a, b), b)


def test_still_demo_flicker_and_jitter_meet_targets(fixture_bundle):
    on = measure_temporal(fixture_bundle, smoothing=True, frames=75, tier="standard")
    off = measure_temporal(fixture_bundle, smoothing=False, frames=75, tier="standard")
    assert on["flicker_amplification"] <= 0.5
    assert on["jitter_px"]["max_px"] <= 0.25
    assert on["flicker_amplification"] < off["flicker_amplification"]
    assert on["jitter_px"]["max_px"] < off["jitter_px"]["max_px"]
