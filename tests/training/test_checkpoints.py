"""Checkpoints: safetensors + JSON round trips, earlier pickles through the restricted loader, and no code
execution on load."""

import json
import pickle

import numpy as np
import pytest
import torch

from training import checkpoints
from training.errors import TrainingError
from training.runs import RunDir, capture_rng, load_model_file


def test_records_round_trip_exactly_with_their_containers():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), betas=(0.5, 0.999))
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    record = {"opt": opt.state_dict(), "rng": capture_rng(), "cfg": {"tier": "light", "alpha": True}, "n": 3}
    document, blob = checkpoints.encode(record)
    back = checkpoints.decode(document, blob, "test")
    assert set(back["opt"]["state"]) == {0, 1}  # integer keys survive (the optimiser matches on them)
    assert back["opt"]["param_groups"][0]["betas"] == (0.5, 0.999)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["rng"]["numpy"][0] == "MT19937" and np.array_equal(back["rng"]["numpy"][1], record["rng"]["numpy"][1])
    assert back["cfg"] == record["cfg"] and json.loads(document)["n"] == 3
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(back["opt"])
    assert torch.equal(fresh.state_dict()["state"][1]["exp_avg_sq"], opt.state_dict()["state"][1]["exp_avg_sq"])


def test_a_run_writes_no_pickle_and_resumes_its_rng(tmp_path):
    run = RunDir.open(tmp_path / "run", "student", {})
    model = {"arch": "student", "init_kwargs": {"c0": 4}, "params": {"w": torch.arange(4.0)}, "params_ema": None}
    run.save_checkpoint(model, {"step": 7})
    expected = torch.rand(3)  # what the RNG gives right after the checkpoint
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "model.json", "model.safetensors", "state.json", "state.safetensors"
    ]  # fmt: skip
    torch.rand(100)
    loaded_model, state = run.load_checkpoint()
    assert state["step"] == 7 and torch.equal(torch.rand(3), expected)
    assert torch.equal(loaded_model["params"]["w"], torch.arange(4.0)) and loaded_model["params_ema"] is None


def test_an_earlier_versions_pickles_are_read_once_then_replaced(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    legacy = {"arch": "student", "init_kwargs": {"c0": 4}, "params": {"w": torch.ones(2)}, "step": 5}
    torch.save(legacy, folder / "model.pt")
    torch.save({"step": 5, "rng": capture_rng()}, folder / "state.pt")  # numpy RNG state inside
    run = RunDir(tmp_path / "run", "student")
    model, state = run.load_checkpoint()
    assert model["step"] == 5 and state["step"] == 5
    run.save_checkpoint(model, {"step": 6})
    assert not (folder / "model.pt").exists() and load_model_file(folder / "model.json")["arch"] == "student"


class Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_hostile_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"arch": "student", "init_kwargs": {}, "params": Exploit()}, folder / "model.pt", pickle_module=pickle)
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        load_model_file(folder / "model.json")
    assert not (tmp_path / "PWNED").exists()
    (folder / "model.pt").unlink()
    (folder / "model.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        load_model_file(folder / "model.json")


def test_a_damaged_run_record_is_named_and_half_a_checkpoint_is_kept_aside_not_overwritten(tmp_path):
    """Resuming from half a checkpoint used to start at step 0 and overwrite the model that was there."""
    run = RunDir.open(tmp_path / "run", "student", {"steps": 4})
    run.save_checkpoint({"params": {"w": torch.ones(2)}}, {"step": 4})
    run.close()
    (run.checkpoint_dir / "state.json").unlink()
    saved = {p.name: p.read_bytes() for p in run.checkpoint_dir.glob("model.*")}
    resumed = RunDir.open(tmp_path / "run", "student", {"steps": 6})
    assert resumed.load_checkpoint() is None  # training starts over...
    kept = {p.name.removesuffix(".incomplete"): p.read_bytes() for p in run.checkpoint_dir.glob("*.incomplete")}
    assert kept == saved  # ...and the model it would have overwritten is kept aside
    resumed.save_checkpoint({"arch": "student", "init_kwargs": {}, "params": {"w": torch.zeros(2)}}, {"step": 1})
    assert resumed.load_checkpoint()[1]["step"] == 1
    resumed.close()
    (run.checkpoint_dir / "state.json").unlink()  # half a checkpoint still counts as one without --resume
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        RunDir.open(tmp_path / "run", "student", {"steps": 6}, resume=False)
    (tmp_path / "run" / "options.json").write_text("{")
    with pytest.raises(TrainingError, match=r"options.json: not a run record"):
        RunDir.open(tmp_path / "run", "student", {"steps": 6})


def test_a_run_that_failed_before_its_first_output_leaves_no_folder(tmp_path):
    failed = RunDir.open(tmp_path / "failed", "student", {"steps": 4})  # e.g. its pairs were refused
    failed.close()
    assert not (tmp_path / "failed").exists()
    saved = RunDir.open(tmp_path / "saved", "student", {"steps": 4})
    saved.save_checkpoint({"params": {"w": torch.zeros(2)}}, {"step": 1})
    saved.close()
    assert (tmp_path / "saved" / "checkpoints").is_dir()
    (tmp_path / "mine").mkdir()  # a folder the user made: never removed
    RunDir.open(tmp_path / "mine", "student", {"steps": 4}).close()
    assert (tmp_path / "mine").is_dir()
