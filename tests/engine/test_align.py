import math

import cv2
import numpy as np
import pytest

from engine.align import (
    FFHQ_TEMPLATE,
    OneEuroFilter,
    Similarity,
    SimilaritySmoother,
    compose_affine,
    fit_similarity,
    similarity_from_landmarks,
    unit_to_image,
    warp_crop,
)


def test_fit_recovers_a_known_similarity_exactly():
    truth = Similarity(cx=320.5, cy=201.25, log_side=math.log(180.0), angle=0.3)
    pts = unit_to_image(truth, FFHQ_TEMPLATE.points)
    fit = fit_similarity(pts, FFHQ_TEMPLATE.points)
    assert np.allclose(fit.as_vector(), truth.as_vector(), atol=1e-9)


def test_fit_is_least_squares_not_exact_interpolation():
    rng = np.random.default_rng(1)
    truth = Similarity(100, 120, math.log(90), -0.2)
    pts = unit_to_image(truth, FFHQ_TEMPLATE.points) + rng.normal(0, 1.0, (6, 2))
    fit = fit_similarity(pts, FFHQ_TEMPLATE.points)
    # residuals of the LS fit are no larger than those of the true transform
    res_fit = np.linalg.norm(unit_to_image(fit, FFHQ_TEMPLATE.points) - pts)
    res_true = np.linalg.norm(unit_to_image(truth, FFHQ_TEMPLATE.points) - pts)
    assert res_fit <= res_true + 1e-9


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError):
        fit_similarity(np.zeros((6, 2)), FFHQ_TEMPLATE.points)


def test_landmark_selection_uses_the_template_ids():
    landmarks = np.zeros((478, 2))
    truth = Similarity(50, 60, math.log(40), 0.1)
    landmarks[list(FFHQ_TEMPLATE.landmark_ids)] = unit_to_image(truth, FFHQ_TEMPLATE.points)
    assert np.allclose(similarity_from_landmarks(landmarks).as_vector(), truth.as_vector())


def test_crop_and_image_matrices_are_exact_inverses():
    sim = Similarity(400.0, 250.0, math.log(222.0), 0.7)
    fwd = sim.to_crop_matrix(256)
    back = sim.to_image_matrix(256)
    ident = compose_affine(back, fwd)
    assert np.allclose(ident, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    # the crop centre is the face centre, the corners are the crop corners
    assert np.allclose(fwd @ [sim.cx, sim.cy, 1], [128, 128])
    assert np.allclose(sim.corners()[0], back @ [0, 0, 1])


def test_warp_crop_matches_a_direct_warp_when_not_shrinking():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    sim = Similarity(200.0, 150.0, math.log(200.0), 0.2)  # 256 crop from 200 px: enlarging
    crop = warp_crop(image, sim, 256)
    direct = cv2.warpAffine(
        image, sim.to_crop_matrix(256), (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    assert np.abs(crop.astype(int) - direct.astype(int)).max() <= 1


def test_warp_crop_antialiases_when_shrinking():
    # a 1-px checkerboard shrunk 4x must become flat grey, not an aliased pattern
    board = ((np.indices((1200, 1200)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.dstack([board] * 3)
    sim = Similarity(600.0, 600.0, math.log(1000.0), 0.1)
    crop = warp_crop(image, sim, 256)[32:-32, 32:-32]
    naive = cv2.warpAffine(image, sim.to_crop_matrix(256), (256, 256), flags=cv2.INTER_LINEAR)[32:-32, 32:-32]
    assert abs(crop.mean() - 127.5) < 5 and crop.std() < 8.0
    assert naive.std() > 5 * crop.std()  # moire


def test_warp_crop_handles_faces_off_the_frame_edge():
    image = np.full((100, 100, 3), 77, np.uint8)
    crop = warp_crop(image, Similarity(-500.0, -500.0, math.log(50.0), 0.0), 64)
    assert crop.shape == (64, 64, 3) and (crop == 77).all()


def test_one_euro_reduces_jitter_on_a_still_signal_and_follows_motion():
    rng = np.random.default_rng(0)
    filt = OneEuroFilter(min_cutoff=0.6, beta=4.0)
    t = np.arange(300) / 30.0
    noisy = 10.0 + rng.normal(0, 1.0, t.size)  # 1 px landmark noise on a 100 px face
    out = np.array([filt(np.array([x]), ti, scale=100.0)[0] for x, ti in zip(noisy, t)])
    assert out[30:].std() < 0.35 * noisy[30:].std()
    filt.reset()
    ramp = 300.0 * t  # a fast head turn: 3 face sizes per second
    out = np.array([filt(np.array([x]), ti, scale=100.0)[0] for x, ti in zip(ramp, t)])
    lag = ramp[150:] - out[150:]
    assert np.abs(lag).max() < 0.1 * 300.0  # under a tenth of a second behind


def test_smoother_unwraps_angles_across_pi():
    smoother = SimilaritySmoother()
    angles = [math.pi - 0.01, -math.pi + 0.01, math.pi - 0.02]
    outs = [smoother(Similarity(0, 0, 4.0, a), i / 30) for i, a in enumerate(angles)]
    assert all(abs(o.angle - math.pi) < 0.05 for o in outs)


def test_shrinking_keeps_detail_like_area_averaging():
    """Anti-aliasing must not over-blur: compare with OpenCV's area-averaged resize of the same region."""
    from skimage.data import astronaut

    image = cv2.resize(astronaut()[:, :, ::-1], (1536, 1536), interpolation=cv2.INTER_CUBIC)
    for side in (1536.0, 900.0, 400.0):  # shrink by 6x, 3.5x, 1.6x
        sim = Similarity(768.0, 768.0, math.log(side), 0.0)
        crop = warp_crop(image, sim, 256).astype(float)
        # reference: area-averaged resize, then the sub-pixel shift our crop convention implies
        f = 256 / side
        small = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        t = (768 - side / 2) * f + 0.5 * f - 0.5
        ref = cv2.warpAffine(small, np.array([[1.0, 0, -t], [0, 1.0, -t]]), (256, 256), flags=cv2.INTER_LINEAR)
        mse = ((crop[8:-8, 8:-8] - ref[8:-8, 8:-8].astype(float)) ** 2).mean()
        assert 10 * math.log10(255**2 / mse) > 30, side
