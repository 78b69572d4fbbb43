"""The installer's stand-ins for never-called libraries (packaging/stub_libs.py): the live path runs on them.

The wheels' library folders are copied, NEVER_CALLED libraries replaced as the installer does, and the
app then records the demo (tracking, stylizing, blending, H.264) and reads its recording back, in a
process that imports the slimmed OpenCV and PyAV. A stand-in that is called says which library it
replaced and stops the process.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# loaded by path: the folder's name is also that of the 'packaging' distribution pip brings
_spec = importlib.util.spec_from_file_location("stub_libs", REPO / "packaging" / "stub_libs.py")
stub_libs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stub_libs)


def _site_packages() -> Path:
    spec = importlib.util.find_spec("av")
    site = Path(spec.origin).parents[1]
    if shutil.which("cc") is None or not all((site / folder).is_dir() for folder in stub_libs.NEVER_CALLED):
        pytest.skip("needs a C compiler and the Linux wheels of PyAV and OpenCV (their .libs folders)")
    return site


@pytest.fixture(scope="module")
def slim_site(tmp_path_factory):
    """A copy of OpenCV and PyAV with their library folders as the installer ships them."""
    site, root = _site_packages(), tmp_path_factory.mktemp("site")
    for package in ("cv2", "av", *stub_libs.NEVER_CALLED):
        shutil.copytree(site / package, root / package, symlinks=True)
    libraries = {f"{f}/{p.name}": p for f in stub_libs.NEVER_CALLED for p in sorted((root / f).iterdir())}
    roots = [p for package in ("cv2", "av") for p in (root / package).rglob("*.so")]
    shipped = stub_libs.slim_wheel_libraries(libraries, roots, tmp_path_factory.mktemp("stubs"))
    before = {key: p.stat().st_size for key, p in libraries.items()}
    for key, path in libraries.items():
        if key not in shipped:
            path.unlink()
        elif shipped[key] != path:
            shutil.copyfile(shipped[key], path)
    return root, before, shipped


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "OPENCV_VIDEOIO_PRIORITY_FFMPEG": "0"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_live_path_records_and_reads_back_on_the_stand_ins(slim_site, tmp_path):
    site, before, shipped = slim_site
    assert sum(before.values()) - sum(p.stat().st_size for p in shipped.values()) > 90 * 2**20  # saved here
    left_out = {key.split("/")[1].split("-")[0] for key in set(before) - set(shipped)}
    assert {
        "libnettle",
        "libgmp",
        "libunistring",
        "libgfortran",
        "libcrypto",
        "libssl",
    } <= left_out  # only stubs linked them

    out, report = tmp_path / "demo.mp4", tmp_path / "demo.json"
    main = str(REPO / "main.py")
    run = _run(
        site,
        main,
        "stylize",
        "--source",
        "demo",
        "--frames",
        "30",
        "--out",
        str(out),
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads(report.read_text())
    assert stats["output"]["codec"] == "h264" and stats["faces"]["face_fraction"] > 0.8
    again = tmp_path / "again.json"
    run = _run(site, main, "stylize", "--source", str(out), "--frames", "20", "--report", str(again), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(again.read_text())["runtime"]["frames_processed"] == 20
    loaded = _run(site, "-c", "import cv2, av; print(cv2.__file__, av.__file__)", cwd=tmp_path).stdout.split()
    assert loaded == [str(site / "cv2" / "__init__.py"), str(site / "av" / "__init__.py")]


def test_a_called_stand_in_names_the_library_it_replaced(slim_site, tmp_path):
    site, _, _ = slim_site
    probe = (
        "import cv2, av, numpy as np; print(cv2.VideoCapture('x.mp4').isOpened(), flush=True)\n"
        "stream = av.open('y.mkv', 'w').add_stream('libopenh264', rate=25)\n"
        "stream.width, stream.height, stream.pix_fmt = 64, 64, 'yuv420p'\n"
        "stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format='bgr24'))"
    )
    (tmp_path / "x.mp4").write_bytes(b"\0" * 64)
    run = _run(site, "-c", probe, cwd=tmp_path)
    assert run.stdout.strip() == "False"  # OpenCV's FFmpeg backend is off: a file fails to open, cleanly
    assert run.returncode != 0 and "left out libopenh264" in run.stderr


def test_a_stand_in_exports_what_the_library_does(tmp_path):
    site = _site_packages()
    real = next((site / "av.libs").glob("libgnutls*"))
    stub = stub_libs.build_stub(real, tmp_path)
    soname, symbols = stub_libs.exported_symbols(real)
    stub_soname, stub_symbols = stub_libs.exported_symbols(stub)

    def exported(symbols):  # a function's size is its code's: the stand-in's is its own
        return {(s.name, s.is_function, s.version, 0 if s.is_function else s.size) for s in symbols}

    assert stub_soname == soname and exported(stub_symbols) == exported(symbols) and len(symbols) > 1000
    assert any(s.version for s in symbols) and stub.stat().st_size < real.stat().st_size / 5


def test_what_a_stand_in_cannot_copy_keeps_the_real_library(tmp_path):
    site = _site_packages()
    alsa = next((site / "av.libs").glob("libasound*"))  # old symbol versions beside the current ones
    not_elf = tmp_path / "libnot-elf.so"
    not_elf.write_bytes(b"not a library")
    for library, problem in ((alsa, "old \\(hidden\\) version"), (not_elf, "not an ELF")):
        with pytest.raises(stub_libs.StubError, match=problem):
            stub_libs.build_stub(library, tmp_path / "out")
    libraries = {f"av.libs/{alsa.name}": alsa}
    assert stub_libs.slim_wheel_libraries(libraries, [], tmp_path / "out") == {}  # nothing loads it here
    loaded = next((site / "av.libs").glob("libavdevice*"))
    assert stub_libs.slim_wheel_libraries(libraries, [loaded], tmp_path / "out") == libraries  # the real one
