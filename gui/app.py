"""Starts the Qt application and the main window."""

from __future__ import annotations

import logging
import os
import sys

from engine.allocator import keep_frame_buffers_in_heap

log = logging.getLogger(__name__)


def run_app(source: str = "auto", style: str = "auto") -> int:
    # A non-headless cv2 points Qt at its own plugins, which breaks PySide6; never inherit that.
    os.environ.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    keep_frame_buffers_in_heap()  # before Qt's and the style loaders' threads (engine.allocator says why)
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.controller import StreamController
    from gui.main_window import MainWindow, remembered_camera

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Stylecast")
    controller = StreamController()
    settings = QSettings("Stylecast", "Stylecast")
    start = remembered_camera(settings) if source == "auto" else source
    window = MainWindow(controller, start, settings)
    window.select_first_style(style)
    window.camera_fallback = source == "auto"  # no camera: the demo keeps the window useful
    controller.start(start)
    window.show()
    return app.exec()
