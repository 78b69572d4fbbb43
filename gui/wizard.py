"""Training wizard: pick data and a preset, run the training pipeline, install and switch to the new style;
or curate a StyleGAN run's generated images.

Training runs as a separate process (``main.py train all`` or ``train curate``, ``--progress json``) so the
window never loads torch and stays responsive; its JSON-line progress drives the page. Cancelling sends SIGTERM
without waiting; the stage checkpoints before it exits, so a later run resumes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

MAIN = Path(__file__).resolve().parent.parent / "main.py"
SOURCES = {
    "teacher": "A pretrained teacher (a folder with teacher.json) and your face photos or videos — recommended",
    "styles": "A folder of style images (StyleGAN fine-tuning → pairs → students; needs a GPU for a usable style)",
    "pairs": "A folder of (photo, stylized) pairs",
    "ink": "Real face photos with the procedural ink teacher",
}
STOPPED_EXIT = 130  # a training stopped on request (training.loop.ABORTED_EXIT): its checkpoint resumes
# Not a `train all` source: the CLI's curation round for a StyleGAN run (CuratePage)
CURATE = "Curate a StyleGAN run: accept or reject its generated images, grow the style set, train on"
PRESETS = {
    "tiny": "seconds, for a smoke test",
    "cpu": "a laptop CPU",
    "gpu": "full quality, needs CUDA",
}
# What the cpu preset costs per route, said before anything starts (measured figures: docs/styles.md).
ROUTE_NOTES = {
    "teacher": "cpu preset: 78 minutes measured end to end on a 2-core AVX-512 CPU with bf16, for the slowest"
    " teacher (a fine-tuned run took 31): prepare, teacher pairs, three tiers side by side, a head mask, export."
    " An AVX2-only CPU trains a third of the steps in fp32. It needs a few dozen faces or more: press Estimate"
    " for this machine and your data.",
    "styles": "This route trains StyleGAN2 and U-GAT-IT: on a CPU it takes hours and gives no usable style"
    " (docs/stylegan.md). It needs a GPU and the gpu preset.",
    "pairs": "cpu preset: the light and standard tiers, about 80 minutes on a 2-core AVX-512 CPU with bf16"
    " (estimated from measured steps).",
    "ink": "cpu preset: the procedural teacher, then two tiers one after the other (66-82 minutes each on 2 cores).",
}


def training_available() -> bool:
    """Training needs the ``train`` extra (torch); the installer ships the live app only."""
    return importlib.util.find_spec("torch") is not None and MAIN.is_file()


def build_command(
    source: str, data: str, faces: str, preset: str, style_id: str, models_dir: Path, teacher: str = ""
) -> list[str]:
    """The ``main.py train all`` command line for the wizard's choices (teacher route: ``data`` holds faces)."""
    args = [str(MAIN), "train", "all", "--source", source, "--data", data, "--preset", preset]
    args += ["--style-id", style_id, "--name", style_id, "--install-to", str(models_dir), "--progress", "json"]
    if faces:
        args += ["--faces", faces]
    if source == "teacher":
        args += ["--teacher", teacher]
    return args


def build_estimate_command(source: str, data: str, preset: str, teacher: str = "") -> list[str]:
    """The ``main.py train estimate`` command line: the route's time on this machine, measured."""
    args = [str(MAIN), "train", "estimate", "--source", source, "--data", data, "--preset", preset]
    return args + (["--teacher", teacher] if source == "teacher" else [])


def describe_estimate(record: dict) -> str:
    """One sentence for a ``train estimate`` record."""
    parts = ", ".join(f"{name} {minutes:g}" for name, minutes in record["parts"].items())
    text = (
        f"Measured on this machine ({record['cpu']}, {record['threads']} threads): about {record['minutes']:g}"
        f" minutes ({parts}; {record['faces']} faces, {record['steps']} steps of {'+'.join(record['tiers'])})."
    )
    return text + (f" Too little data: {record['warning']}." if record.get("warning") else "")


