"""Evaluation metrics, defined once and reused by every stage (../shared/DESIGN.md, "Metrics").

* FID-EL0 / KID-EL0: Fréchet / kernel inception-style distances on ImageNet EfficientNet-Lite0 pooled
  features (1280-d, images resized to 224²). **Not comparable with published Inception FIDs** — only
  with other FID-EL0 figures computed here, on sets of the same size.
* FID-VGG / KID-VGG: the same on globally average-pooled VGG16 relu5_3 features (512-d, the HED-tuned
  VGG16 of :mod:`training.pretrained`, images resized to 224²). Reported beside FID-EL0 where a model
  was trained against EfficientNet-Lite0 features.
* Precision / recall: the k-NN manifold estimate on the same features (fidelity and variety apart).
* Identity: SFace cosine similarity between each photo and its stylized version.
* Sharpness: :func:`engine.metrics.sharpness` (mean |Laplacian| per pixel), averaged over images, with
  :func:`engine.metrics.block_ratio` beside it (2×2 block artefacts inflate the Laplacian).

Image conventions: numpy images are (H, W, 3) uint8 **BGR** (as OpenCV reads them); tensors are
(N, 3, H, W) float **RGB in [-1, 1]** (as the networks see them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engine.align import FFHQ_TEMPLATE
from engine.metrics import block_ratio, sharpness
from training import pretrained
from training.errors import TrainingError
from training.images import to_tensor, to_uint8

log = logging.getLogger(__name__)

SPACES = ("el0", "vgg")
Images = Sequence[np.ndarray] | np.ndarray | torch.Tensor


# ----- feature extraction ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _feature_net(space: str, device: str) -> torch.nn.Module:
    if space == "el0":
        return pretrained.efficientnet_lite0(device)
    if space == "vgg":
        return pretrained.vgg16(device, up_to="relu5_3")
    raise TrainingError(f"unknown feature space '{space}' (known: {', '.join(SPACES)})")


@torch.no_grad()
def features(images: Images, space: str = "el0", device: str = "cpu", batch: int = 16) -> np.ndarray:
    """Pooled features (N, D) float64 in ``space`` ('el0': 1280-d, 'vgg': 512-d) of images of any size."""
    net = _feature_net(space, device)
    n = len(images)
    if n == 0:
        raise TrainingError("no images to compute features of")
    out = []
    for i in range(0, n, batch):
        chunk = images[i : i + batch]
        x = (chunk if isinstance(chunk, torch.Tensor) else to_tensor(chunk, "bgr")).to(device)
        if space == "el0":
            f = net(x)
        else:
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
            f = net(x, layers=("relu5_3",))["relu5_3"].mean(dim=(2, 3))
        out.append(f.double().cpu().numpy())
    return np.concatenate(out)


# ----- distances between feature sets ---------------------------------------------------------


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets.

    tr sqrt(Σa Σb) is computed exactly without a D×D matrix square root: with centred features Xa, Xb
    it is the nuclear norm of Xa Xbᵀ / sqrt((Na - 1)(Nb - 1)) when the sets are smaller than D, else the
    sum of sqrt eigenvalues of sqrt(Σa) Σb sqrt(Σa). Small sets bias FID upwards: compare figures only at
    equal set sizes.
    """
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise TrainingError(f"FID needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    xa, xb = feats_a - feats_a.mean(0), feats_b - feats_b.mean(0)
    na, nb, dim = len(xa), len(xb), xa.shape[1]
    trace_a, trace_b = (xa**2).sum() / (na - 1), (xb**2).sum() / (nb - 1)
    if max(na, nb) < dim:
        cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((na - 1) * (nb - 1))
    else:
        evals, evecs = np.linalg.eigh(xa.T @ xa / (na - 1))
        root_a = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ (xb.T @ xb / (nb - 1)) @ root_a), 0, None)).sum()
    mean_term = float(((feats_a.mean(0) - feats_b.mean(0)) ** 2).sum())
    return max(mean_term + float(trace_a + trace_b - 2 * cross), 0.0)


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel distance: unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³, averaged over subsets.

    Unbiased, so it can be slightly negative for two samples of one distribution.
    """
    m = min(len(feats_a), len(feats_b), subset_size)
    if m < 2:
        raise TrainingError(f"KID needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    d = feats_a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        a = feats_a[rng.choice(len(feats_a), m, replace=False)]
        b = feats_b[rng.choice(len(feats_b), m, replace=False)]
        kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        off = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        values.append(off - 2 * kab.mean())
    return float(np.mean(values))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of (N, D) feature sets.

    Each set's manifold is the union of balls around its points reaching their k-th nearest neighbour.
    Precision: the share of fakes inside the real manifold (fidelity). Recall: the share of reals inside
    the fake manifold (variety). FID mixes the two; a generator collapsed onto a few modes shows up
    here as high precision with low recall.
    """
    if min(len(real), len(fake)) <= k:
        raise TrainingError(f"precision/recall with k={k} needs more than {k} samples per set")

    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.clip(sq, 0, None))

    def inside(points: np.ndarray, centres: np.ndarray) -> float:
        radii = np.sort(distances(centres, centres), axis=1)[:, k]  # column 0 is the point itself
        return float((distances(points, centres) <= radii[None, :]).any(axis=1).mean())

    return inside(fake, real), inside(real, fake)


