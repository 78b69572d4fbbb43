import json

import numpy as np
import pytest

from engine.bundle import BundleRegistry
from tests.gui.conftest import wait_until

pytestmark = pytest.mark.gui


@pytest.fixture()
def window(qapp, fixture_bundle_root):
    from gui.controller import StreamController
    from gui.main_window import MainWindow

    controller = StreamController(BundleRegistry([fixture_bundle_root]))
    win = MainWindow(controller, "demo")
    win.show()
    yield win
    win.close()


def test_preview_shows_stylized_frames_and_styles_hot_swap(qapp, window):
    c = window.controller
    assert [window.style_box.itemData(i) for i in range(window.style_box.count())] == ["fixture", None]
    window.select_style("fixture")
    assert c.start("demo")
    assert wait_until(
        qapp, lambda: c.last_result is not None and c.last_result.style == "fixture" and window.frames_shown > 3
    )
    assert not window.preview.pixmap().isNull()
    c.set_style("fixture", tier="standard", backend="mnn")
    assert wait_until(qapp, lambda: c.last_result.tier == "standard" and c.last_result.backend == "mnn")
    window.intensity.setValue(0)
    assert c.pipeline.config.intensity == 0.0
    window.skin_tone.setChecked(False)
    assert c.pipeline.config.skin_tone_limit == 0.0  # the guard off
    window.skin_tone.setChecked(True)
    assert c.pipeline.config.skin_tone_limit is None  # the style's own bound


def test_recording_and_snapshot_while_streaming(qapp, window, tmp_path):
    c = window.controller
    assert c.start("demo")
    assert wait_until(qapp, lambda: window.frames_shown > 2)
    c.start_recording(tmp_path / "rec.mp4")
    c.snapshot(tmp_path / "snap.png")
    assert wait_until(qapp, lambda: c.snapshots.saved)
    start = window.frames_shown
    assert wait_until(qapp, lambda: window.frames_shown > start + 10)
    report = c.runtime.report()
    c.stop_recording()
    assert not c.recorder.attached
    rec = tmp_path / "rec.mp4"
    assert wait_until(qapp, lambda: rec.exists() and rec.stat().st_size > 1000), (report, c.recorder.last_error)


def test_a_missing_camera_is_a_status_not_a_crash_and_never_blocks_the_window(qapp, window, monkeypatch):
    import time

    from gui import controller as controller_module

    messages, failed = [], []
    window.controller.status.connect(messages.append)
    window.controller.source_failed.connect(failed.append)
    real = controller_module.open_source

    def slow_open(spec, **kw):
        time.sleep(1.5)  # a camera driver that takes its time
        return real(spec, **kw)

    monkeypatch.setattr(controller_module, "open_source", slow_open)
    window.camera_fallback = True  # as the app does when it starts on the first camera
    t0 = time.monotonic()
    assert window.controller.start("camera:7")  # "opening": the answer comes later
    assert time.monotonic() - t0 < 0.5
    assert wait_until(qapp, lambda: failed == ["camera:7"])
    assert any("camera" in m and "opening" not in m for m in messages)
    assert wait_until(qapp, lambda: window.controller.runtime is not None)
    assert window.source_box.currentText() == "demo"
    # a camera the user chooses later stays chosen: its failure is reported, not replaced by the demo
    window.source_box.setCurrentText("camera:7")
    window.start_source("camera:7")
    assert wait_until(qapp, lambda: failed == ["camera:7", "camera:7"])
    assert wait_until(qapp, lambda: "could not open camera:7" in window.preview.text())
    assert window.controller.runtime is None and window.source_box.currentText() == "camera:7"
    assert window.live_line.text().startswith("no stream:")  # not the demo's last frame rate