def build_curate_command(
    generator: str, count: int, accept: list[int] | None = None, styles: str = "", kimg: float = 0.0
) -> list[str]:
    """The ``main.py train curate`` command line for a StyleGAN run: without ``accept`` it makes the
    candidates; with it, it records the decisions, grows the style set and (``kimg`` > 0) trains on."""
    folders = curation_folders(generator)
    args = [str(MAIN), "train", "curate", "--generator", generator, "--candidates", str(folders["candidates"])]
    args += ["--count", str(count), "--progress", "json"]
    if accept is None:
        return args
    args += ["--accept", ",".join(map(str, accept)), "--into", str(folders["accepted"])]
    if kimg > 0:
        args += ["--data", styles, "--continue-run", str(folders["continued"]), "--continue-kimg", f"{kimg:g}"]
    return args


def curation_folders(generator: str) -> dict[str, Path]:
    """Where a curation round of the run ``generator`` keeps its candidates, the accepted images and the
    continued run: beside the run, so a second round of the continued run chains on naturally."""
    run = Path(generator)
    return {part: run.parent / f"{run.name}_{part}" for part in ("candidates", "accepted", "continued")}


def validate(source: str, data: str, faces: str, style_id: str, teacher: str = "") -> str | None:
    """A message for what is wrong with the choices, or None when they can run."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", style_id or ""):
        return "The style name may use letters, digits, '-' and '_' only."
    if not data or not Path(data).is_dir():
        return "Choose an existing data folder."
    if not any(p.is_file() for p in Path(data).rglob("*")):
        return f"{data} is empty."
    if source == "styles" and not (faces and Path(faces).is_dir()):
        return "Training from style images needs a folder of real face photos or videos to translate."
    if source == "teacher":
        return _teacher_problem(teacher)
    return None


def _teacher_problem(teacher: str) -> str | None:
    """A first check of a teacher folder (the training process validates it fully before any work)."""
    path = Path(teacher) / "teacher.json" if teacher else None
    if path is None or not path.is_file():
        return "Choose a teacher folder: it holds a teacher.json beside the model file."
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"{path} is not readable JSON: {exc}"
    if not isinstance(spec, dict) or spec.get("schema") != 1 or spec.get("kind") != "stylizer":
        return f"{path} does not describe a stylizer teacher of schema 1."
    return None


def _folder_row(edit: QLineEdit, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    browse = QPushButton("Browse…")
    browse.clicked.connect(
        lambda: edit.setText(QFileDialog.getExistingDirectory(parent, "Choose a folder") or edit.text())
    )
    row.addWidget(browse)
    return row


class ChoicePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("What do you want to train from?")
        layout = QVBoxLayout(self)
        self.buttons = {}
        for key, text in {**SOURCES, "curate": CURATE}.items():
            button = QRadioButton(text)
            self.buttons[key] = button
            layout.addWidget(button)
        self.buttons["teacher"].setChecked(True)  # the route a CPU can afford
        if not training_available():
            note = QLabel(
                "Training needs the training extra (PyTorch), which this installation does not have. "
                "Install Stylecast from source with `make setup` to train styles."
            )
            note.setWordWrap(True)
            layout.addWidget(note)

    def choice(self) -> str:
        return next(k for k, b in self.buttons.items() if b.isChecked())

    def isComplete(self) -> bool:  # noqa: N802 - Qt's name
        return training_available()

    def nextId(self) -> int:  # noqa: N802
        return CURATE_PAGE if self.choice() == "curate" else DATA_PAGE


class DataPage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Data and settings")
        form = QFormLayout(self)
        self.data = QLineEdit()
        self.faces = QLineEdit()
        self.teacher = QLineEdit()
        self.style_id = QLineEdit("my_style")
        self.preset = QComboBox()
        for key, text in PRESETS.items():
            self.preset.addItem(f"{key} — {text}", key)
        self.preset.setCurrentIndex(1)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.estimate_button = QPushButton("Estimate the time on this machine")
        self.estimate_button.clicked.connect(self.start_estimate)
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self._estimator: QProcess | None = None
        self.error = QLabel()
        self.error.setStyleSheet("color: #c33;")
        form.addRow("Data folder (faces for the teacher route)", _folder_row(self.data, self))
        form.addRow("Real faces (style-image route)", _folder_row(self.faces, self))
        form.addRow("Teacher folder (teacher route)", _folder_row(self.teacher, self))
        form.addRow("Style name", self.style_id)
        form.addRow("Preset", self.preset)
        form.addRow(self.note)
        form.addRow(self.estimate_button)
        form.addRow(self.estimate)
        form.addRow(self.error)

    def initializePage(self) -> None:  # noqa: N802
        choice = self.wizard().choice_page.choice()
        self.note.setText(ROUTE_NOTES[choice])
        self.estimate_button.setEnabled(choice != "styles")  # needs a GPU: nothing to estimate on a CPU
        self.estimate.setText("")
        self.error.setText("")  # an earlier route's complaint

    def start_estimate(self) -> None:
        """Measure the chosen route on this machine in a background process (about 20 s)."""
        choice = self.wizard().choice_page.choice()
        message = validate(choice, self.data.text(), self.faces.text(), self.style_id.text(), self.teacher.text())
        if message is not None:
            self.error.setText(message)
            return
        self.error.setText("")
        if self._estimator is not None and self._estimator.state() != QProcess.ProcessState.NotRunning:
            return
        self.estimate.setText("measuring this machine…")
        args = build_estimate_command(choice, self.data.text(), self.preset.currentData(), self.teacher.text())
        self._estimator = QProcess(self)
        self._estimator.finished.connect(self._estimated)
        self._estimator.start(sys.executable, args)

    def _estimated(self, code: int, _status) -> None:
        out = bytes(self._estimator.readAllStandardOutput()).decode(errors="replace").splitlines()
        records = [json.loads(line) for line in out if line.startswith('{"event": "estimate"')]
        if code == 0 and records:
            self.estimate.setText(describe_estimate(records[-1]))
        else:
            err = bytes(self._estimator.readAllStandardError()).decode(errors="replace").strip().splitlines()
            self.estimate.setText(f"could not estimate: {err[-1] if err else f'exit code {code}'}")

    def validatePage(self) -> bool:  # noqa: N802
        choice = self.wizard().choice_page.choice()
        message = validate(choice, self.data.text(), self.faces.text(), self.style_id.text(), self.teacher.text())
        self.error.setText(message or "")
        return message is None


SAMPLE_WIDTH = 520  # the newest sample grid is shown at this width
CHOICE_PAGE, DATA_PAGE, RUN_PAGE, CURATE_PAGE = range(4)


class ProcessPage(QWizardPage):
    """A page that runs one training process and shows its JSON-line progress, its log and its newest
    sample grid; Stop asks it to checkpoint and exit."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.setTitle(title)
        self.layout_ = QVBoxLayout(self)
        self.stage = QLabel("waiting")
        self.bar = QProgressBar()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.sample = QLabel("sample grids appear here as training writes them")
        self.sample.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.cancel = QPushButton("Stop (resumable)")
        self.layout_.addWidget(self.stage)
        self.layout_.addWidget(self.bar)
        self.layout_.addWidget(self.sample, 2)
        self.layout_.addWidget(self.log, 1)
        self.layout_.addWidget(self.cancel)
        self.process: QProcess | None = None
        self.last_error = ""  # the newest ERROR line the process logged
        self._stopping = False
        self._buffer = b""
        self.cancel.clicked.connect(self.stop)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self, args: list[str]) -> None:
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.last_error = ""
        self._stopping = False
        self.cancel.setEnabled(True)
        self.process.finished.connect(self._finished)
        self.process.start(sys.executable, args)

    def handle_line(self, line: str) -> None:
        """Apply one JSON progress record (see training.runs.Progress) to the page."""
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            self.log.appendPlainText(line)
            return
        event = record.get("event")
        if event in ("start", "progress"):
            self.stage.setText(f"{record.get('stage')}: step {record.get('step')} of {record.get('total')}")
            self.bar.setMaximum(int(record.get("total") or 0))
            self.bar.setValue(int(record.get("step") or 0))
        elif event == "sample":
            self.show_sample(Path(record.get("path", "")), record.get("stage"))
        elif event == "done":
            self.log.appendPlainText(f"{record.get('stage')} finished")
        self.handle_record(record)
        self.completeChanged.emit()

    def handle_record(self, record: dict) -> None:
        """What this page does with a record beyond showing progress."""

    def show_sample(self, path: Path, stage: str | None) -> None:
        pixmap = QPixmap(str(path))
        if pixmap.isNull():  # already replaced or unreadable: keep the last one shown
            return
        self.sample.setPixmap(pixmap.scaledToWidth(min(SAMPLE_WIDTH, pixmap.width())))
        self.sample.setToolTip(f"{stage}: {path}")

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode(errors="replace").rstrip()
        self.log.appendPlainText(text)
        errors = [line for line in text.splitlines() if " ERROR " in line]
        if errors:
            self.last_error = errors[-1].split(": ", 1)[-1]

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.handle_line(line.decode(errors="replace"))

    def _finished(self, code: int, _status) -> None:
        if code == 0:
            self.stage.setText("finished")
        elif code == STOPPED_EXIT or self._stopping:  # a stop asked for (a kill before the handler is one too)
            self.stage.setText("stopped; the same training started again resumes from its checkpoint")
        else:  # an error: starting again would meet it again, so say what it was
            self.stage.setText(f"failed (exit code {code}): {self.last_error or 'see the log below'}")
        self.cancel.setEnabled(False)
        self.completeChanged.emit()

    def stop(self) -> None:
        """Ask a running training process to checkpoint and stop (SIGTERM), without waiting for it: the
        window stays responsive and ``finished`` reports the exit."""
        if not self.running:
            return
        self.stage.setText("stopping: saving a checkpoint…")
        self._stopping = True
        self.process.terminate()


