"""Run directories, checkpoints, progress and abort: the infrastructure every training stage shares.

A run directory holds ``options.json`` (what was asked), ``log.txt``, ``stats.jsonl`` (one JSON
record per logging step), ``samples/`` (image grids) and ``checkpoints/``:

* ``checkpoints/model.json`` + ``model.safetensors`` — ``{arch, init_kwargs, params, params_ema, step}``:
  enough to rebuild the networks without the training code's state (export and inference read only this).
* ``checkpoints/state.json`` + ``state.safetensors`` — optimizer states, step, RNG states and stage extras:
  what resume needs.

Tensors are stored as safetensors and the rest as JSON (:mod:`training.checkpoints`), so loading a
checkpoint never executes code; earlier versions' pickles (``model.pt``, ``state.pt``) are still read,
through torch's restricted loader. Every file is written to a temporary file and renamed into place,
after checking the disk has room, so an interrupted or failed write never damages the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import checkpoints
from training.errors import DiskFullError, TrainingError

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"  # + model.safetensors (training.checkpoints)
STATE_FILE = "state.json"  # + state.safetensors
LEGACY_FILES = {MODEL_FILE: "model.pt", STATE_FILE: "state.pt"}  # pickles written by earlier versions


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (head.parent / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None


# ----- progress and abort ---------------------------------------------------------------------


class Progress:
    """Progress reporting: a bar on a terminal, JSON lines for the GUI (``--progress json``), or silence."""

    def __init__(self, mode: str = "auto", stream=None) -> None:
        # JSON lines are the machine-readable channel (stdout); bars and logs stay on stderr
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self._bar = None
        self._last_log = 0.0

    def start(self, stage: str, total: int, initial: int = 0) -> None:
        self.stage = stage
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=stage, file=self.stream, dynamic_ncols=True)
        elif self.mode == "json":
            self._emit({"event": "start", "stage": stage, "total": total, "step": initial})

    def update(self, step: int, total: int, **metrics: float) -> None:
        if self.mode == "bar" and self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            self._bar.refresh()
        elif self.mode == "json":
            self._emit({"event": "progress", "stage": self.stage, "step": step, "total": total, **metrics})
        elif self.mode == "log" and time.monotonic() - self._last_log > 10:
            self._last_log = time.monotonic()
            items = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            log.info("%s %d/%d %s", self.stage, step, total, items)

    def finish(self, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.mode == "json":
            self._emit({"event": "done", "stage": self.stage, **info})

    def sample(self, path: Path) -> None:
        """A sample grid was written (the wizard shows the newest)."""
        if self.mode == "json":
            self._emit({"event": "sample", "stage": getattr(self, "stage", None), "path": str(path)})

    def _emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, default=float) + "\n")
        self.stream.flush()


class AbortFlag:
    """Set by the GUI, a signal handler or a test; stages check it between steps, checkpoint and return."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def abort_on_signals(flag: AbortFlag) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into an abort request (the stage then saves and returns) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        log.warning("signal %d: stopping after the current step (a second one kills)", signum)
        flag.request()
        for s, h in previous.items():
            signal.signal(s, h)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----- run directory --------------------------------------------------------------------------


