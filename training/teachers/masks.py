"""Targets for learned blend masks, and the keep-skin-tone treatment of teacher outputs.

A student that predicts alpha learns *where its output replaces the photo*. The target for one aligned
photo is the union of

* the face outline: the convex hull of the face mesh landmarks on the crop;
* hair: the larger of the two hair probabilities (the skin/clothes/hair model and the hair model);
* skin (face and neck) from the skin/clothes/hair model, kept only near the face (the model also fires on
  skin-coloured background);

gaps closed, holes filled and dilated a little, so that a teacher that redraws the hair outline (anime_jp)
never leaves photo hair showing beside its own, then feathered and multiplied by the engine's crop-edge
window, so no crop edge can become a seam. Without mask models the face outline and the engine's fixed
feather ellipse are used.

Keep skin tone: some teachers lighten dark skin (anime_jp: +31 L* on the darkest quarter). Inside the
skin, the teacher's output gets the photo's mean colour (L*, a*, b*) back while its own shading stays: a
shift of the statistics, not a copy of the photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.blend import crop_edge_window, feather_mask
from training.errors import TeacherError
from training.teachers.network import NetworkTeacher, open_teacher

MASK_MODELS = ("skin_clothes_hair", "hair")  # <masks folder>/<id>.json


@dataclass(frozen=True)
class MaskConfig:
    close: float = 0.12  # morphological closing, of the crop side
    dilate: float = 0.03  # of the crop side
    feather: float = 0.02  # Gaussian sigma, of the crop side
    skin_reach: float = 0.12  # skin counts this far (of the side) outside the face outline


def open_mask_models(folder: Path | None, threads: int = 2) -> dict[str, NetworkTeacher]:
    """The mask models found in ``folder`` (``skin_clothes_hair.json``, ``hair.json``); {} without a folder."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise TeacherError(f"{folder}: no such mask-model folder")
    models = {
        name: open_teacher(folder / f"{name}.json", threads)
        for name in MASK_MODELS
        if (folder / f"{name}.json").exists()
    }
    if not models:
        raise TeacherError(f"{folder}: holds none of the mask models {[m + '.json' for m in MASK_MODELS]}")
    for name, model in models.items():
        if model.spec.kind != "mask":
            raise TeacherError(f"{model.spec.path}: kind is '{model.spec.kind}', a mask model is needed for {name}")
    return models


class BlendTargets:
    """Per aligned photo: the alpha target (uint8) and the skin probability used by the skin-tone treatment."""

    def __init__(self, models: dict[str, NetworkTeacher], config: MaskConfig = MaskConfig()) -> None:
        from engine.tracking import FaceMeshDetector

        self.models, self.config = models, config
        self._mesh = FaceMeshDetector(max_faces=1, static=True)

    def close(self) -> None:
        self._mesh.close()

    def face_outline(self, photo: np.ndarray) -> np.ndarray | None:
        """(S, S) float32 filled convex hull of the landmarks, or None when no face is found on the crop."""
        faces = self._mesh(photo)
        if not faces:
            return None
        hull = cv2.convexHull(np.round(faces[0][:, :2]).astype(np.int32))
        out = np.zeros(photo.shape[:2], np.float32)
        cv2.fillConvexPoly(out, hull, 1.0)
        return out

    def skin(self, image: np.ndarray) -> np.ndarray | None:
        model = self.models.get("skin_clothes_hair")
        return None if model is None else model.probabilities(image)["skin"]

    def __call__(self, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """photo (S, S, 3) uint8 BGR -> (alpha (S, S) uint8, skin probability (S, S) float32 or None)."""
        cfg, side = self.config, photo.shape[0]
        outline = self.face_outline(photo)
        layers = [feather_mask(side, 0.1) if outline is None else outline]
        skin = None
        if "skin_clothes_hair" in self.models:
            probs = self.models["skin_clothes_hair"].probabilities(photo)
            skin, layers = probs["skin"], [*layers, probs["hair"]]
            reach = max(3, round(cfg.skin_reach * side)) | 1
            near = cv2.dilate(layers[0], cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
            layers.append(skin * near)
        if "hair" in self.models:
            layers.append(self.models["hair"].probabilities(photo)["hair"])
        alpha = np.max(np.stack(layers), axis=0)
        close = max(3, round(cfg.close * side)) | 1  # bridges the gap hair models leave at the hairline
        alpha = fill_holes(
            cv2.morphologyEx(alpha, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close)))
        )
        grow = max(3, round(cfg.dilate * side)) | 1
        alpha = cv2.dilate(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(cfg.feather * side, 0.5)) * crop_edge_window(side)
        return np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8), skin


def fill_holes(mask: np.ndarray, level: float = 0.5) -> np.ndarray:
    """``mask`` with every region that the border cannot reach below ``level`` set to 1.

    Hair and skin models can both miss the hairline; whatever they enclose is still the head.
    """
    outside = (mask < level).astype(np.uint8)
    padded = np.pad(outside, 1, constant_values=1)
    reach = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, reach, (0, 0), 2)
    enclosed = padded[1:-1, 1:-1] == 1  # below the level, yet not connected to the border
    return np.where(enclosed, 1.0, mask).astype(np.float32)


def skin_mean_lab(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Mean (L*, a*, b*) of ``image`` weighted by the skin probability (CIE units: L* 0..100)."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32)
    w = skin.astype(np.float32)
    total = max(float(w.sum()), 1e-6)
    mean = (lab * w[..., None]).reshape(-1, 3).sum(0) / total
    return np.array([mean[0] * 100 / 255, mean[1] - 128, mean[2] - 128], np.float32)


SKIN_TONE_PASSES = 3  # one pass left a fifth of anime_jp's lightening on the darkest faces; three leave ~4 %


def keep_skin_tone(
    photo: np.ndarray,
    stylized: np.ndarray,
    photo_skin: np.ndarray,
    skin_of: Callable[[np.ndarray], np.ndarray],
    passes: int = SKIN_TONE_PASSES,
) -> np.ndarray:
    """``stylized`` with its skin's mean L*, a* and b* moved to the photo's (all shading kept).

    All three: anime_jp's porcelain skin, darkened to the photo's L* with its own low a* kept, turned
    grey-brown (a* 9 against the photos' 15.5 on anime's pairs).

    ``skin_of`` gives an image's skin probability. One shift, weighted by the blurred skin mask, moves the
    skin-weighted mean only part of the way, and the treated skin is found a little differently, so each
    pass measures the treated image again and shifts what is left: on the held-out faces' darkest quarter,
    anime_jp's +30.5 L* became +6.1 after one pass and +1.2 after three.
    """
    if float(photo_skin.sum()) < 1:
        return stylized
    goal = skin_mean_lab(photo, photo_skin)
    for _ in range(passes):
        skin = skin_of(stylized)
        if float(skin.sum()) < 1:
            break
        shift = goal - skin_mean_lab(stylized, skin)
        lab = cv2.cvtColor(stylized, cv2.COLOR_BGR2LAB).astype(np.float32)
        w = cv2.GaussianBlur(skin.astype(np.float32), (0, 0), 2.0)[..., None]
        lab += w * np.array([shift[0] * 255 / 100, shift[1], shift[2]], np.float32)
        stylized = cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
    return stylized