class RunPage(ProcessPage):
    """Runs ``train all`` for the chosen route; complete when it installed its style."""

    def __init__(self) -> None:
        super().__init__("Training")
        self.installed: str | None = None

    def initializePage(self) -> None:  # noqa: N802
        w = self.wizard()
        data = w.data_page
        args = build_command(
            w.choice_page.choice(),
            data.data.text(),
            data.faces.text(),
            data.preset.currentData(),
            data.style_id.text(),
            w.models_dir,
            data.teacher.text(),
        )
        if self.running:  # Back then Next: the run in progress goes on, no second one on the same folder
            self.log.appendPlainText("training is still running; stop it before starting another")
            return
        self.start(args)

    def start(self, args: list[str]) -> None:
        self.installed = None
        super().start(args)

    def handle_record(self, record: dict) -> None:
        if record.get("event") == "installed":
            self.installed = record.get("style_id")
            self.log.appendPlainText(f"installed style {self.installed} in {record.get('path')}")

    def stop(self) -> None:
        """A run that already installed its style is left to exit by itself."""
        if self.installed is None:
            super().stop()

    def isComplete(self) -> bool:  # noqa: N802
        return self.installed is not None

    def nextId(self) -> int:  # noqa: N802
        return -1


THUMB = 112  # candidate thumbnails on the curation page


