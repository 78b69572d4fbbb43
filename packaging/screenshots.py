"""Screenshots of the real window for the docs: the main window streaming a style, the style picker, and
each page of the training wizard.

Run under a display (a virtual one is enough)::

    apt-get install -y xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-cursor0
    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python packaging/screenshots.py --style anime --out docs/screenshots

The window runs the public-domain demo source, so the pictures hold no research data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# `train estimate` of the hayao teacher route on the shared faces and videos (docs/window.md).
RECORDED_ESTIMATE = {
    "minutes": 69.6,
    "parts": {"prepare": 0.6, "export": 5.0, "pairs": 9.5, "head_mask": 8.7, "students": 45.7},
    "faces": 713,
    "tiers": ["light", "standard", "high"],
    "steps": 1600,
    "threads": 2,
    "cpu": "AMD EPYC",
}


def _pump(app, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def _grab_screen(app, path: Path) -> None:
    app.primaryScreen().grabWindow(0).save(str(path))
    print(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="screenshots", description=__doc__)
    parser.add_argument("--style", default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--seconds", type=float, default=12.0, help="streaming time before the first shot")
    args = parser.parse_args(argv)
    os.environ.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    from PySide6.QtWidgets import QApplication

    from engine.session import resolve_style
    from gui.controller import StreamController
    from gui.main_window import MainWindow
    from gui.wizard import describe_estimate

    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    controller = StreamController()
    window = MainWindow(controller, "demo")
    window.resize(1180, 720)
    window.move(0, 0)
    bundle = resolve_style(args.style)
    window.select_style(bundle.id if bundle else None)
    window.show()
    controller.start("demo")
    _pump(app, args.seconds)
    _grab_screen(app, args.out / f"window_{bundle.id if bundle else 'passthrough'}.png")

    window.style_box.showPopup()
    _pump(app, 1.0)
    _grab_screen(app, args.out / "style_picker.png")
    window.style_box.hidePopup()

    wizard = window.open_wizard()
    wizard.move(60, 40)
    wizard.resize(820, 560)
    _pump(app, 1.0)
    _grab_screen(app, args.out / "wizard_1_source.png")
    wizard.choice_page.buttons["teacher"].setChecked(True)
    wizard.next()
    page = wizard.data_page
    page.data.setText("~/Videos/my_webcam_clips")
    page.teacher.setText("../shared/teachers/hayao")
    page.style_id.setText("my_hayao")
    page.estimate.setText(describe_estimate(RECORDED_ESTIMATE))  # measuring takes 20 s and the research data
    _pump(app, 1.0)
    _grab_screen(app, args.out / "wizard_2_data.png")
    run = wizard.run_page  # shown with recorded progress lines: entering it would start a real training
    for line in (
        {"event": "start", "stage": "prepare", "step": 0, "total": 20},
        {"event": "done", "stage": "prepare"},
        {"event": "done", "stage": "pairs:cute"},
        {"event": "progress", "stage": "student:light+standard+high", "step": 212, "total": 600},
    ):
        run.handle_line(json.dumps(line))
    run.setParent(None)
    run.resize(820, 480)
    run.show()
    _pump(app, 1.0)
    run.grab().save(str(args.out / "wizard_3_training.png"))
    print(args.out / "wizard_3_training.png")
    run.close()
    wizard.close()
    _curation_page(app, window, args.out / "wizard_4_curation.png")
    window.close()
    return 0


def _curation_page(app, window, path: Path) -> None:
    """The curation page with real candidates, of an untrained 32² test generator: a trained StyleGAN run
    takes hours on a CPU (docs/stylegan.md), so the pictures show the page, not a style."""
    import tempfile

    import torch
    from PySide6.QtCore import Qt

    from training.stylegan.checkpoint import save_generator
    from training.stylegan.networks import Generator, GeneratorConfig

    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=32, z_dim=64, w_dim=64, mapping_layers=2, channel_base=512, channel_max=64)
    Path("out").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="out") as tmp:  # a relative path: the picture names no machine folder
        wizard = window.open_wizard()
        wizard.move(60, 40)
        wizard.resize(820, 640)
        wizard.choice_page.buttons["curate"].setChecked(True)
        wizard.next()
        page = wizard.curate_page
        page.generator.setText(
            str(save_generator(Generator(cfg).eval(), Path(os.path.relpath(tmp)) / "my_style_run.pt"))
        )
        page.styles.setText("~/Pictures/my_style_images")
        page.count.setValue(12)
        page.make_candidates()
        deadline = time.monotonic() + 120
        while page.candidates.count() < 12 and time.monotonic() < deadline:
            _pump(app, 0.2)
        for i in (1, 4, 5, 9):
            page.candidates.item(i).setCheckState(Qt.CheckState.Checked)
        _pump(app, 1.0)
        _grab_screen(app, path)
        wizard.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
