"""Per-style figures of teacher-distilled bundles, measured through the engine as the app runs them.

``python main.py bench styles --style anime --teacher ../shared/teachers/anime_jp --faces runs/faces512
[--runs runs/students_anime] [--gallery docs/styles]`` prints JSON:

* identity (SFace) of each tier's output and of the teacher's, on the held-out faces of the prepared folder;
* sharpness ÷ teacher of the raw networks (``--runs``: the trained students in torch, no post-filter) and
  of the shipped graphs (with the sharpening layer), so what the filter adds is seen apart;
* FID-EL0 / KID-EL0 of each tier to the teacher's outputs (EfficientNet-Lite0 features: not comparable
  with Inception FIDs);
* skin tone: the mean Lab L*, a* and b* change inside the photo's / output's skin mask, on the held-out faces
  (all, and their darkest quarter by photo L*) and on ../shared/data/identities split into the darker and
  lighter people (by each person's median photo L*), for the teacher and for each tier; every figure is
  taken after the bundle's run-time skin-tone guard, as the app shows it, and for a guarded bundle also
  for the network alone;
* flicker amplification on the still noisy demo, temporal smoothing on and off (``bench temporal``);
* background change: how far each tier, blended through its own alpha, moves the photo where the mask
  models' alpha target keeps it (``--background-only`` measures this alone, without the teacher);
* ms per call of the bare networks: each tier and the teacher on onnxruntime (TFLite for a TFLite teacher), 2
  threads, in this one run, the teacher at its preferred input and at 256²; both with the same session
  options, the engine's and onnxruntime's default (the table shows the engine's).

Research data: this reads ../shared/data and ../shared/teachers. ``--gallery`` writes held-out faces and a
clip frame × the style (research-derived: keep them out of the repository, e.g. under out/);
``--public-gallery`` writes the public-domain astronaut only, for the docs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from bench.machine import finish, machine_info
from engine.blend import SkinToneGuard, face_skin_region
from engine.stats import median_ms

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def _timed(fn, x, runs: int = 10) -> float:
    return round(median_ms(lambda: fn(x), runs, warmup=1), 2)


def _skin_shift(photos, outputs, skin_model) -> list[tuple]:
    """Per image: (the photo's skin L*, ΔL*, Δa*, Δb*), output − photo, each inside its own skin mask."""
    from training.teachers.masks import skin_mean_lab

    rows = []
    for photo, out in zip(photos, outputs):
        p = skin_mean_lab(photo, skin_model.probabilities(photo)["skin"])
        o = skin_mean_lab(out, skin_model.probabilities(out)["skin"])
        rows.append((p[0], *(o - p)))
    return rows


def _summary(rows, select=None) -> dict:
    rows = [r for r in rows if select is None or select(r)]
    return {
        "n": len(rows),
        "dL": round(float(np.mean([r[1] for r in rows])), 2),
        "da": round(float(np.mean([r[2] for r in rows])), 2),
        "db": round(float(np.mean([r[3] for r in rows])), 2),
    }


def _identity_faces(size: int, per_person: int) -> list[tuple[str, np.ndarray]]:
    """(person, aligned crop) for up to ``per_person`` photos with a face of each person in
    ../shared/data/identities."""
    from engine.align import similarity_from_landmarks, warp_crop
    from engine.tracking import FaceMeshDetector

    detector = FaceMeshDetector(max_faces=1, static=True)
    out = []
    try:
        for path in sorted((SHARED / "data" / "identities").glob("*/*/*.jpg")):
            if sum(person == path.parent.name for person, _ in out) >= per_person:
                continue
            image = cv2.imread(str(path))
            faces = detector(image) if image is not None else []
            if faces:
                out.append((path.parent.name, warp_crop(image, similarity_from_landmarks(faces[0]), size)))
    finally:
        detector.close()
    return out


def measure(args: argparse.Namespace) -> dict:
    import torch

    from engine.backends import load_tier
    from engine.bundle import load_bundle
    from training import metrics
    from training.evaluate import run_stylizers
    from training.prepare import load_crops
    from training.teachers.network import NetworkTeacher, load_teacher_spec, open_teacher

    torch.set_num_threads(2)
    bundle = load_bundle(args.bundle or Path("models") / args.style)
    spec = load_teacher_spec(args.teacher)
    teacher = NetworkTeacher(spec, threads=2)
    skin_model = open_teacher(SHARED / "teachers" / "masks" / "skin_clothes_hair.json", threads=2)
    tiers = {t.id: load_tier(bundle, t, "onnx", threads=2) for t in bundle.manifest.tiers}

    def small(image):
        return cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)

    crops = [cv2.imread(str(p)) for p in load_crops(args.faces, "heldout")][: args.limit]
    photos = [small(c) for c in crops]
    teacher_out = [small(o) for o in teacher(crops)]  # the raw teacher: no skin-tone treatment
    guard = engine_guard(bundle, args.skin_tone_limit)
    networks = {tid: [m.stylize(p) for p in photos] for tid, m in tiers.items()}
    outputs = {tid: [guard(p, o) for p, o in zip(photos, outs)] for tid, outs in networks.items()}
    colour = {tid: [o[:, :, :3].copy() for o in outs] for tid, outs in outputs.items()}
    result: dict = {"machine": machine_info(), "style": bundle.id, "teacher": spec.id, "heldout_faces": len(photos)}

    ident_teacher = metrics.identity_similarity(photos, teacher_out)
    teacher_sharp = metrics.mean_sharpness(teacher_out)
    el0_teacher = metrics.features(teacher_out, "el0")
    per_tier = {}
    for tid, outs in colour.items():
        el0 = metrics.features(outs, "el0")
        per_tier[tid] = {
            "identity": round(float(metrics.identity_similarity(photos, outs).mean()), 3),
            "sharpness_vs_teacher_shipped": round(metrics.mean_sharpness(outs) / teacher_sharp, 3),
            "fid_el0_to_teacher": round(metrics.fid(el0, el0_teacher), 2),
            "kid_el0_to_teacher": round(metrics.kid(el0, el0_teacher), 4),
        }
    if args.runs:
        runs = [args.runs / tid for tid in tiers]
        for tid, stylize in zip(tiers, run_stylizers(runs).values()):
            raw = [stylize(p) for p in photos]
            per_tier[tid]["sharpness_vs_teacher_raw"] = round(metrics.mean_sharpness(raw) / teacher_sharp, 3)
    result["teacher_identity"] = round(float(ident_teacher.mean()), 3)
    result["tiers"] = per_tier

    # skin tone on the held-out faces: all, and the darkest quarter by the photo's skin L*
    teacher_rows = _skin_shift(photos, teacher_out, skin_model)
    cut = float(np.quantile([r[0] for r in teacher_rows], 0.25))
    dark = lambda r: r[0] <= cut  # noqa: E731

    def heldout(outs) -> dict:
        rows = _skin_shift(photos, [o[:, :, :3].copy() for o in outs], skin_model)
        return {"all": _summary(rows), "darkest_quarter": _summary(rows, dark)}

    skin = {"teacher": heldout(teacher_out)}
    for tid, outs in outputs.items():
        skin[tid] = heldout(outs)
        if guard.limit > 0:  # what the network alone does, without the run-time guard
            skin[tid]["network_alone"] = heldout(networks[tid])
    result["skin_tone_heldout"] = {"darkest_quarter_photo_L_at_most": round(cut, 1), **skin}

    # skin tone on the identity sets: the darker and the lighter people
    people = _identity_faces(512, args.per_person)
    id_photos = [small(c) for _, c in people]
    id_teacher = [small(o) for o in teacher([c for _, c in people])]
    rows = _skin_shift(id_photos, id_teacher, skin_model)
    by_person: dict[str, list[float]] = {}
    for (person, _), r in zip(people, rows):
        by_person.setdefault(person, []).append(r[0])
    medians = {p: float(np.median(v)) for p, v in by_person.items()}
    threshold = float(np.quantile(list(medians.values()), 0.25))
    darker = {p for p, v in medians.items() if v <= threshold}
    groups = {"darker": lambda i: people[i][0] in darker, "lighter": lambda i: people[i][0] not in darker}

    def by_group(rows) -> dict:
        return {n: _summary([r for i, r in enumerate(rows) if pick(i)]) for n, pick in groups.items()}

    def identities(outs) -> dict:
        return by_group(_skin_shift(id_photos, [o[:, :, :3].copy() for o in outs], skin_model))

    ident: dict = {"darker_people": sorted(darker), "teacher": by_group(rows)}
    light_model = next(iter(tiers.values()))
    id_networks = [light_model.stylize(p) for p in id_photos]
    ident[light_model.tier.id] = identities([guard(p, o) for p, o in zip(id_photos, id_networks)])
    if guard.limit > 0:
        ident[light_model.tier.id]["network_alone"] = identities(id_networks)
    result["skin_tone_identities"] = ident

    # flicker amplification, smoothing on and off
    from engine.stability import measure_temporal

    result["flicker_amplification"] = {
        "on": measure_temporal(bundle, True, 90, tier=light_model.tier.id)["flicker_amplification"],
        "off": measure_temporal(bundle, False, 90, tier=light_model.tier.id)["flicker_amplification"],
    }

    result["background_change"] = background_change(photos, outputs)
    result.update(measure_speed(bundle, spec, crops[0], photos[0]))
    finish(result["machine"])

    if args.gallery:
        write_gallery(args.gallery, bundle.id, photos, teacher_out, outputs)
        clip_frame(args.gallery / f"{bundle.id}_clip.jpg", bundle, SHARED / "data" / "videos" / args.clip)
    if args.public_gallery:
        public_frames(args.public_gallery, bundle, tiers[light_model.tier.id])
    return result


