"""The main window: live preview, source and style pickers, live settings, recording and virtual camera."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from html import escape
from pathlib import Path

from PySide6.QtCore import QEvent, QSettings, QSize, Qt, Slot
from PySide6.QtGui import QAction, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine.bundle import Bundle, user_models_dir
from engine.pipeline import FrameResult
from engine.session import passthrough_notice, resolve_style
from engine.sources import IMAGE_SUFFIXES
from gui.controller import StreamController

log = logging.getLogger(__name__)

PASSTHROUGH = "(pass-through)"


def to_qimage(image) -> QImage:
    """(H, W, 3) uint8 BGR -> QImage sharing nothing with the numpy buffer."""
    h, w = image.shape[:2]
    return QImage(image.data, w, h, image.strides[0], QImage.Format.Format_BGR888).copy()


def remembered_camera(settings: QSettings) -> str:
    """The camera the window streamed when it was last closed (a streamer's is seldom the first)."""
    camera = str(settings.value("camera", "camera:0"))
    return camera if camera.startswith("camera:") else "camera:0"


class MainWindow(QMainWindow):
    """``settings``: where the user's choices (style, tier, backend, live settings, camera) are kept from
    one start to the next; None keeps nothing (tests, screenshots)."""

    def __init__(self, controller: StreamController, source: str = "demo", settings: QSettings | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.settings = settings
        self.setWindowTitle("Stylecast")
        self.resize(1180, 720)
        self.frames_shown = 0

        self.preview = QLabel("starting…")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(480, 270)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.preview.setStyleSheet("background: #111; color: #aaa;")
        self.preview.setToolTip(
            "Click a face to give it the style chosen in the picker; click it again to give it back the common style"
        )
        self.preview.installEventFilter(self)

        self.source_box = QComboBox()
        self.source_box.setEditable(True)
        self.source_box.addItems(["demo", "camera:0", "camera:1"])
        self.source_box.setCurrentText(source)
        self.source_box.activated.connect(lambda _i: self.start_source(self.source_box.currentText()))
        self.camera_fallback = False  # set by the app when it starts on the first camera
        self.loop_files = QCheckBox("Loop files")
        self.loop_files.setChecked(True)
        self.loop_files.setToolTip("A video file starts over at its end")
        open_file = QPushButton("Open file…")
        open_file.clicked.connect(self._open_file)

        self.style_box = QComboBox()
        self.style_box.setIconSize(QSize(96, 24))  # previews are strips: the face, then each tier
        self.style_box.activated.connect(lambda _i: self._style_chosen())
        self.tier_box = QComboBox()
        self.tier_box.activated.connect(lambda _i: self._apply_style())
        self.backend_box = QComboBox()
        self.backend_box.addItems(["auto", "onnx", "mnn"])
        self.backend_box.activated.connect(lambda _i: self._apply_style())
        self.card = QLabel()
        self.card.setWordWrap(True)
        self.card.setMaximumWidth(320)

        self.intensity = self._slider(100, lambda v: self.controller.update_config(intensity=v / 100))
        self.temporal = self._slider(70, lambda v: self.controller.update_config(temporal_strength=v / 100))
        self.color = self._slider(0, lambda v: self.controller.update_config(color_match=v / 100))
        self.skin_tone = QCheckBox("Keep skin tone")
        self.skin_tone.setChecked(True)
        self.skin_tone.setToolTip(
            "Styles trained to keep the photo's skin tone may lighten or darken the face only within their bound"
        )
        self.skin_tone.toggled.connect(lambda on: self.controller.update_config(skin_tone_limit=None if on else 0.0))

        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._toggle_record)
        snap = QPushButton("Snapshot")
        snap.clicked.connect(self._snapshot)
        self.virtual_cam = QCheckBox("Virtual camera")
        self.virtual_cam.toggled.connect(lambda on: self.controller.set_virtual_camera(on))

        form = QFormLayout()
        src_row = QHBoxLayout()
        src_row.addWidget(self.source_box, 1)
        src_row.addWidget(open_file)
        form.addRow("Source", src_row)
        form.addRow("", self.loop_files)
        form.addRow("Style", self.style_box)
        form.addRow("Tier", self.tier_box)
        form.addRow("Backend", self.backend_box)
        form.addRow("Intensity", self.intensity)
        form.addRow("Smoothing", self.temporal)
        form.addRow("Colour match", self.color)
        form.addRow("", self.skin_tone)
        side = QVBoxLayout()
        side.addLayout(form)
        side.addWidget(self.card)
        side.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.record_button)
        buttons.addWidget(snap)
        side.addLayout(buttons)
        side.addWidget(self.virtual_cam)
        panel = QWidget()
        panel.setLayout(side)
        panel.setFixedWidth(340)
        root = QHBoxLayout()
        root.addWidget(self.preview, 1)
        root.addWidget(panel)
        central = QWidget()
        central.setLayout(root)
        self.setCentralWidget(central)

        train = QAction("Train a new style…", self)
        train.triggered.connect(self.open_wizard)
        reload_styles = QAction("Reload styles", self)
        reload_styles.triggered.connect(self.controller.refresh_styles)
        menu = self.menuBar().addMenu("&Styles")
        menu.addAction(train)
        menu.addAction(reload_styles)

        # events (a style loading, where a recording went) stay 10 s on the left; the live line (frame rate,
        # faces, style) is refreshed every second on the right; each shows its whole text as a tooltip
        self.live_line = QLabel()
        self.statusBar().addPermanentWidget(self.live_line)
        controller.frame_ready.connect(self.show_frame, Qt.ConnectionType.QueuedConnection)
        controller.source_failed.connect(self.source_failed)
        controller.status.connect(self._show_event)
        controller.live_status.connect(self._show_live)
        controller.output_stopped.connect(self._output_stopped)
        controller.styles_changed.connect(self._fill_styles)
        controller.refresh_styles()
        if settings is not None:
            self._restore_settings(settings)

    def _slider(self, value: int, on_change) -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(value)
        slider.valueChanged.connect(on_change)
        return slider

    # ----- styles -----------------------------------------------------------------------------

    @Slot(list)
    def _fill_styles(self, bundles: list[Bundle]) -> None:
        current = self.style_box.currentData()
        self.style_box.clear()
        for b in bundles:
            preview = b.root / b.manifest.preview if b.manifest.preview else None
            icon = QIcon(str(preview)) if preview and preview.is_file() else QIcon()
            self.style_box.addItem(icon, b.manifest.name, b.id)
        self.style_box.addItem(PASSTHROUGH, None)
        index = self.style_box.findData(current) if current else 0
        self.style_box.setCurrentIndex(max(index, 0))
        self._fill_tiers()

    def _fill_tiers(self) -> None:
        self.tier_box.clear()
        self.tier_box.addItem("auto")
        style_id = self.style_box.currentData()
        if style_id is None:
            self.card.setText(passthrough_notice())
            return
        bundle = self.controller.bundles[style_id]
        for tier in bundle.manifest.tiers:
            self.tier_box.addItem(tier.id)
        m = bundle.manifest
        image = f"<br><img src='{(bundle.root / m.preview).as_uri()}' width='288'>" if m.preview else ""
        terms = m.license.split(":")[0].split(". ")[0]  # its first clause: "Research and non-commercial use only"
        self.card.setText(
            f"<b>{escape(m.name)}</b> · version {escape(m.version)}<br>{escape(m.description)}"
            f"<br><i>{escape(terms)}</i>{image}"
        )
        self.card.setToolTip(m.model_card or m.license)  # what it was trained on, its limits, its figures

    def _style_chosen(self) -> None:
        """Another style in the picker: its card and tiers, then the style itself."""
        self._fill_tiers()
        self._apply_style()

    def _apply_style(self) -> None:
        style_id = self.style_box.currentData()
        self.controller.set_style(style_id, self.tier_box.currentText() or "auto", self.backend_box.currentText())

    def select_style(self, style_id: str | None, tier: str = "auto") -> None:
        index = self.style_box.findData(style_id) if style_id else self.style_box.findText(PASSTHROUGH)
        if index >= 0:
            self.style_box.setCurrentIndex(index)
            self._fill_tiers()
            self.tier_box.setCurrentIndex(max(self.tier_box.findText(tier), 0))
            self._apply_style()

    def select_first_style(self, requested: str = "auto") -> None:
        """The style the window starts with: the one asked for; else the one it showed when it was last
        closed, with its tier, while that is still installed; else the default (engine.session.resolve_style)."""
        tier = "auto"
        remembered = str(self.settings.value("style", "")) if self.settings is not None else ""
        if requested == "auto" and (remembered == "none" or remembered in self.controller.bundles):
            requested, tier = remembered, str(self.settings.value("tier", "auto"))
        bundle = resolve_style(requested, self.controller.registry) if requested != "none" else None
        self.select_style(bundle.id if bundle else None, tier)

    # ----- kept between starts ----------------------------------------------------------------

    def _kept_controls(self) -> tuple[dict[str, QSlider], dict[str, QCheckBox]]:
        """The sliders and switches kept between starts, by their settings key."""
        sliders = {"intensity": self.intensity, "smoothing": self.temporal, "colour_match": self.color}
        return sliders, {"keep_skin_tone": self.skin_tone, "loop_files": self.loop_files}

    def _restore_settings(self, settings: QSettings) -> None:
        """The live settings as the user left them; a value that does not read back keeps its default."""
        sliders, switches = self._kept_controls()
        for key, slider in sliders.items():
            value = str(settings.value(key, slider.value()))
            slider.setValue(int(value) if value.isdigit() else slider.value())  # the slider bounds it
        for key, box in switches.items():
            box.setChecked(str(settings.value(key, box.isChecked())).lower() != "false")
        self.backend_box.setCurrentIndex(max(self.backend_box.findText(str(settings.value("backend", "auto"))), 0))

    def _save_settings(self, settings: QSettings) -> None:
        settings.setValue("style", self.style_box.currentData() or "none")
        settings.setValue("tier", self.tier_box.currentText() or "auto")
        settings.setValue("backend", self.backend_box.currentText())
        sliders, switches = self._kept_controls()
        for key, slider in sliders.items():
            settings.setValue(key, slider.value())
        for key, box in switches.items():
            settings.setValue(key, box.isChecked())
        if self.controller.source_spec and self.controller.source_spec.startswith("camera:"):
            settings.setValue("camera", self.controller.source_spec)
        settings.sync()

    # ----- frames and actions -----------------------------------------------------------------

    @Slot(str)
    def source_failed(self, failed: str) -> None:
        """A source could not be opened: the preview stops showing the previous stream. The camera the
        window starts with falls back to the demo (none may be plugged in); a source the user chose stays
        chosen, its error on the status line."""
        self.preview.setPixmap(QPixmap())
        self.preview.setText(f"could not open {failed}")
        if self.camera_fallback and failed.startswith("camera:"):
            self.source_box.setCurrentText("demo")
            self.start_source("demo")
        self.camera_fallback = False

    @Slot(str)
    def _show_event(self, text: str) -> None:
        self.statusBar().showMessage(text, 10_000)
        self.statusBar().setToolTip(text)

    @Slot(str)
    def _show_live(self, text: str) -> None:
        self.live_line.setText(text if len(text) <= 90 else text[:89] + "…")
        self.live_line.setToolTip(text)

    @Slot(str)
    def _output_stopped(self, name: str) -> None:
        """The recorder or the virtual camera failed (full disk, no loopback device): its control goes off."""
        control = self.record_button if name == self.controller.recorder.name else self.virtual_cam
        control.blockSignals(True)
        control.setChecked(False)
        control.blockSignals(False)
        if control is self.record_button:
            self.record_button.setText("Record")

    def start_source(self, spec: str) -> bool:
        self.camera_fallback = False  # the user's choice (or the fallback's): it stays chosen
        return self.controller.start(spec, loop=self.loop_files.isChecked())

    def face_at(self, x: float, y: float) -> int | None:
        """Track id of the face under a point of the preview label (the frame is scaled to fit, centred)."""
        result = self.controller.last_result
        if result is None or result.image is None:
            return None
        fh, fw = result.image.shape[:2]
        scale = min(self.preview.width() / fw, self.preview.height() / fh)
        fx = (x - (self.preview.width() - fw * scale) / 2) / scale
        fy = (y - (self.preview.height() - fh * scale) / 2) / scale
        hits = [f for f in result.faces if f.box[0] <= fx <= f.box[2] and f.box[1] <= fy <= f.box[3]]
        return min(hits, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).track_id if hits else None

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        """A click on a face in the preview gives that face the style chosen in the picker."""
        if watched is self.preview and event.type() == QEvent.Type.MouseButtonPress:
            track_id = self.face_at(event.position().x(), event.position().y())
            if track_id is not None:
                chosen = self.style_box.currentData()
                own = self.controller.pipeline.own_style(track_id)
                self.controller.set_face_style(track_id, None if own == chosen else chosen)
                return True
        return super().eventFilter(watched, event)

    def show_frame(self, result: FrameResult) -> None:
        """Show the newest result (the signal's own may already be stale: a newer one replaced it)."""
        result = self.controller.take_newest() or result
        if result.image is None:
            return
        pixmap = QPixmap.fromImage(to_qimage(result.image))
        self.preview.setPixmap(
            pixmap.scaled(
                self.preview.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
            )
        )
        self.frames_shown += 1

    def _open_file(self) -> None:
        images = " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a video or image", "", f"Videos and images (*.mp4 *.mov *.avi *.mkv *.webm {images})"
        )
        if path:
            self.source_box.setCurrentText(path)
            self.start_source(path)

    def _toggle_record(self, on: bool) -> None:
        if on:
            folder = Path.home() / "Videos"
            folder = folder if folder.is_dir() else Path.home()
            self.controller.start_recording(folder / f"stylecast-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
            self.record_button.setText("Stop recording")
        else:
            self.controller.stop_recording()
            self.record_button.setText("Record")

    def _snapshot(self) -> None:
        folder = Path.home() / "Pictures"
        folder = folder if folder.is_dir() else Path.home()
        path = folder / f"stylecast-{datetime.now():%Y%m%d-%H%M%S-%f}.png"  # apart by less than a second too
        self.controller.snapshot(path)
        self.statusBar().showMessage(f"snapshot: {path}")

    def open_wizard(self) -> None:
        from gui.wizard import TrainingWizard

        wizard = TrainingWizard(user_models_dir(), self)
        wizard.style_ready.connect(self._style_trained)
        wizard.show()
        return wizard

    @Slot(str)
    def _style_trained(self, style_id: str) -> None:
        self.controller.refresh_styles()
        self.select_style(style_id)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.settings is not None:
            self._save_settings(self.settings)
        self.controller.shutdown()
        super().closeEvent(event)
