"""The installer's trimmed ICU data (packaging/icu_data.py): Qt answers as with PySide6's whole library."""

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
_spec = importlib.util.spec_from_file_location("icu_data", REPO / "packaging" / "icu_data.py")
icu_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(icu_data)

# What Qt Core asks ICU for: collation (the file dialog's sorting, natural numbers), case mapping,
# time-zone display names; and which ICU data library the process loaded.
PROBE = """
import functools, json
from PySide6.QtCore import QCollator, QLocale, QTimeZone
words = ["b", "B", "a", "A", "é", "e", "Z", "10", "9"]
def order(locale):
    collator = QCollator(QLocale(locale))
    collator.setNumericMode(True)
    return sorted(words, key=functools.cmp_to_key(collator.compare))
berlin = QTimeZone(b"Europe/Berlin")
print(json.dumps({
    "en": order("en_US"), "de": order("de_DE"),
    "upper": [QLocale("en_US").toUpper("straße"), QLocale("tr_TR").toUpper("i")],
    "zone": berlin.displayName(QTimeZone.TimeType.StandardTime, QTimeZone.NameType.LongName, QLocale("en_US")),
    "library": next(line.split()[-1] for line in open("/proc/self/maps") if "libicudata" in line),
}))
"""


def _pyside_icu_data() -> Path:
    pyside = importlib.util.find_spec("PySide6")
    found = sorted(Path(pyside.origin).parent.glob("Qt/lib/libicudata.so.*")) if pyside else []
    if not found or shutil.which("cc") is None:
        pytest.skip("needs PySide6's ICU data library (Linux wheels) and a C compiler")
    return found[0]


def _probe(library_dir: Path | None) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    if library_dir is not None:
        env["LD_LIBRARY_PATH"] = str(library_dir)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_trimmed_icu_data_answers_qt_as_the_whole_library(tmp_path):
    library = _pyside_icu_data()
    trimmed, kept, items = icu_data.build_trimmed_library(library, tmp_path)
    assert trimmed.stat().st_size < 0.15 * library.stat().st_size
    assert 0 < kept < items

    whole, small = _probe(None), _probe(tmp_path)
    assert small["library"] == str(trimmed) and whole["library"] != str(trimmed)
    assert small["en"] == ["9", "10", "a", "A", "b", "B", "e", "é", "Z"]  # collation, not code points
    assert small["upper"] == ["STRASSE", "İ"]
    assert small["zone"] == "Central European Standard Time"
    assert {k: v for k, v in small.items() if k != "library"} == {k: v for k, v in whole.items() if k != "library"}


def test_only_other_languages_locale_data_and_unused_trees_are_left_out():
    prefix = "icudt73l/"
    for name in (
        "root.res",
        "res_index.res",
        "coll/res_index.res",
        "en.res",
        "en_GB.res",
        "pool.res",
        "metaZones.res",
        "cnvalias.icu",
        "nfkc.nrm",
        "coll/root.res",
        "coll/ucadata.icu",
        "coll/en_US_POSIX.res",
        "zone/en.res",
        "zone/pool.res",
    ):
        assert icu_data.kept(prefix + name), name
    for name in (
        "de.res",
        "zh_Hant_TW.res",
        "es_419.res",
        "coll/de.res",
        "zone/fr.res",
        "brkitr/word.brk",
        "lang/en.res",
        "curr/root.res",
        "translit/root.res",
        "ibm-943_P15A-2003.cnv",
    ):
        assert not icu_data.kept(prefix + name), name


def test_what_is_not_icu_data_is_refused():
    with pytest.raises(icu_data.IcuDataError, match="ICU common data"):
        icu_data.trimmed_archive(bytes(256))
    library = _pyside_icu_data()
    with pytest.raises(icu_data.IcuDataError, match="entry point"):
        icu_data.read_archive(next(library.parent.glob("libicuuc.so.*")))
