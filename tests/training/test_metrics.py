import cv2
import numpy as np
import pytest

from training import metrics
from training.errors import TrainingError
from training.images import to_tensor


@pytest.fixture(scope="module")
def photo_set():
    """8 different 128² BGR crops of the skimage photos."""
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
        h, w = img.shape[:2]
        s = min(h, w) * 2 // 3
        for y, x in ((0, 0), (h - s, w - s)):
            out.append(cv2.resize(img[y : y + s, x : x + s], (128, 128), interpolation=cv2.INTER_AREA))
    return np.stack(out)


@pytest.mark.parametrize("space,dim", [("el0", 1280), ("vgg", 512)])
def test_fid_is_zero_for_a_set_with_itself_and_fid_kid_grow_with_distortion(photo_set, space, dim):
    feats = metrics.features(photo_set, space)
    assert feats.shape == (len(photo_set), dim)
    blurred = [np.stack([cv2.GaussianBlur(im, (0, 0), s) for im in photo_set]) for s in (1, 4)]
    blurred_feats = [metrics.features(b, space) for b in blurred]
    f0, f1 = metrics.fid(feats, feats), metrics.fid(feats, blurred_feats[0])
    f2 = metrics.fid_images(photo_set, blurred[1], space)
    assert f2 == pytest.approx(metrics.fid(feats, blurred_feats[1]))
    assert f0 < 1e-3 * f2 and f0 < f1 < f2
    k0, k1, k2 = metrics.kid(feats, feats), metrics.kid(feats, blurred_feats[0]), metrics.kid(feats, blurred_feats[1])
    assert k0 < k1 < k2  # unbiased: about 0 (even slightly negative) for a set with itself


def test_features_accept_tensors_like_images(photo_set):
    a = metrics.features(photo_set[:3], "el0")
    b = metrics.features(to_tensor(photo_set[:3], "bgr"), "el0")
    assert np.allclose(a, b)


def test_unknown_space_and_tiny_sets_are_refused(photo_set):
    with pytest.raises(TrainingError, match="unknown feature space"):
        metrics.features(photo_set, "inception")
    with pytest.raises(TrainingError, match="at least 2"):
        metrics.fid(np.zeros((1, 4)), np.zeros((5, 4)))


def test_identity_similarity_is_high_for_a_restyled_face_and_low_for_another_image(astronaut_crop, photo_set):
    flat = cv2.pyrMeanShiftFiltering(astronaut_crop, 8, 24)  # cartoon-like flattening keeps identity
    other = cv2.resize(photo_set[1], (256, 256))
    sims = metrics.identity_similarity([astronaut_crop] * 3, [astronaut_crop, flat, other])
    assert sims.shape == (3,)
    assert sims[0] > 0.99 and sims[1] > 0.6 and sims[2] < 0.3


def test_template_points_match_the_detected_face_of_an_aligned_crop(astronaut_crop):
    from training.pretrained import yunet

    detected = yunet()(astronaut_crop)[0].points
    template = metrics.template_points5(256)
    eyes_mouth = [0, 1, 3, 4]
    assert np.abs(detected[eyes_mouth] - template[eyes_mouth]).max() < 12  # pixels of 256


def test_mean_sharpness_uses_the_engine_definition(photo_set):
    from engine.metrics import sharpness

    assert metrics.mean_sharpness(photo_set[:2]) == pytest.approx(np.mean([sharpness(im) for im in photo_set[:2]]))
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 2) for im in photo_set])
    assert metrics.mean_sharpness(blurred) < 0.5 * metrics.mean_sharpness(photo_set)
    assert metrics.mean_sharpness(to_tensor(photo_set[:2], "bgr")) == pytest.approx(
        metrics.mean_sharpness(photo_set[:2])
    )


def test_block_ratio_tells_2x2_blocks_from_edges_that_sharpness_cannot(photo_set):
    blocky = np.stack([cv2.resize(im[::2, ::2], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for im in photo_set])
    shifted = np.stack([np.roll(im, 1, axis=(0, 1)) for im in blocky])  # blocks off the even grid
    assert metrics.mean_sharpness(blocky) > metrics.mean_sharpness(photo_set)
    assert 0.85 < metrics.mean_block_ratio(photo_set) < 1.15
    assert metrics.mean_block_ratio(blocky) < 0.05 and metrics.mean_block_ratio(shifted) > 10


@pytest.mark.parametrize("na,nb,dim", [(10, 12, 64), (200, 150, 32)])  # fewer / more samples than dims
def test_fid_matches_the_matrix_square_root_formula(na, nb, dim):
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(na, dim))
    b = rng.normal(1, 2, size=(nb, dim)) @ rng.normal(size=(dim, dim)) * 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * np.trace(linalg.sqrtm(ca @ cb).real)
    assert metrics.fid(a, b) == pytest.approx(ref, rel=1e-6)


def test_precision_recall_separate_fidelity_from_variety():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    assert metrics.precision_recall(real, real.copy()) == (1.0, 1.0)
    same_distribution = metrics.precision_recall(real, rng.normal(size=(300, 16)))
    assert min(same_distribution) > 0.6
    collapsed = real[:5].repeat(60, axis=0) + rng.normal(scale=0.01, size=(300, 16))  # five modes only
    precision, recall = metrics.precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    shifted = metrics.precision_recall(real, rng.normal(loc=3.0, size=(300, 16)))
    assert max(shifted) < 0.2