def fid_images(a: Images, b: Images, space: str = "el0", device: str = "cpu") -> float:
    """FID between two image sets in ``space`` (see the module docstring: FID-EL0 is not Inception FID)."""
    return fid(features(a, space, device), features(b, space, device))


# ----- identity -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _identity_nets() -> tuple[pretrained.SFace, pretrained.YuNet]:
    return pretrained.sface(), pretrained.yunet()


def template_points5(size: int) -> np.ndarray:
    """SFace's 5 points (YuNet order) where the FFHQ alignment template puts them in a size² crop.

    Used when YuNet finds no face in an aligned crop; the nose is not in the template, so it is placed
    at the centre between the eyes and the mouth (the affine fit weighs all five points).
    """
    p = FFHQ_TEMPLATE.points * size
    right_eye, left_eye = p[0:2].mean(0), p[2:4].mean(0)
    mouth_r, mouth_l = p[4], p[5]
    nose = (right_eye + left_eye + mouth_r + mouth_l) / 4
    return np.array([right_eye, left_eye, nose, mouth_r, mouth_l], dtype=np.float64)


def identity_similarity(photos_bgr: Images, stylized_bgr: Images) -> np.ndarray:
    """SFace cosine similarity per (photo, stylized) pair of aligned crops -> (N,) float.

    Both images are warped with the alignment found on the *photo* (YuNet landmarks, or the FFHQ
    template when YuNet finds no face): stylized faces may fool a detector, and the student's output is
    pixel-aligned with its input anyway.
    """
    if len(photos_bgr) != len(stylized_bgr):
        raise TrainingError(f"identity needs pairs: {len(photos_bgr)} photos, {len(stylized_bgr)} stylized")
    net, detector = _identity_nets()
    sims = []
    for photo, styl in zip(photos_bgr, stylized_bgr):
        photo, styl = np.ascontiguousarray(photo), np.ascontiguousarray(styl)
        if styl.shape != photo.shape:
            styl = cv2.resize(styl, photo.shape[1::-1], interpolation=cv2.INTER_AREA)
        faces = detector(photo)
        points = faces[0].points if faces else template_points5(photo.shape[0])
        emb = net.embed([net.align(photo, points), net.align(styl, points)])
        sims.append(float(emb[0] @ emb[1]))
    return np.asarray(sims, dtype=np.float64)


# ----- sharpness ------------------------------------------------------------------------------


def _mean_over_images(metric, images_bgr: Images) -> float:
    if isinstance(images_bgr, torch.Tensor):
        images_bgr = to_uint8(images_bgr, "bgr")
    return float(np.mean([metric(np.asarray(im)) for im in images_bgr]))


def mean_sharpness(images_bgr: Images) -> float:
    """Mean of :func:`engine.metrics.sharpness` over images (mean |Laplacian| per pixel, grey 0..255)."""
    return _mean_over_images(sharpness, images_bgr)


def mean_block_ratio(images_bgr: Images) -> float:
    """Mean of :func:`engine.metrics.block_ratio`: read beside sharpness, which 2×2 blocks inflate."""
    return _mean_over_images(block_ratio, images_bgr)