def test_wizard_validation_and_progress_parsing(qapp, window, tmp_path):
    from gui.wizard import build_command, validate

    assert "letters" in validate("styles", str(tmp_path), "", "bad name!")
    assert "existing" in validate("styles", str(tmp_path / "nope"), "", "ok")
    assert "empty" in validate("styles", str(tmp_path), "", "ok")
    (tmp_path / "a.png").write_bytes(b"x")
    assert "needs a folder of real face photos" in validate("styles", str(tmp_path), "", "ok")
    assert validate("styles", str(tmp_path), str(tmp_path), "ok") is None
    assert validate("ink", str(tmp_path), "", "ok") is None
    assert "teacher.json" in validate("teacher", str(tmp_path), "", "ok", str(tmp_path))
    (tmp_path / "teacher.json").write_text(json.dumps({"schema": 1, "kind": "mask"}))
    assert "stylizer teacher" in validate("teacher", str(tmp_path), "", "ok", str(tmp_path))
    (tmp_path / "teacher.json").write_text(json.dumps({"schema": 1, "kind": "stylizer"}))
    assert validate("teacher", str(tmp_path), "", "ok", str(tmp_path)) is None
    cmd = build_command("teacher", str(tmp_path), "", "cpu", "ok", tmp_path / "models", str(tmp_path))
    assert cmd[cmd.index("--teacher") + 1] == str(tmp_path) and cmd[cmd.index("--source") + 1] == "teacher"
    cmd = build_command("ink", str(tmp_path), "", "tiny", "ok", tmp_path / "models")
    assert cmd[1:4] == ["train", "all", "--source"] and "--progress" in cmd

    wizard = window.open_wizard()
    wizard.choice_page.buttons["styles"].setChecked(True)
    wizard.data_page.initializePage()
    assert "needs a GPU" in wizard.data_page.note.text()  # said before anything starts
    wizard.choice_page.buttons["teacher"].setChecked(True)
    wizard.data_page.initializePage()
    assert "minutes" in wizard.data_page.note.text()
    page = wizard.run_page
    page.handle_line(json.dumps({"event": "progress", "stage": "student", "step": 5, "total": 10}))
    assert page.bar.value() == 5 and "student" in page.stage.text()
    assert not page.isComplete()
    page.handle_line(json.dumps({"event": "sample", "stage": "student", "path": str(tmp_path / "missing.png")}))
    assert page.sample.pixmap().isNull()  # a grid that is gone is skipped
    page.handle_line(json.dumps({"event": "installed", "style_id": "ok", "path": "x"}))
    assert page.isComplete()
    wizard.close()


def test_wizard_trains_installs_and_switches_to_a_new_style(qapp, window, tmp_path):
    """The wizard's run page drives a real `train all` (tiny preset) and the window picks the style up."""
    import cv2
    from skimage.data import astronaut

    from engine.align import similarity_from_landmarks, warp_crop
    from engine.tracking import landmarks_from_image
    from gui.wizard import build_command
    from tests.training.conftest import _variants

    image = np.ascontiguousarray(astronaut()[:, :, ::-1])
    crop = warp_crop(image, similarity_from_landmarks(landmarks_from_image(image)), 256)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, view in enumerate(_variants(crop, 12)):
        cv2.imwrite(str(photos / f"p{i:02d}.png"), view)
    models = tmp_path / "models"
    window.controller.registry = BundleRegistry([models])
    wizard = window.open_wizard()
    page = wizard.run_page
    args = build_command("ink", str(photos), "", "tiny", "wiz", models)
    page.start([*args, "--run", str(tmp_path / "run"), "--threads", "1"])
    assert wait_until(qapp, page.isComplete, timeout=400), page.log.toPlainText()[-3000:]
    assert page.sample.pixmap() is not None and not page.sample.pixmap().isNull()  # the students' last grid
    assert "student" in page.sample.toolTip()
    wizard.accept()
    assert wait_until(qapp, lambda: window.style_box.currentData() == "wiz")


