import math

import cv2
import numpy as np

from engine.align import Similarity
from engine.blend import ColorMatcher, SkinToneGuard, face_skin_region, feather_mask, mean_lightness, paste_back


def test_feather_mask_is_one_inside_and_zero_at_every_crop_edge():
    mask = feather_mask(256, 0.1)
    assert mask[128, 128] > 0.99
    edges = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert edges.max() < 0.01
    assert not mask.flags.writeable


def test_paste_back_matches_a_float_composite_of_the_warped_crop_and_mask():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = feather_mask(256, 0.1)
    sim = Similarity(640.0, 380.0, math.log(600.0), 0.3)
    to_image = sim.to_image_matrix(256)
    colour = cv2.warpAffine(crop, to_image, (1280, 720), flags=cv2.INTER_LINEAR).astype(np.float32)
    weight = 0.7 * cv2.warpAffine(mask, to_image, (1280, 720), flags=cv2.INTER_LINEAR)[..., None]
    expected = colour * weight + frame * (1 - weight)
    out = frame.copy()
    paste_back(out, crop, sim, mask, 0.7)
    error = np.abs(out - expected)
    assert np.percentile(error, 99) <= 2.0
    # premultiplied interpolation differs from this straight-alpha reference where both colour and
    # alpha change between neighbouring pixels (random noise here: the worst case)
    assert error.max() <= 8.0


def test_paste_back_blends_by_mask_and_alpha():
    frame = np.zeros((400, 400, 3), np.uint8)
    crop = np.full((256, 256, 3), 200, np.uint8)
    sim = Similarity(200.0, 200.0, math.log(300.0), 0.0)
    paste_back(frame, crop, sim, feather_mask(256, 0.1), 1.0)
    assert frame[200, 200].tolist() == [200, 200, 200]  # centre: full style
    assert frame[5, 5].tolist() == [0, 0, 0]  # outside the crop: untouched
    half = np.zeros_like(frame)
    paste_back(half, crop, sim, feather_mask(256, 0.1), 0.5)
    assert abs(int(half[200, 200, 0]) - 100) <= 1


def test_color_matcher_moves_toward_the_input_statistics_smoothly():
    mask = feather_mask(64, 0.1)
    source = np.full((64, 64, 3), 100, np.uint8)
    stylized = np.full((64, 64, 3), 180, np.uint8)
    matcher = ColorMatcher(smoothing=0.0)
    out = matcher(source, stylized, mask, strength=1.0)
    assert abs(int(out[32, 32, 0]) - 100) <= 2
    assert np.array_equal(ColorMatcher()(source, stylized, mask, strength=0.0), stylized)


def _face_like(lightness: int) -> np.ndarray:
    """A grey-brown face-sized crop whose Lab lightness is ``lightness`` (0..255), with dark eye blobs."""
    lab = np.full((256, 256, 3), (lightness, 140, 150), np.uint8)
    crop = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    cv2.circle(crop, (97, 124), 12, (20, 20, 20), -1)
    cv2.circle(crop, (159, 124), 12, (20, 20, 20), -1)
    return crop


def test_face_skin_region_covers_the_face_oval_but_not_eyes_or_mouth():
    region = face_skin_region(256, "ffhq")
    assert region[150, 128] == 255 and region[160, 90] == 255  # nose, cheek
    assert region[124, 97] == 0 and region[124, 159] == 0 and region[188, 128] == 0  # eyes, mouth
    assert region[10, 128] == 0 and region[150, 10] == 0  # hair, background
    assert not region.flags.writeable


def test_skin_tone_guard_takes_off_only_the_lightening_beyond_its_limit():
    photo, region = _face_like(90), face_skin_region(256, "ffhq")
    lightened = _face_like(90 + round(12 * 2.55))  # the style lightened the skin by 12 L*
    alpha = np.full((256, 256, 1), 200, np.uint8)
    out = SkinToneGuard(smoothing=0.0)(photo, np.dstack([lightened, alpha]), region, limit=4.0)
    shift = mean_lightness(out[:, :, :3].copy(), region) - mean_lightness(photo, region)
    assert 3.0 <= shift <= 5.0  # brought back to the limit, not to the photo
    assert np.array_equal(out[:, :, 3:], alpha)
    darkened = _face_like(90 - round(10 * 2.55))
    shift = mean_lightness(SkinToneGuard(smoothing=0.0)(photo, darkened, region, 4.0), region) - 90 * 100 / 255
    assert -5.0 <= shift <= -3.0  # symmetric: a style may not darken skin beyond the limit either


def test_skin_tone_guard_leaves_a_style_within_its_limit_or_switched_off_untouched():
    photo, region = _face_like(90), face_skin_region(256, "ffhq")
    mild = _face_like(90 + round(3 * 2.55))
    assert SkinToneGuard()(photo, mild, region, limit=4.0) is mild
    strong = _face_like(200)
    assert SkinToneGuard()(photo, strong, region, limit=0.0) is strong


def test_skin_tone_guard_eases_its_correction_in_over_frames():
    photo, region = _face_like(90), face_skin_region(256, "ffhq")
    lightened = _face_like(90 + round(20 * 2.55))
    guard = SkinToneGuard(smoothing=0.5)
    guard(photo, _face_like(90), region, 4.0)  # a first frame within the limit
    shifts = [mean_lightness(guard(photo, lightened, region, 4.0), region) - 90 * 100 / 255 for _ in range(8)]
    assert shifts[0] > shifts[-1] + 5  # the correction grows frame by frame, no jump
    assert 3.0 <= shifts[-1] <= 5.5
    guard.reset()
    assert 3.0 <= mean_lightness(guard(photo, lightened, region, 4.0), region) - 90 * 100 / 255 <= 5.0