class CuratePage(ProcessPage):
    """The CLI's curation round (``train curate``) for a StyleGAN run: make candidates, let the person tick
    the ones to keep, copy those into the grown style set and train on it in a new run beside the first.
    Complete once a round's decisions are recorded (and its training, when asked for, finished)."""

    def __init__(self) -> None:
        super().__init__("Curate a StyleGAN run")
        self.generator = QLineEdit()
        self.styles = QLineEdit()
        self.count = QSpinBox()
        self.count.setRange(4, 256)
        self.count.setValue(16)
        self.kimg = QDoubleSpinBox()
        self.kimg.setRange(0.0, 1000.0)
        self.kimg.setValue(2.0)
        self.kimg.setToolTip("thousands of images to train on after the round; 0 records the decisions only")
        self.make = QPushButton("Make candidates")
        self.make.clicked.connect(self.make_candidates)
        self.decide = QPushButton("Keep the ticked ones, reject the rest")
        self.decide.clicked.connect(self.apply_decisions)
        self.candidates = QListWidget()
        self.candidates.setViewMode(QListWidget.ViewMode.IconMode)
        self.candidates.setIconSize(QSize(THUMB, THUMB))
        self.candidates.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.error = QLabel()
        self.error.setStyleSheet("color: #c33;")
        form = QFormLayout()
        form.addRow("StyleGAN run", _folder_row(self.generator, self))
        form.addRow("Style images it was trained on", _folder_row(self.styles, self))
        form.addRow("Candidates", self.count)
        form.addRow("Then train on (kimg)", self.kimg)
        buttons = QHBoxLayout()
        buttons.addWidget(self.make)
        buttons.addWidget(self.decide)
        self.layout_.insertLayout(0, form)
        self.layout_.insertLayout(1, buttons)
        self.layout_.insertWidget(2, self.error)
        self.layout_.insertWidget(3, self.candidates, 3)
        self._deciding = False
        self.decided = False

    def make_candidates(self) -> None:
        if self.running:
            return
        if not self.generator.text() or not Path(self.generator.text()).exists():
            self.error.setText("Choose a StyleGAN run folder (or a generator file).")
            return
        self.error.setText("")
        self._deciding = False
        self.start(build_curate_command(self.generator.text(), self.count.value()))

    def apply_decisions(self) -> None:
        if self.running or not self.candidates.count():
            return
        kimg = self.kimg.value()
        if kimg > 0 and not (self.styles.text() and Path(self.styles.text()).is_dir()):
            self.error.setText("Training on needs the style image folder the run was trained on.")
            return
        self.error.setText("")
        items = [self.candidates.item(i) for i in range(self.candidates.count())]
        ticked = [i for i, item in enumerate(items) if item.checkState() == Qt.CheckState.Checked]
        self._deciding = True
        self.start(build_curate_command(self.generator.text(), self.count.value(), ticked, self.styles.text(), kimg))

    def show_candidates(self) -> None:
        """The candidates as tickable thumbnails; those decided in an earlier round are shown, not asked."""
        folder = curation_folders(self.generator.text())["candidates"]
        record_path = folder / "decisions.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"accepted": [], "rejected": []}
        self.candidates.clear()
        for path in sorted(p for p in (folder / "images").glob("*") if p.is_file()):
            thumb = QPixmap(str(path)).scaled(
                THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            item = QListWidgetItem(QIcon(thumb), path.stem)
            if path.name in record["accepted"] or path.name in record["rejected"]:
                item.setText(f"{path.stem}: {'kept' if path.name in record['accepted'] else 'rejected'}")
                item.setFlags(Qt.ItemFlag.NoItemFlags)
            else:
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
            self.candidates.addItem(item)

    def _finished(self, code: int, status) -> None:
        super()._finished(code, status)
        if code == 0:
            self.show_candidates()
            self.decided = self.decided or self._deciding
            if self._deciding:
                folders = curation_folders(self.generator.text())
                continued = folders["continued"]
                self.log.appendPlainText(
                    f"kept images are in {folders['accepted']}"
                    + (f"; the run trained on them is {continued}" if continued.exists() else "")
                )
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802
        return self.decided and not self.running

    def nextId(self) -> int:  # noqa: N802
        return -1


class TrainingWizard(QWizard):
    style_ready = Signal(str)

    def __init__(self, models_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a new style")
        self.setMinimumSize(820, 640)  # the data page's notes wrap over several lines
        self.models_dir = models_dir
        self.choice_page = ChoicePage()
        self.data_page = DataPage()
        self.run_page = RunPage()
        self.curate_page = CuratePage()
        for page_id, page in zip(
            (CHOICE_PAGE, DATA_PAGE, RUN_PAGE, CURATE_PAGE),
            (self.choice_page, self.data_page, self.run_page, self.curate_page),
        ):
            self.setPage(page_id, page)
        self.finished.connect(self._done)

    def _done(self, _result: int) -> None:
        self.run_page.stop()
        self.curate_page.stop()
        if self.run_page.installed:
            self.style_ready.emit(self.run_page.installed)