def test_the_style_picker_shows_each_styles_preview_and_its_card_its_terms_of_use(qapp, tmp_path, fixture_bundle_root):
    import shutil

    import cv2

    from gui.controller import StreamController
    from gui.main_window import MainWindow

    folder = tmp_path / "fixture"
    shutil.copytree(fixture_bundle_root / "fixture", folder)
    cv2.imwrite(str(folder / "preview.png"), np.full((48, 192, 3), 200, np.uint8))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest |= {"preview": "preview.png", "description": "Lines <b>& fills</b>"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    win = MainWindow(StreamController(BundleRegistry([tmp_path])), "demo")
    try:
        assert not win.style_box.itemIcon(0).isNull()
        win.style_box.setCurrentIndex(0)
        win._fill_tiers()
        assert "preview.png" in win.card.text()
        assert "<i>test fixture</i>" in win.card.text()  # the licence's terms, in the card itself
        assert "Lines &lt;b&gt;&amp; fills&lt;/b&gt;" in win.card.text()  # a manifest's text is shown, not run
        assert win.card.toolTip() == "Not a style: random weights."  # the whole model card
    finally:
        win.close()


def _decoded_frames(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_recording_survives_a_source_switch_and_closing_the_window_finalises_it(qapp, fixture_bundle_root, tmp_path):
    from gui.controller import StreamController
    from gui.main_window import MainWindow

    win = MainWindow(StreamController(BundleRegistry([fixture_bundle_root])), "demo")
    win.show()
    c = win.controller
    assert c.start("demo") and wait_until(qapp, lambda: win.frames_shown > 2)
    rec = tmp_path / "rec.mp4"
    c.start_recording(rec)
    assert wait_until(qapp, lambda: c.runtime.report()["sink_written"]["recorder"] > 10)
    before_switch = c.runtime.report()["sink_written"]["recorder"]
    assert c.start("demo")  # switching the source keeps the recording going
    assert c.recorder.attached
    assert wait_until(qapp, lambda: c.runtime.report()["sink_written"]["recorder"] > 10)
    win.close()  # mid-recording: the file must be finalised, every frame decodable
    assert _decoded_frames(rec) > before_switch + 5  # frames of the second stream are in the same file


def test_the_preview_takes_only_the_newest_frame_however_many_arrive(qapp, window):
    import threading

    from engine.pipeline import FrameResult

    shown = []
    window.controller.frame_ready.connect(lambda _r: shown.append(window.controller.last_result.index))

    def flood():
        for i in range(500):
            image = np.zeros((8, 8, 3), np.uint8)
            window.controller._on_result(FrameResult(image, i, i / 30, (), {}, None, None, None))

    worker = threading.Thread(target=flood)
    worker.start()
    worker.join()
    before = window.frames_shown
    qapp.processEvents()
    assert window.frames_shown - before == 1  # one queued event for 500 results
    assert window.controller.take_newest() is None  # the window took the newest (index 499)


def test_wizard_back_and_next_never_starts_a_second_run_and_stop_does_not_block(qapp, window):
    import time

    wizard = window.open_wizard()
    page = wizard.run_page
    page.start(
        [
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, lambda *a: (time.sleep(3), exit(130))); time.sleep(60)",
        ]
    )
    assert page.process.waitForStarted(5000)
    first = page.process
    page.initializePage()  # what Back then Next does
    assert page.process is first and page.running
    t0 = time.monotonic()
    page.stop()
    assert time.monotonic() - t0 < 1.0  # the window does not wait for the checkpoint
    assert wait_until(qapp, lambda: not page.running, timeout=15)
    assert "stopped; the same training started again resumes" in page.stage.text()
    assert not page.cancel.isEnabled()
    wizard.close()


def test_a_failed_training_says_why_instead_of_offering_to_resume(qapp, window):
    from gui.wizard import STOPPED_EXIT
    from training.loop import ABORTED_EXIT

    assert STOPPED_EXIT == ABORTED_EXIT  # the window reads the training's own "stopped" status
    wizard = window.open_wizard()
    assert wizard.choice_page.choice() == "teacher"  # the route a CPU can afford is the default
    page = wizard.run_page
    error = "2026-12-07 10:00:00,000 ERROR stylecast: runs/x/pairs: only 9 training pairs; this preset needs 16"
    page.start(["-c", f"import sys; print({error!r}, file=sys.stderr); sys.exit(2)"])
    assert wait_until(qapp, lambda: not page.running and "failed" in page.stage.text(), timeout=15)
    assert page.stage.text() == "failed (exit code 2): runs/x/pairs: only 9 training pairs; this preset needs 16"
    assert not page.cancel.isEnabled()
    wizard.close()


def test_clicking_a_face_in_the_preview_gives_it_the_chosen_style(qapp, window):
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QMouseEvent

    c = window.controller
    assert c.start("demo")
    assert wait_until(qapp, lambda: c.last_result is not None and c.last_result.faces)
    face = c.last_result.faces[0]
    fh, fw = c.last_result.image.shape[:2]
    scale = min(window.preview.width() / fw, window.preview.height() / fh)
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    point = QPointF(
        cx * scale + (window.preview.width() - fw * scale) / 2, cy * scale + (window.preview.height() - fh * scale) / 2
    )
    assert window.face_at(point.x(), point.y()) == face.track_id
    assert window.face_at(1, 1) is None
    c.set_style(None)  # the common style: pass-through
    window.style_box.setCurrentIndex(window.style_box.findData("fixture"))  # chosen, not applied
    click = QMouseEvent(QMouseEvent.Type.MouseButtonPress, point, point, Qt.MouseButton.LeftButton,
                        Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
    qapp.sendEvent(window.preview, click)
    assert wait_until(
        qapp, lambda: any(f.style == "fixture" and f.track_id == face.track_id for f in c.last_result.faces)
    )
    assert c.last_result.style is None  # only the clicked face took the style
    assert wait_until(qapp, lambda: f"face {face.track_id}: fixture" in window.live_line.toolTip())
    face = next(f for f in c.last_result.faces if f.track_id == face.track_id)  # where the face is now
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    point = QPointF(
        cx * scale + (window.preview.width() - fw * scale) / 2, cy * scale + (window.preview.height() - fh * scale) / 2
    )
    click = QMouseEvent(QMouseEvent.Type.MouseButtonPress, point, point, Qt.MouseButton.LeftButton,
                        Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
    qapp.sendEvent(window.preview, click)  # the same style again: the face goes back to the common style
    assert wait_until(qapp, lambda: all(f.style is None for f in c.last_result.faces))
    # a new stream forgets the faces (and their styles) of the one before: one face on the demo, not two
    assert c.start("demo")
    assert wait_until(qapp, lambda: c.last_result is not None and c.last_result.index > 30)
    assert len(c.last_result.faces) == 1


def test_choosing_a_style_shows_its_card_and_tiers(qapp, tmp_path, fixture_bundle_root):
    import shutil

    from gui.controller import StreamController
    from gui.main_window import MainWindow

    for style_id, tiers in (("first", None), ("second", ["light"])):
        folder = tmp_path / style_id
        shutil.copytree(fixture_bundle_root / "fixture", folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["tiers"] = [t for t in manifest["tiers"] if tiers is None or t["id"] in tiers]
        (folder / "manifest.json").write_text(json.dumps({**manifest, "id": style_id, "name": style_id.title()}))
    win = MainWindow(StreamController(BundleRegistry([tmp_path])), "demo")
    try:
        assert "<b>First</b>" in win.card.text() and win.tier_box.count() == 3  # auto, light, standard
        win.style_box.setCurrentIndex(win.style_box.findData("second"))
        win.style_box.activated.emit(win.style_box.currentIndex())  # as a user's pick does
        assert "<b>Second</b>" in win.card.text() and win.tier_box.count() == 2
        win.style_box.setCurrentIndex(win.style_box.findData(None))
        win.style_box.activated.emit(win.style_box.currentIndex())
        assert "pass-through" in win.card.text() and win.tier_box.count() == 1
    finally:
        win.close()


def test_a_failed_recording_or_virtual_camera_turns_its_control_off(qapp, window, tmp_path):
    c = window.controller
    assert c.start("demo")
    (tmp_path / "a_file").write_text("not a folder")
    window.virtual_cam.setChecked(True)  # no loopback device on a test machine: it fails on its first frame
    window.record_button.setChecked(True)
    c.start_recording(tmp_path / "a_file" / "lost.mp4")  # where no file can be made
    assert wait_until(qapp, lambda: not window.record_button.isChecked() and not window.virtual_cam.isChecked())
    assert window.record_button.text() == "Record"


def test_a_video_file_loops_in_the_window_and_says_when_it_ended_without_looping(qapp, window, tmp_path):
    import cv2

    clip = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    c = window.controller
    messages = []
    c.live_status.connect(messages.append)
    assert window.start_source(str(clip))  # looping is on by default
    assert wait_until(qapp, lambda: c.runtime.status.captured > 20)  # a 6-frame file keeps playing
    window.loop_files.setChecked(False)
    assert window.start_source(str(clip))
    assert wait_until(qapp, lambda: not c.runtime.running, timeout=10)
    c._report_status()
    assert any("ended" in m and "tick 'Loop files'" in m for m in messages)


def test_wizard_measures_the_route_on_this_machine_before_starting(qapp, window, tmp_path):
    """The data page's estimate runs `train estimate` in the background and says the minutes it measured."""
    import cv2
    from skimage.data import astronaut

    from gui.wizard import build_estimate_command, describe_estimate

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        cv2.imwrite(str(faces / f"{i}.png"), cv2.resize(astronaut()[:, :, ::-1], (256, 256)))
    cmd = build_estimate_command("teacher", str(faces), "cpu", "T")
    assert cmd[1:3] == ["train", "estimate"] and cmd[cmd.index("--teacher") + 1] == "T"
    wizard = window.open_wizard()
    page = wizard.data_page
    wizard.choice_page.buttons["styles"].setChecked(True)
    page.initializePage()
    assert not page.estimate_button.isEnabled()  # nothing to measure: that route needs a GPU
    wizard.choice_page.buttons["ink"].setChecked(True)
    page.initializePage()
    page.data.setText(str(faces))
    page.preset.setCurrentIndex(page.preset.findData("tiny"))
    page.start_estimate()
    assert wait_until(qapp, lambda: "minutes" in page.estimate.text() or "could not" in page.estimate.text(), 300)
    text = page.estimate.text()
    assert text.startswith("Measured on this machine") and "3 faces" in text and "24 steps" in text, text
    record = {"parts": {"pairs": 1.5, "students": 20}, "minutes": 21.5, "cpu": "X", "threads": 2, "faces": 9,
              "steps": 600, "tiers": ["light", "high"]}  # fmt: skip
    assert describe_estimate(record) == (
        "Measured on this machine (X, 2 threads): about 21.5 minutes (pairs 1.5, students 20; 9 faces,"
        " 600 steps of light+high)."
    )
    wizard.close()


def test_wizard_curation_round_keeps_the_ticked_candidates_and_trains_on(qapp, window, tmp_path):
    """The curate page runs the CLI's round: candidates from a StyleGAN generator shown as tickable
    thumbnails, the ticked ones kept, the rest rejected, then a continued run on the grown style set."""
    import cv2
    import torch
    from PySide6.QtCore import Qt

    from gui.wizard import CURATE_PAGE, curation_folders
    from training.stylegan.checkpoint import save_generator
    from training.stylegan.networks import Generator, GeneratorConfig

    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32)
    generator = save_generator(Generator(cfg).eval(), tmp_path / "gan.pt")
    styles = tmp_path / "styles"
    styles.mkdir()
    for i in range(8):
        cv2.imwrite(str(styles / f"s{i}.png"), np.full((16, 16, 3), 30 * i, np.uint8))
    wizard = window.open_wizard()
    wizard.choice_page.buttons["curate"].setChecked(True)
    assert wizard.choice_page.nextId() == CURATE_PAGE
    page = wizard.curate_page
    page.make_candidates()
    assert "Choose a StyleGAN run" in page.error.text()
    page.generator.setText(str(generator))
    page.count.setValue(6)
    page.make_candidates()
    assert wait_until(qapp, lambda: page.candidates.count() == 6, timeout=120), page.log.toPlainText()[-2000:]
    assert not page.isComplete()
    page.candidates.item(1).setCheckState(Qt.CheckState.Checked)
    page.candidates.item(4).setCheckState(Qt.CheckState.Checked)
    page.kimg.setValue(0.01)
    page.apply_decisions()
    assert "style image folder" in page.error.text()  # training on needs the original style set
    page.styles.setText(str(styles))
    page.apply_decisions()
    assert wait_until(qapp, page.isComplete, timeout=300), page.log.toPlainText()[-3000:]
    folders = curation_folders(str(generator))
    record = json.loads((folders["candidates"] / "decisions.json").read_text())
    names = sorted(p.name for p in (folders["candidates"] / "images").iterdir())
    assert record["accepted"] == [names[1], names[4]] and len(record["rejected"]) == 4
    assert len(list(folders["accepted"].iterdir())) == 2
    options = json.loads((folders["continued"] / "options.json").read_text())["options"]
    assert options["images"] == 10 and options["base"] == str(generator)
    # decided candidates are shown with their decision and cannot be ticked again
    assert "kept" in page.candidates.item(1).text() and not page.candidates.item(0).flags() & Qt.ItemFlag.ItemIsEnabled
    wizard.close()


def test_the_window_starts_as_the_user_left_it(qapp, fixture_bundle_root, tmp_path):
    from PySide6.QtCore import QSettings

    from gui.controller import StreamController
    from gui.main_window import MainWindow, remembered_camera

    path = str(tmp_path / "stylecast.ini")

    def open_window():
        controller = StreamController(BundleRegistry([fixture_bundle_root]))
        asked = []
        controller.set_style = lambda *args: asked.append(args)
        win = MainWindow(controller, "demo", QSettings(path, QSettings.Format.IniFormat))
        win.show()
        win.select_first_style()
        return win, asked

    first, asked = open_window()
    assert asked == [("fixture", "auto", "auto")]  # nothing kept yet: the default style
    first.select_style("fixture", "standard")
    first.backend_box.setCurrentText("mnn")
    first.intensity.setValue(40)
    first.temporal.setValue(90)
    first.color.setValue(25)
    first.skin_tone.setChecked(False)
    first.loop_files.setChecked(False)
    first.controller.source_spec = "camera:2"  # as if the second camera had been streaming
    first.close()

    second, asked = open_window()
    assert asked == [("fixture", "standard", "mnn")]
    assert (second.tier_box.currentText(), second.backend_box.currentText()) == ("standard", "mnn")
    assert [second.intensity.value(), second.temporal.value(), second.color.value()] == [40, 90, 25]
    assert not second.skin_tone.isChecked() and not second.loop_files.isChecked()
    config = second.controller.pipeline.config
    live = (config.intensity, config.temporal_strength, config.color_match, config.skin_tone_limit)
    assert live == (0.4, 0.9, 0.25, 0)
    assert remembered_camera(second.settings) == "camera:2"
    second.select_style(None)  # pass-through is a choice too
    second.close()

    third, asked = open_window()
    assert third.style_box.currentData() is None
    third.close()

    # a style since removed and values that do not read back: the defaults, never an error
    settings = QSettings(path, QSettings.Format.IniFormat)
    for key, value in (("style", "removed"), ("tier", "huge"), ("intensity", "lots"), ("camera", "/dev/video0")):
        settings.setValue(key, value)
    settings.sync()
    fourth, asked = open_window()
    assert asked == [("fixture", "auto", "mnn")] and fourth.intensity.value() == 100
    assert remembered_camera(fourth.settings) == "camera:0"
    fourth.close()