@dataclass
class RunDir:
    """One stage's run directory (see module docstring)."""

    root: Path
    stage: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path | str, stage: str, options: dict[str, Any], resume: bool = True) -> RunDir:
        """Create a run directory, or reopen it for resuming.

        Reopening checks that the stage and the options that shape the networks match: resuming
        into a different configuration would silently mix two experiments.
        """
        root = Path(root)
        run = cls(root, stage, options)
        existing = root / "options.json"
        if existing.exists():
            damaged = f"{existing}: not a run record; restore it, or start a new --run / --out"
            try:
                old = json.loads(existing.read_text())
            except ValueError as exc:
                raise TrainingError(f"{damaged} ({exc})") from exc
            if not isinstance(old, dict):
                raise TrainingError(damaged)
            if old.get("stage") != stage:
                raise TrainingError(f"{root}: holds a '{old.get('stage')}' run, not '{stage}'")
            if not resume and run.has_checkpoint():
                raise TrainingError(f"{root}: already holds a checkpoint; pass --resume or use a new --run")
            changed = {
                k
                for k in set(old.get("options", {})) | set(options)
                if k not in RESUMABLE_CHANGES and old.get("options", {}).get(k) != options.get(k)
            }
            if changed and run.has_checkpoint():
                raise TrainingError(f"{root}: cannot resume with changed options {sorted(changed)}")
        run._created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        (root / "samples").mkdir(exist_ok=True)
        (root / "checkpoints").mkdir(exist_ok=True)
        record = {
            "stage": stage,
            "options": options,
            "options_hash": options_hash(options),
            "commit": git_commit(),
            "torch": torch.__version__,
        }
        atomic_write_text(existing, json.dumps(record, indent=2, default=str))
        run._file_handler = logging.FileHandler(root / "log.txt")
        run._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(run._file_handler)
        return run

    def close(self) -> None:
        """Stop logging into the run; a run this call created that wrote nothing but what :meth:`open` wrote
        (it failed before its first output: bad data, a broken teacher) leaves no folder behind."""
        handler = getattr(self, "_file_handler", None)
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        opened_only = {"options.json", "log.txt", "samples", "checkpoints"}
        if getattr(self, "_created", False) and self.root.is_dir():
            entries = list(self.root.iterdir())
            if {e.name for e in entries} <= opened_only and not any(e.is_dir() and any(e.iterdir()) for e in entries):
                shutil.rmtree(self.root, ignore_errors=True)

    # stats ----------------------------------------------------------------------------------

    def write_stats(self, record: dict[str, Any]) -> None:
        with open(self.root / "stats.jsonl", "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def read_stats(self) -> list[dict[str, Any]]:
        path = self.root / "stats.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # checkpoints ----------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint was written here, complete or not (:meth:`load_checkpoint` tells which)."""
        return any(_existing(self.checkpoint_dir / name) is not None for name in (MODEL_FILE, STATE_FILE))

    def save_checkpoint(self, model: dict[str, Any], state: dict[str, Any]) -> None:
        """Write model and training state atomically (safetensors + JSON). ``state`` gets the RNG states."""
        state = {**state, "rng": capture_rng()}
        for name, record in ((MODEL_FILE, model), (STATE_FILE, state)):
            document, blob = checkpoints.encode(record)
            path = self.checkpoint_dir / name
            _check_free_space(path, len(document) + len(blob))
            _atomic_write_bytes(checkpoints.tensors_path(path), blob)
            _atomic_write_bytes(path, document)  # written last: it marks a complete pair
            (self.checkpoint_dir / LEGACY_FILES[name]).unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(model, state) of the last checkpoint, RNG states restored; None when there is none."""
        if not self.has_checkpoint():
            return None
        missing = [name for name in (MODEL_FILE, STATE_FILE) if _existing(self.checkpoint_dir / name) is None]
        if missing:  # a crash between the two writes, or a lost file: start over, keeping what is there aside
            for name in (MODEL_FILE, STATE_FILE):
                if (found := _existing(self.checkpoint_dir / name)) is not None:
                    for path in (found, checkpoints.tensors_path(found)):
                        if path.exists():
                            path.rename(path.with_name(path.name + ".incomplete"))
            log.warning(
                "%s: incomplete checkpoint (%s missing): kept aside as *.incomplete; training starts over",
                self.checkpoint_dir,
                ", ".join(missing),
            )
            return None
        model = load_model_file(self.checkpoint_dir / MODEL_FILE)
        state = _read_record(self.checkpoint_dir / STATE_FILE)
        if not isinstance(state.get("rng"), dict):
            raise TrainingError(
                f"{self.checkpoint_dir / STATE_FILE}: not a training state (no random generator states)"
            )
        restore_rng(state["rng"])
        return model, state


def _existing(path: Path) -> Path | None:
    """``path`` (a .json record), or the legacy pickle standing in its place, or None."""
    if path.exists():
        return path
    legacy = path.with_name(LEGACY_FILES[path.name]) if path.name in LEGACY_FILES else None
    return legacy if legacy is not None and legacy.is_file() else None


def find_model_file(path: Path | str) -> Path:
    """The model file of a run directory, its ``checkpoints/`` folder, or a file named directly (current or
    legacy format); ``path`` itself when none is found (reading it then gives the clear error)."""
    path = Path(path)
    for folder in (path / "checkpoints", path):
        found = _existing(folder / MODEL_FILE) if folder.is_dir() else None
        if found is not None:
            return found
    return path


def _read_record(path: Path) -> dict[str, Any]:
    found = _existing(path) if path.suffix == ".json" else path
    if found is None:
        raise TrainingError(f"{path}: no such checkpoint")
    return checkpoints.read(found) if found.suffix == ".json" else checkpoints.read_legacy(found)


def load_model_file(path: Path | str) -> dict[str, Any]:
    """Read a ``{arch, init_kwargs, params, params_ema}`` checkpoint (``model.json`` + ``.safetensors``, or an
    earlier version's ``model.pt`` through the restricted loader), with a clear error when it is not one."""
    path = Path(path)
    ckpt = _read_record(path)
    missing = [k for k in ("arch", "init_kwargs", "params") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise TrainingError(f"{path}: not a Stylecast checkpoint (missing {missing})")
    return ckpt


RESUMABLE_CHANGES = {"steps", "kimg", "resume", "progress", "run", "threads", "log_every", "sample_every", "ckpt_every"}


def _check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if free < needed * 1.2 + (16 << 20):
        raise DiskFullError(
            f"{path.parent}: only {free >> 20} MB free, a checkpoint needs about {needed >> 20} MB;"
            " the previous checkpoint is kept. Free some space and resume."
        )


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` for files that are read back with ``weights_only=True`` (StyleGAN snapshots)."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    _check_free_space(path, len(data))
    _atomic_write_bytes(path, data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DiskFullError(f"{path}: writing the checkpoint failed ({exc}); the previous one is kept") from exc


def replace_folder(target: Path, staging: Path) -> None:
    """Put the complete folder ``staging`` in place of ``target`` (when there is one) by renames, so that
    readers find the old folder or the new one, never a mix of both."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: an interrupted write leaves the old
    file or none, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def capture_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class StageContext:
    """What every stage function receives besides its own options."""

    run: RunDir
    progress: Progress
    abort: AbortFlag
    device: str = "cpu"
