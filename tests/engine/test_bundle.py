import json
import shutil

import pytest

from engine.bundle import BundleRegistry, load_bundle, parse_manifest
from engine.errors import BundleError


def _copy(fixture_bundle_root, tmp_path, name="fixture"):
    dst = tmp_path / name
    shutil.copytree(fixture_bundle_root / "fixture", dst)
    return dst


def _edit(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_valid_bundle_loads_with_its_tiers(fixture_bundle):
    assert fixture_bundle.id == "fixture"
    assert [t.id for t in fixture_bundle.manifest.tiers] == ["light", "standard"]
    assert {f.runtime for f in fixture_bundle.tier("standard").files} == {"onnx", "mnn"}
    assert 0.8 < fixture_bundle.tier("standard").gmacs < 1.2


def test_unknown_schema_is_refused_by_name(fixture_bundle_root, tmp_path):
    folder = _copy(fixture_bundle_root, tmp_path)
    _edit(folder, lambda d: d.update(schema=2))
    with pytest.raises(BundleError, match="unknown schema version 2"):
        load_bundle(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("name"), "missing field 'name'"),
        (lambda d: d["tiers"][0].update(input_size="big"), r"tiers\[0\].input_size' must be int"),
        (lambda d: d["tiers"][0]["files"][0].update(runtime="tflite"), "expected one of"),
        (lambda d: d["tiers"][0]["files"][0].update(file="../../etc/passwd"), "path inside the bundle"),
        (lambda d: d.update(tiers=[]), "at least one tier"),
        (lambda d: d["io"].update(layout="NHWC"), "unsupported io"),
        # JSON has no NaN or inf, but Python's reader takes them; each drew wrong faces or stalled a frame
        (lambda d: d["io"].update(range=[0, float("inf")]), r"'io.range' must be \[low, high\]"),
        (lambda d: d.update(blend={"intensity": float("nan")}), r"'blend.intensity' must be a number from 0 to 1"),
        (lambda d: d.update(blend={"feather": 100}), r"'blend.feather' must be a number from 0 to 0.5, got 100"),
        (lambda d: d.update(blend={"temporal": -0.1}), r"'blend.temporal' must be a number from 0 to 1"),
        (lambda d: d.update(blend={"skin_tone_limit": float("inf")}), r"'blend.skin_tone_limit'"),
    ],
)
def test_invalid_fields_are_named(fixture_bundle_root, tmp_path, change, message):
    folder = _copy(fixture_bundle_root, tmp_path)
    _edit(folder, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


def test_sha_mismatch_and_missing_file_name_the_file(fixture_bundle_root, tmp_path):
    folder = _copy(fixture_bundle_root, tmp_path)
    with open(folder / "light.onnx", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(BundleError, match=r"light\.onnx: sha256 mismatch"):
        load_bundle(folder)
    (folder / "light.onnx").unlink()
    with pytest.raises(BundleError, match=r"light\.onnx: model file listed in the manifest is missing"):
        load_bundle(folder)


def test_corrupt_json_is_a_bundle_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xe9", "not UTF-8 text"), (b"[" * 100_000, "nested too deeply")],
    ids=["not-utf8", "deeply-nested"],
)
def test_a_manifest_that_is_not_json_text_is_a_bundle_error_and_the_other_styles_still_load(
    fixture_bundle_root, tmp_path, content, message
):
    _edit(_copy(fixture_bundle_root, tmp_path, "good"), lambda d: d.update(id="good"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path / "broken")
    scan = BundleRegistry([tmp_path]).scan()
    assert list(scan.bundles) == ["good"] and message in scan.errors[tmp_path / "broken"]


def test_registry_lists_good_bundles_and_reports_bad_ones(fixture_bundle_root, tmp_path):
    good = _copy(fixture_bundle_root, tmp_path, "good")
    _edit(good, lambda d: d.update(id="good"))
    bad = _copy(fixture_bundle_root, tmp_path, "bad")
    _edit(bad, lambda d: d.update(schema=99))
    scan = BundleRegistry([tmp_path]).scan()
    assert list(scan.bundles) == ["good"]
    assert "unknown schema" in scan.errors[bad]
    with pytest.raises(BundleError, match="unknown schema"):
        BundleRegistry([tmp_path]).get("bad")
    with pytest.raises(BundleError, match="no style 'nope'"):
        BundleRegistry([tmp_path]).get("nope")


def test_manifest_roundtrip(fixture_bundle):
    from engine.bundle import manifest_to_dict

    assert parse_manifest(manifest_to_dict(fixture_bundle.manifest)) == fixture_bundle.manifest


def test_per_frame_fields_are_checked_when_the_bundle_loads(fixture_bundle_root, tmp_path):
    import json
    import shutil

    from engine.bundle import load_bundle
    from engine.errors import BundleError

    folder = tmp_path / "fixture"
    shutil.copytree(fixture_bundle_root / "fixture", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for align, message in (({"template": "celeba"}, "align.template' is 'celeba'"), ({"crop_size": 4}, "crop_size")):
        (folder / "manifest.json").write_text(json.dumps({**manifest, "align": {**manifest["align"], **align}}))
        with pytest.raises(BundleError, match=message):
            load_bundle(folder)


def test_a_rescan_hashes_each_model_file_once_and_a_changed_file_again(fixture_bundle_root, tmp_path, monkeypatch):
    import os

    from engine import bundle as bundle_module

    shutil.copytree(fixture_bundle_root / "fixture", tmp_path / "fixture")
    hashed = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda p: (hashed.append(p), real(p))[1])
    registry = BundleRegistry([tmp_path])
    assert "fixture" in registry.scan().bundles
    first = len(hashed)
    assert first > 0 and "fixture" in registry.scan().bundles and len(hashed) == first
    model = tmp_path / "fixture" / "light.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")  # corrupted in place: new content, new mtime
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1))
    scan = registry.scan()
    assert "fixture" not in scan.bundles and "sha256 mismatch" in next(iter(scan.errors.values()))


def test_the_skin_tone_limit_is_read_and_older_bundles_without_it_load_with_the_guard_off(
    fixture_bundle_root, tmp_path
):
    folder = _copy(fixture_bundle_root, tmp_path)
    _edit(folder, lambda d: d["blend"].pop("skin_tone_limit", None))
    assert load_bundle(folder).manifest.blend.skin_tone_limit == 0.0
    _edit(folder, lambda d: d["blend"].update(skin_tone_limit=4))
    assert load_bundle(folder).manifest.blend.skin_tone_limit == 4.0
    _edit(folder, lambda d: d["blend"].update(skin_tone_limit="strict"))
    with pytest.raises(BundleError, match="blend.skin_tone_limit"):
        load_bundle(folder)


def test_the_default_style_is_anime_then_any_installed_style_then_pass_through(fixture_bundle_root, tmp_path):
    from engine.session import resolve_style

    for style_id in ("cute", "anime", "ink"):
        shutil.copytree(fixture_bundle_root / "fixture", tmp_path / style_id)
        manifest = json.loads((tmp_path / style_id / "manifest.json").read_text())
        (tmp_path / style_id / "manifest.json").write_text(json.dumps({**manifest, "id": style_id}))
    assert resolve_style("auto", BundleRegistry([tmp_path])).id == "anime"
    assert resolve_style("ink", BundleRegistry([tmp_path])).id == "ink"
    shutil.rmtree(tmp_path / "anime")
    assert resolve_style("auto", BundleRegistry([tmp_path])).id == "cute"
    assert resolve_style("auto", BundleRegistry([tmp_path / "no styles here"])) is None
    assert resolve_style("none", BundleRegistry([tmp_path])) is None
