"""CLI flags derived from the config dataclasses: one flag per field, unset flags keep the preset's value."""

import argparse
import dataclasses
import typing

import pytest

from training.options import add_config_arguments, apply_flags
from training.prepare import PrepareConfig
from training.student.train import StudentConfig, config_from
from training.stylegan.config import TrainConfig as GanConfig
from training.ugatit.config import PRESETS as UGATIT_PRESETS
from training.ugatit.config import TrainConfig as UgatitConfig


def _parser(cls):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, cls)
    return parser


@pytest.mark.parametrize("cls", [PrepareConfig, StudentConfig, GanConfig, UgatitConfig])
def test_every_field_has_a_flag_with_help(cls):
    parser = _parser(cls)
    dests = {a.dest for a in parser._actions}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        nested = dataclasses.fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
        assert ({f"{f.name}.{g.name}" for g in nested} <= dests) if nested else f.name in dests, f.name
    assert all(a.help for a in parser._actions if a.dest != "help")


def test_unset_flags_keep_the_preset_and_given_ones_replace_it():
    tiny = config_from("tiny")
    parser = _parser(StudentConfig)
    assert apply_flags(tiny, parser.parse_args([])) == tiny
    args = parser.parse_args(["--steps", "7", "--gan-weight", "0.5", "--no-augment", "--edge-fakes", "--bf16"])
    cfg = apply_flags(tiny, args)
    assert (cfg.steps, cfg.weights.gan, cfg.augment, cfg.weights.edge, cfg.bf16) == (7, 0.5, False, True, True)
    assert dataclasses.replace(cfg, steps=tiny.steps, weights=tiny.weights, augment=True, bf16=False) == tiny
    assert "--tier" not in parser.format_help()  # the stage's own flag (several tiers), not the field's


def test_several_values_choices_and_parsed_values():
    parser = _parser(GanConfig)
    args = parser.parse_args(["--freeze-g", "mapping", "--g-lr-mult", "synthesis.b4=0.1", "b8=0.3"])
    cfg = apply_flags(GanConfig(), args)
    assert cfg.freeze_g == ("mapping",) and cfg.g_lr_mult == (("synthesis.b4", 0.1), ("b8", 0.3))
    with pytest.raises(argparse.ArgumentError, match="PREFIX=MULT"):
        parser.parse_args(["--d-lr-mult", "b64"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        _parser(UgatitConfig).parse_args(["--precision", "fp8"])
    cpu = UGATIT_PRESETS["cpu"]
    assert apply_flags(cpu, _parser(UgatitConfig).parse_args(["--light"])) == dataclasses.replace(cpu, light=True)
