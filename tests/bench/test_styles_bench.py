import numpy as np

from bench.styles import engine_guard, markdown_table


def _result(skin_light: dict) -> dict:
    summary = lambda dl: {"all": {"n": 4, "dL": dl, "db": 0.0}, "darkest_quarter": {"n": 1, "dL": dl, "db": 0.0}}  # noqa: E731
    return {
        "style": "anime",
        "teacher_identity": 0.3,
        "tiers": {
            "light": {
                "identity": 0.4,
                "sharpness_vs_teacher_shipped": 0.9,
                "fid_el0_to_teacher": 100.0,
                "kid_el0_to_teacher": 0.1,
            }
        },
        "skin_tone_heldout": {"teacher": summary(30.5), "light": skin_light},
        "skin_tone_identities": {"teacher": {"darker": {"dL": 33.0}, "lighter": {"dL": 25.0}}},
        "flicker_amplification": {"on": 0.3, "off": 0.9},
        "ms_2_threads": {"engine": {"light": 6.4, "teacher_onnx_512": 787.0}},
    }


def test_the_table_shows_the_guarded_figure_and_the_network_alone_beside_the_teacher():
    guarded = {"all": {"dL": 3.0}, "darkest_quarter": {"dL": 6.9}, "network_alone": {"darkest_quarter": {"dL": 8.3}}}
    assert "| +6.9 (+8.3; +30.5) |" in markdown_table([_result(guarded)])
    assert "| +8.3 (+30.5) |" in markdown_table([_result({"all": {"dL": 3.0}, "darkest_quarter": {"dL": 8.3}})])


def test_the_table_shows_the_engine_settings_ms_and_reads_results_written_before_both_settings():
    plain = {"all": {"dL": 3.0}, "darkest_quarter": {"dL": 8.3}}
    assert markdown_table([_result(plain)]).endswith("| 6.4 (787) |")
    earlier = _result(plain) | {"ms_2_threads": {"light": 5.5, "teacher_onnx_512": 572.0}}
    assert markdown_table([earlier]).endswith("| 5.5 (572) |")


def test_the_bench_guards_still_photos_with_the_bundles_limit_unless_told_otherwise(fixture_bundle):
    from dataclasses import replace

    from engine.bundle import Bundle

    guarded = Bundle(
        fixture_bundle.root,
        replace(fixture_bundle.manifest, blend=replace(fixture_bundle.manifest.blend, skin_tone_limit=4.0)),
    )
    assert engine_guard(guarded, None).limit == 4.0 and engine_guard(guarded, 0.0).limit == 0.0
    photo = np.full((256, 256, 3), 60, np.uint8)
    bright = np.full((256, 256, 3), 200, np.uint8)
    assert np.array_equal(engine_guard(guarded, 0.0)(photo, bright), bright)
    assert engine_guard(guarded, None)(photo, bright).mean() < 150  # pulled back toward the photo


def test_background_change_counts_what_a_spilled_alpha_shows_and_a_short_one_hides():
    """A tier whose alpha covers the whole crop moves the backdrop and its mask overshoots the target; a tier
    whose alpha is the target moves nothing there; an alpha of zero falls short inside the head by ~1; a style
    without alpha (ink) is measured through the engine's fixed feather mask."""
    import pytest

    from bench.styles import SHARED, background_change
    from training.student.export import public_domain_face
    from training.teachers.masks import BlendTargets, open_mask_models

    if not (SHARED / "teachers" / "masks").is_dir():
        pytest.skip("../shared/teachers/masks is not present")
    astronaut_crop = public_domain_face()
    targets = BlendTargets(open_mask_models(SHARED / "teachers" / "masks"))
    try:
        target = targets(astronaut_crop)[0]
    finally:
        targets.close()
    grey = np.full((256, 256, 3), 128, np.uint8)
    outputs = {
        name: [np.dstack([grey, np.full((256, 256), a, np.uint8) if np.isscalar(a) else a])]
        for name, a in (("spilled", 255), ("exact", target), ("none", 0))
    } | {"no_alpha": [grey]}
    result = background_change([astronaut_crop], outputs)
    assert result["spilled"]["mean_grey_levels"] > 10 and result["spilled"]["alpha_l1"] > 0.1
    assert result["exact"]["mean_grey_levels"] < 1 and result["exact"]["alpha_l1"] < 0.02
    assert result["none"]["mean_grey_levels"] == 0 and result["none"]["alpha_short_inside_head"] > 0.9
    assert result["no_alpha"]["mean_grey_levels"] > 5 and result["no_alpha"]["alpha_l1"] > 0.1  # the feather spills


def test_speed_times_every_network_with_the_same_options_in_both_settings(fixture_bundle, tmp_path, monkeypatch):
    """The student is never timed with the engine's options against a teacher with onnxruntime's: each setting
    opens every network with its own spinning choice, and each speed-up divides within one setting."""
    from bench import styles
    from engine import backends
    from tests.training.conftest import write_onnx_teacher
    from training.teachers.network import load_teacher_spec

    seen: list[bool] = []
    real = backends.onnx_session_options
    monkeypatch.setattr(backends, "onnx_session_options", lambda t, s=False: seen.append(s) or real(t, s))
    import training.teachers.network as network

    monkeypatch.setattr(network, "onnx_session_options", backends.onnx_session_options)
    monkeypatch.setattr(styles, "SPEED_ROUNDS", 1)
    spec = load_teacher_spec(write_onnx_teacher(tmp_path / "toy", size=64, multiple=16))
    crop = np.full((256, 256, 3), 128, np.uint8)
    result = styles.measure_speed(fixture_bundle, spec, crop, crop)

    tiers = [t.id for t in fixture_bundle.manifest.tiers]
    assert set(result["ms_2_threads"]) == {"engine", "onnxruntime_default"}
    for setting, ms in result["ms_2_threads"].items():
        teachers = {"teacher_onnx_64", "teacher_onnx_256"}  # its preferred input, and 256² (any multiple of 16)
        assert set(ms) == {*tiers, *teachers} and all(v > 0 for v in ms.values())
        for teacher in teachers:
            speedup = result["light_speedup_vs_teacher"][setting][teacher]
            assert speedup == round(ms[teacher] / ms[tiers[0]], 1)
    per_setting = len(tiers) + 2
    assert seen == [False] * per_setting + [True] * per_setting
