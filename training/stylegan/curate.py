"""Curation loop: generate candidates, let a person accept or reject them, grow the style set, continue.

One round of ``python main.py train curate``:

1. ``--generator G --candidates DIR`` writes ``--count`` candidates (``generate`` stage format) if DIR
   holds none yet;
2. decisions come from ``--accept`` (a file of names/indices, one per line, or a comma-separated list
   of indices; everything else is rejected) or ``--interactive`` (a y/n/q prompt per candidate);
   they are recorded in ``DIR/decisions.json`` (re-running adds to them, nothing is decided twice);
3. accepted images are copied into ``--into`` (a folder that is then used as an extra style folder);
4. with ``--continue-run NEW --continue-kimg K`` training continues from G's run on the original style
   folders plus ``--into`` (a new run whose base is the previous one), which closes the loop.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.errors import TrainingError
from training.loop import exit_code
from training.runs import AbortFlag, Progress, abort_on_signals

log = logging.getLogger(__name__)


def parse_accept_list(text_or_path: str, names: list[str]) -> set[str]:
    """Accepted candidate file names from a file or a string of names/indices, separated by commas,
    spaces or new lines (``1,4,7``)."""
    path = Path(text_or_path)
    text = path.read_text() if path.is_file() else text_or_path
    accepted = set()
    for item in filter(None, re.split(r"[,\s]+", text)):
        if item.isdigit():
            idx = int(item)
            if idx >= len(names):
                raise TrainingError(f"accept list: index {idx} but only {len(names)} candidates")
            accepted.add(names[idx])
        else:
            name = Path(item).name
            if name not in names:
                raise TrainingError(f"accept list: {item} is not one of the candidates")
            accepted.add(name)
    return accepted


def prompt_decisions(
    names: list[str], folder: Path, ask: Callable[[str], str] = input, say: Callable[[str], None] | None = None
) -> dict[str, bool]:
    """Ask y/n per candidate (q stops; undecided ones stay undecided)."""
    say = say or (lambda text: sys.stderr.write(text + "\n"))
    decisions: dict[str, bool] = {}
    for i, name in enumerate(names):
        answer = ask(f"[{i + 1}/{len(names)}] {folder / name}  accept? [y/n/q] ").strip().lower()
        if answer.startswith("q"):
            say("stopped: the remaining candidates stay undecided")
            break
        decisions[name] = answer.startswith("y")
    return decisions


def apply_decisions(candidates: Path, decisions: dict[str, bool], into: Path) -> dict[str, Any]:
    """Record decisions, copy accepted images into ``into``; returns the updated decision record."""
    record_path = candidates / "decisions.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"accepted": [], "rejected": []}
    decided = set(record["accepted"]) | set(record["rejected"])
    into.mkdir(parents=True, exist_ok=True)
    stem = candidates.name
    for name, ok in sorted(decisions.items()):
        if name in decided:
            continue
        record["accepted" if ok else "rejected"].append(name)
        if ok:
            shutil.copy2(candidates / "images" / name, into / f"{stem}_{name}")
    record_path.write_text(json.dumps(record, indent=1))
    return record


# ----- the ``curate`` stage ---------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--generator", help="generator or run to draw candidates from (step 1)")
    parser.add_argument("--candidates", required=True, help="candidate folder (written if empty)")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncation", type=float, default=0.7)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--accept", help="accept list: a file of names/indices, or 0,3,5")
    group.add_argument("--interactive", action="store_true", help="ask y/n for each candidate")
    parser.add_argument("--into", help="folder that collects accepted images (an extra style folder)")
    parser.add_argument("--data", nargs="*", default=[], help="the original style folder(s), for --continue-run")
    parser.add_argument("--continue-run", help="new run directory: continue training with the grown style set")
    parser.add_argument("--continue-kimg", type=float, default=2.0)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int)


def run(args) -> int:
    candidates = Path(args.candidates)
    images = candidates / "images"
    progress = Progress(args.progress)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not images.is_dir() or not any(images.iterdir()):
        if not args.generator:
            raise TrainingError(f"{candidates}: no candidates yet; pass --generator to make them")
        from training.stylegan.generate import generate_set

        generate_set(args.generator, candidates, progress, args.count, args.seed, args.truncation)
        log.info("wrote %d candidates to %s (see grid.png)", args.count, candidates)
    names = sorted(p.name for p in images.iterdir() if p.is_file())
    if args.accept is None and not args.interactive:
        log.info("%d candidates in %s: decide with --accept LIST or --interactive", len(names), candidates)
        return 0
    if not args.into:
        raise TrainingError("--into FOLDER is needed to collect the accepted images")
    if args.interactive:
        decisions = prompt_decisions(names, images)
    else:
        accepted = parse_accept_list(args.accept, names)
        decisions = {n: n in accepted for n in names}
    record = apply_decisions(candidates, decisions, Path(args.into))
    log.info("accepted %d, rejected %d so far (%s)", len(record["accepted"]), len(record["rejected"]), args.into)
    if not args.continue_run:
        return 0
    if not args.generator or not args.data:
        raise TrainingError("--continue-run needs --generator (the run to continue) and --data (style folders)")
    data = [Path(d) for d in [*args.data, args.into]]
    return continue_training(args.generator, data, Path(args.continue_run), args.preset, args.continue_kimg, progress)


def continue_training(generator: str, data: list[Path], run: Path, preset: str, kimg: float, progress: Progress) -> int:
    """Fine-tune the generator in a new run on the original style folders plus the accepted images; returns
    the stage's exit code. A run that was stopped (130) resumes when the same round is run again."""
    from training.stylegan.checkpoint import load_networks
    from training.stylegan.config import PRESETS
    from training.stylegan.train import budget_of, finetune_config, stylegan_stage

    base = load_networks(generator)
    cfg = finetune_config(PRESETS[preset], base)
    abort = AbortFlag()
    with abort_on_signals(abort):
        resume = (run / "options.json").exists()
        summary = stylegan_stage(data, run, cfg, budget_of(cfg, kimg=kimg), progress, abort, base, resume)
    return exit_code(summary)