@dataclass(frozen=True)
class StillGuard:
    """The engine's skin-tone guard as a still photo meets it: a face's first frame, nothing to ease in."""

    region: np.ndarray
    limit: float

    def __call__(self, photo: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        return SkinToneGuard()(photo, stylized, self.region, self.limit)


def background_change(photos: list[np.ndarray], outputs: dict[str, list[np.ndarray]]) -> dict:
    """Per tier: the mean |shown − photo| (grey levels) where the alpha target of the mask models keeps the
    photo, and the share of those pixels moved by more than 12. A tier whose alpha spills past the hair
    shows its own background there: a pale halo, a fogged backdrop. With it, how the blend mask the engine
    uses (the alpha through the crop-edge window) meets the target: its mean |mask − target|, and how far it
    falls short of the target inside the head (target > 0.9), where a shortfall lets photo hair show."""
    from training.teachers.masks import BlendTargets, open_mask_models

    blend_targets = BlendTargets(open_mask_models(SHARED / "teachers" / "masks"))
    try:
        targets = [blend_targets(p)[0].astype(np.float32) / 255 for p in photos]
    finally:
        blend_targets.close()
    result = {}
    for tid, outs in outputs.items():
        moved = [
            np.abs(composite(p, o).astype(np.float32) - p).mean(axis=2)[t < 5 / 255]
            for p, o, t in zip(photos, outs, targets)
        ]
        masks = [blend_mask(o) for o in outs]
        short = np.concatenate([np.maximum(t - m, 0)[t > 0.9] for m, t in zip(masks, targets)])
        result[tid] = {
            "mean_grey_levels": round(float(np.mean([m.mean() for m in moved])), 2),
            "share_moved_over_12": round(float(np.mean([(m > 12).mean() for m in moved])), 3),
            "alpha_l1": round(float(np.mean([np.abs(m - t).mean() for m, t in zip(masks, targets)])), 4),
            "alpha_short_inside_head": round(float(short.mean()), 4) if short.size else None,
        }
    return result


def background_only(args: argparse.Namespace) -> dict:
    """:func:`background_change` alone: the bundle's tiers on the held-out faces, no teacher run."""
    from engine.backends import load_tier
    from engine.bundle import load_bundle
    from training.prepare import load_crops

    machine = machine_info()
    bundle = load_bundle(args.bundle or Path("models") / args.style)
    guard = engine_guard(bundle, args.skin_tone_limit)
    photos = [
        cv2.resize(cv2.imread(str(p)), (256, 256), interpolation=cv2.INTER_AREA)
        for p in load_crops(args.faces, "heldout")
    ]
    photos = photos[: args.limit]
    outputs = {}
    for tier in bundle.manifest.tiers:
        model = load_tier(bundle, tier, "onnx", threads=2)
        outputs[tier.id] = [guard(p, model.stylize(p)) for p in photos]
    return {
        "style": bundle.id,
        "heldout_faces": len(photos),
        "machine": finish(machine),
        "background_change": background_change(photos, outputs),
    }


def engine_guard(bundle, limit: float | None) -> StillGuard:
    """The bundle's skin-tone guard (``limit`` overrides its default; 0 = off), as the pipeline applies it."""
    align = bundle.manifest.align
    limit = bundle.manifest.blend.skin_tone_limit if limit is None else limit
    return StillGuard(face_skin_region(align.crop_size, align.template), limit)


SPEED_ROUNDS = 5
SPEED_SETTINGS = {"engine": False, "onnxruntime_default": True}  # setting -> onnxruntime's idle threads spin


def measure_speed(bundle, spec, crop: np.ndarray, face: np.ndarray) -> dict:
    """ms per call of each tier's ONNX network and of the teacher's, bare (no pre- or post-processing), 2
    threads, the median of rounds in one run; and the light tier's speed-up. The teacher runs on ``crop`` at
    its preferred input and, where it takes it, on ``face`` at 256². Every ONNX network gets the same session
    options, in two settings: the engine's (idle threads sleep) and onnxruntime's default (they spin). A
    TFLite teacher runs on its interpreter, which has no such option."""
    from engine.backends import OnnxStylizer
    from training.teachers.network import NetworkTeacher

    def teacher_at(size: int, image: np.ndarray, spinning: bool) -> tuple:
        sized = spec if size == spec.input.size[0] else replace(spec, input=replace(spec.input, size=(size, size)))
        teacher = NetworkTeacher(sized, threads=2, spinning=spinning)
        return teacher.network, teacher.model_input(image), 5

    timed = {}
    for setting, spinning in SPEED_SETTINGS.items():
        for tier in bundle.manifest.tiers:
            onnx = next(f for f in tier.files if f.runtime == "onnx")
            network = OnnxStylizer(bundle.path(onnx), 2, bundle.manifest.io, spinning=spinning)
            x = np.random.default_rng(0).uniform(-1, 1, (1, 3, tier.input_size, tier.input_size))
            timed[setting, tier.id] = (network, x.astype(np.float32), 30)
        timed[setting, f"teacher_{spec.runtime}_{spec.input.size[0]}"] = teacher_at(spec.input.size[0], crop, spinning)
        if spec.input.multiple < spec.input.size[0]:  # the teacher also takes 256² input
            timed[setting, f"teacher_{spec.runtime}_256"] = teacher_at(256, face, spinning)
    # rounds, each timing every network in turn: one round alone swung a tier by 2x with where the scheduler
    # put the threads (sketch light 6.3 against 13.4 ms); the median of the rounds is reported
    rounds = [{k: _timed(fn, arg, runs) for k, (fn, arg, runs) in timed.items()} for _ in range(SPEED_ROUNDS)]
    speed: dict = {setting: {} for setting in SPEED_SETTINGS}
    for setting, name in timed:
        speed[setting][name] = round(float(np.median([r[setting, name] for r in rounds])), 2)
    light = bundle.manifest.tiers[0].id
    return {
        "ms_2_threads": speed,
        "light_speedup_vs_teacher": {
            setting: {k: round(v / ms[light], 1) for k, v in ms.items() if k.startswith("teacher")}
            for setting, ms in speed.items()
        },
    }


def speed_only(args: argparse.Namespace) -> dict:
    """:func:`measure_speed` alone, on the public-domain astronaut: no prepared faces or runs needed."""
    from engine.bundle import load_bundle
    from engine.sources import astronaut
    from training.teachers.network import load_teacher_spec

    machine = machine_info()
    bundle = load_bundle(args.bundle or Path("models") / args.style)
    spec = load_teacher_spec(args.teacher)
    speed = measure_speed(bundle, spec, astronaut(), astronaut(256))
    return {"style": bundle.id, "teacher": spec.id, "machine": finish(machine), **speed}


def _run_pipeline(bundle, frames, tier: str = "light") -> np.ndarray:
    from engine.frames import Frame
    from engine.pipeline import Pipeline, load_style
    from engine.tracking import MeshFaceTracker

    pipe = Pipeline(MeshFaceTracker(max_faces=4), load_style(bundle, tier, "onnx"))
    try:
        result = None
        for i, image in enumerate(frames):
            result = pipe.process(Frame(image, i / 30.0, i))
        return result.image
    finally:
        pipe.close()


def clip_frame(path: Path, bundle, clip: Path, at: int = 90) -> None:
    """One frame of a real clip through the whole pipeline (tracking, alignment, smoothing, blend)."""
    from engine.sources import VideoFileSource

    video = VideoFileSource(clip, max_frames=at)
    frames = []
    while (frame := video.read()) is not None:
        frames.append(frame.image)
    video.close()
    cv2.imwrite(str(path), np.hstack([frames[-1], _run_pipeline(bundle, frames)]), [cv2.IMWRITE_JPEG_QUALITY, 85])


def public_frames(folder: Path, bundle, model) -> None:
    """Committed gallery from the public-domain astronaut only: the whole photo through the pipeline, and
    the aligned crop blended with the fixed feather mask beside the learned alpha."""
    from engine.sources import astronaut
    from training.student.export import public_domain_face

    folder.mkdir(parents=True, exist_ok=True)
    photo = astronaut()
    out = _run_pipeline(bundle, [photo] * 12)
    cv2.imwrite(str(folder / f"{bundle.id}_astronaut.jpg"), cv2.resize(out, (320, 320)), [cv2.IMWRITE_JPEG_QUALITY, 88])
    face = public_domain_face()
    styl = model.stylize(face)
    row = np.hstack(
        [
            face,
            composite(face, styl, learned=False),
            composite(face, styl),
            cv2.cvtColor(styl[:, :, 3], cv2.COLOR_GRAY2BGR),
        ]
    )
    cv2.imwrite(str(folder / f"{bundle.id}_mask_before_after.jpg"), row, [cv2.IMWRITE_JPEG_QUALITY, 88])


def blend_mask(stylized: np.ndarray, learned: bool = True) -> np.ndarray:
    """The mask the engine blends a stylized crop with: its learned alpha, or the fixed feather without one."""
    from engine.blend import feather_mask, learned_mask

    if learned and stylized.shape[2] == 4:
        return learned_mask(stylized[:, :, 3].copy())
    return feather_mask(stylized.shape[0], 0.1)


def composite(photo: np.ndarray, stylized: np.ndarray, learned: bool = True) -> np.ndarray:
    """The stylized crop blended over the photo as the engine blends it (learned alpha or fixed feather)."""
    from engine.blend import mix

    return mix(photo, stylized, blend_mask(stylized, learned))


def write_gallery(folder: Path, style: str, photos, teacher_out, outputs, count: int = 6) -> None:
    """Rows: photo, teacher, then each tier blended as the app shows it; plus fixed-mask vs learned alpha."""
    folder.mkdir(parents=True, exist_ok=True)
    pick = np.linspace(0, len(photos) - 1, count).round().astype(int)
    rows = [[photos[i] for i in pick], [teacher_out[i] for i in pick]]
    rows += [[composite(photos[i], outs[i]) for i in pick] for outs in outputs.values()]
    thumb = lambda im: cv2.resize(im, (160, 160), interpolation=cv2.INTER_AREA)  # noqa: E731
    grid = np.vstack([np.hstack([thumb(im) for im in row]) for row in rows])
    cv2.imwrite(str(folder / f"{style}_gallery.jpg"), grid, [cv2.IMWRITE_JPEG_QUALITY, 88])
    light = next(iter(outputs.values()))
    pairs = [
        np.hstack([composite(photos[i], light[i], learned=False), composite(photos[i], light[i])]) for i in pick[:3]
    ]
    cv2.imwrite(
        str(folder / f"{style}_heldout_mask_before_after.jpg"), np.vstack(pairs), [cv2.IMWRITE_JPEG_QUALITY, 88]
    )


def _darkest(tier: dict, teacher: dict) -> str:
    alone = f"{tier['network_alone']['darkest_quarter']['dL']:+.1f}; " if "network_alone" in tier else ""
    return f"{tier['darkest_quarter']['dL']:+.1f} ({alone}{teacher['darkest_quarter']['dL']:+.1f})"


def markdown_table(results: list[dict]) -> str:
    """The docs table: one row per style and tier, from results of :func:`measure`."""
    lines = [
        "| style | tier | identity (teacher) | sharpness ÷ teacher: raw / shipped | FID-EL0 / KID-EL0 to teacher |"
        " ΔL* darkest quarter (network alone; teacher) | ΔL* darker / lighter people (teacher) | flicker on / off |"
        " ms, 2 threads (teacher at its input; at 256²) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ms = r["ms_2_threads"].get("engine", r["ms_2_threads"])  # results written before both settings
        teacher_ms = [v for k, v in ms.items() if k.startswith("teacher")]
        skin, people = r["skin_tone_heldout"], r["skin_tone_identities"]
        light = next(iter(r["tiers"]))
        for tid, m in r["tiers"].items():
            first = tid == light
            row = [
                r["style"] if first else "",
                tid,
                f"{m['identity']:.3f} ({r['teacher_identity']:.3f})",
                f"{m.get('sharpness_vs_teacher_raw', float('nan')):.2f} / {m['sharpness_vs_teacher_shipped']:.2f}",
                f"{m['fid_el0_to_teacher']:.1f} / {m['kid_el0_to_teacher']:.3f}",
                _darkest(skin[tid], skin["teacher"]),
                (
                    f"{people[tid]['darker']['dL']:+.1f} / {people[tid]['lighter']['dL']:+.1f}"
                    f" ({people['teacher']['darker']['dL']:+.1f} / {people['teacher']['lighter']['dL']:+.1f})"
                )
                if tid in people
                else "",
                f"{r['flicker_amplification']['on']:.2f} / {r['flicker_amplification']['off']:.2f}" if first else "",
                f"{ms[tid]:.1f}" + (f" ({' ; '.join(f'{v:.0f}' for v in teacher_ms)})" if first else ""),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--table"]:  # bench styles --table results.json...: the docs table from earlier runs
        print(markdown_table([json.loads(Path(p).read_text()) for p in argv[1:]]))
        return 0
    parser = argparse.ArgumentParser(prog="stylecast bench styles", description=__doc__)
    parser.add_argument("--style", required=True, help="installed style id (models/<id>)")
    parser.add_argument("--bundle", type=Path, help="bundle folder (default models/<style>)")
    parser.add_argument(
        "--teacher", type=Path, help="the teacher folder it was distilled from (not for --background-only)"
    )
    parser.add_argument("--faces", type=Path, help="the `train prepare` folder (512² crops) it used")
    parser.add_argument("--speed-only", action="store_true", help="time the tiers against the teacher only")
    parser.add_argument("--background-only", action="store_true", help="measure the background change only")
    parser.add_argument("--runs", type=Path, help="its student runs (one folder per tier), for raw sharpness")
    parser.add_argument("--limit", type=int, default=109, help="held-out faces to use")
    parser.add_argument(
        "--skin-tone-limit", type=float, help="override the bundle's run-time skin-tone guard (L*; 0 = off)"
    )
    parser.add_argument("--per-person", type=int, default=6, help="identity photos per person for skin tone")
    parser.add_argument("--gallery", type=Path, help="write the research-data gallery here (never commit it)")
    parser.add_argument("--clip", default="deepfacelive_Twitch1.mp4", help="clip of ../shared/data/videos")
    parser.add_argument("--public-gallery", type=Path, help="write the public-domain (astronaut) gallery here")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not args.speed_only and args.faces is None:
        parser.error("--faces is needed (or --speed-only)")
    if not args.background_only and args.teacher is None:
        parser.error("--teacher is needed (but for --background-only)")
    result = speed_only(args) if args.speed_only else background_only(args) if args.background_only else measure(args)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0
