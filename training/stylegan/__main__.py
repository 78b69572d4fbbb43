"""``python -m training.stylegan <stage> ...``: the StyleGAN stages alone, without importing the others.

For launchers that need a module (``torchrun --nproc_per_node N -m training.stylegan stylegan
--run-dir ...``) and for machines that have only the training dependencies of this stage (a GPU
box without mediapipe or MNN). Same stages and options as ``python main.py train <stage>``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from training.cli import STAGES


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.stylegan")
    sub = parser.add_subparsers(dest="stage", required=True)
    modules = {}
    for name, (module_name, help_text) in STAGES.items():
        if module_name.startswith("training.stylegan."):
            modules[name] = importlib.import_module(module_name)
            stage = sub.add_parser(name, help=help_text)
            modules[name].add_arguments(stage)
            stage.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "log", "none"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return modules[args.stage].run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
