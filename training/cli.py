"""``python main.py train <stage> ...``: one entry point for every training stage.

The registry is a literal table (a frozen app has no source files to scan). Each stage module
provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging

STAGES: dict[str, tuple[str, str]] = {
    "prepare": ("training.prepare", "align real faces from photo folders or videos into 256² crops"),
    "pairs": (
        "training.pairs",
        "stylize aligned photos with a teacher (ink, ugatit:RUN, tier:BUNDLE:TIER, a teacher folder) into pairs",
    ),
    "student": ("training.student.train", "distil a pairs folder into a real-time student of one compute tier"),
    "head-mask": (
        "training.student.head_mask",
        "train a head mask (face + hair, from the whole crop) on a pairs folder's alpha targets",
    ),
    "graft-head-mask": (
        "training.student.graft",
        "make installed styles blend through a trained head mask (no retraining)",
    ),
    "reexport": (
        "training.student.reexport",
        "export installed styles again with the current exporter (the same function, a faster graph)",
    ),
    "export": ("training.student.export", "export student runs to ONNX + MNN and write a validated model bundle"),
    "stylegan": ("training.stylegan.train", "train or fine-tune a StyleGAN2-ADA generator on a style folder"),
    "fuse": ("training.stylegan.fusion", "fuse two StyleGAN generators (layer swap / per-resolution blend), chain"),
    "invert": ("training.stylegan.invert", "invert aligned faces into a StyleGAN generator's W+ space"),
    "generate": ("training.stylegan.generate", "generate an image set + manifest from a StyleGAN generator"),
    "curate": ("training.stylegan.curate", "curation round: candidates, accept/reject, grow the style set"),
    "ugatit": ("training.ugatit.train", "train U-GAT-IT between aligned real faces and a style image set"),
    "estimate": ("training.estimate", "how long a train all route takes on this machine, from measured throughput"),
    "all": ("training.recipe", "the whole recipe: data folder -> pairs -> students -> installed bundle (resumable)"),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stylecast train", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    modules = {}
    for name, (module_name, help_text) in STAGES.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        stage_parser = sub.add_parser(name, help=help_text)
        module.add_arguments(stage_parser)
        stage_parser.add_argument(
            "--progress", default="auto", choices=["auto", "bar", "json", "log", "none"], help="progress output"
        )
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.INFO)
    return modules[args.stage].run(args)
