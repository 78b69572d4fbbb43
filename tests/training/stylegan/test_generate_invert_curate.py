"""Data generation (truncation, manifest, video), inversion of a known latent, the curation round."""

import json

import cv2
import numpy as np
import pytest
import torch

from training.cli import main as train_main
from training.errors import TrainingError
from training.images import to_uint8
from training.stylegan.checkpoint import save_generator
from training.stylegan.curate import apply_decisions, parse_accept_list, prompt_decisions
from training.stylegan.invert import InversionConfig, Inverter, psnr
from training.stylegan.networks import Generator, GeneratorConfig

CFG = GeneratorConfig(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32)


@pytest.fixture
def generator_file(tmp_path):
    torch.manual_seed(0)
    G = Generator(CFG).eval()
    G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 32))[:, 0].mean(0))
    return save_generator(G, tmp_path / "g.pt"), G


def test_generate_writes_images_latents_manifest_and_video(tmp_path, generator_file):
    path, G = generator_file
    out = tmp_path / "set"
    code = train_main(
        [
            "generate",
            "--generator",
            str(path),
            "--out",
            str(out),
            "--count",
            "5",
            "--seed",
            "7",
            "--truncation",
            "0.5",
            "--video",
            str(tmp_path / "walk.mp4"),
            "--video-keys",
            "2",
            "--video-frames",
            "3",
            "--progress",
            "none",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["truncation"] == 0.5
    assert [r["seed"] for r in manifest["images"]] == [7, 8, 9, 10, 11]
    ws = np.load(out / "latents.npy")
    assert ws.shape == (5, G.num_ws, 32)
    # Image 2 can be re-made alone from its seed and matches the file.
    z = torch.randn([32], generator=torch.Generator().manual_seed(9))[None]
    with torch.no_grad():
        again = to_uint8(G(z, truncation_psi=0.5, noise_mode="const"), "rgb")[0]
    saved = cv2.cvtColor(cv2.imread(str(out / manifest["images"][2]["file"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, again)
    cap = cv2.VideoCapture(str(tmp_path / "walk.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 6


def test_truncation_zero_gives_the_average_image(generator_file):
    _, G = generator_file
    z = torch.randn(3, 32)
    with torch.no_grad():
        imgs = G(z, truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(imgs[0], imgs[1]) and torch.allclose(imgs[0], imgs[2])


def test_inversion_recovers_an_image_of_a_known_latent():
    torch.manual_seed(0)
    G = Generator(CFG).eval()
    ws = G.mapping(torch.randn(1, 32))
    with torch.no_grad():
        target = G.synthesis(ws, noise_mode="const")
    inverter = Inverter(G, InversionConfig(steps=350, space="w", lpips_weight=0, optimize_noise=False))
    result = inverter.invert(target)
    assert psnr(to_uint8(result.image, "rgb")[0], to_uint8(target, "rgb")[0]) >= 30.0
    assert result.losses[-1] < result.losses[0] / 100


def test_inversion_stage_then_synthesis_through_another_generator(tmp_path, generator_file):
    path, G = generator_file
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(2):
        cv2.imwrite(str(faces / f"{i}.png"), np.full((40, 40, 3), 60 * (i + 1), np.uint8))
    inv = tmp_path / "inv"
    assert (
        train_main(
            [
                "invert",
                "--generator",
                str(path),
                "--faces",
                str(faces),
                "--out",
                str(inv),
                "--steps",
                "2",
                "--progress",
                "none",
            ]
        )
        == 0
    )
    manifest = json.loads((inv / "manifest.json").read_text())
    assert manifest["mode"] == "inversion" and len(manifest["images"]) == 2
    assert all("psnr" in r and "lpips" in r and r["source"].endswith(".png") for r in manifest["images"])
    out = tmp_path / "styl"
    assert (
        train_main(
            [
                "generate",
                "--generator",
                str(path),
                "--from-inversion",
                str(inv),
                "--out",
                str(out),
                "--progress",
                "none",
            ]
        )
        == 0
    )
    styl = json.loads((out / "manifest.json").read_text())
    assert styl["mode"] == "inversion-synthesis" and styl["images"][1]["source"].endswith("1.png")
    other = save_generator(
        Generator(
            GeneratorConfig(resolution=16, z_dim=32, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32)
        ),
        tmp_path / "o.pt",
    )
    with pytest.raises(TrainingError, match="do not fit this generator"):
        train_main(
            [
                "generate",
                "--generator",
                str(other),
                "--from-inversion",
                str(inv),
                "--out",
                str(tmp_path / "x"),
                "--progress",
                "none",
            ]
        )


def test_curation_round_records_decisions_and_grows_the_style_set(tmp_path, generator_file, monkeypatch):
    path, _ = generator_file
    cand, into = tmp_path / "cand", tmp_path / "accepted"
    assert (
        train_main(
            ["curate", "--generator", str(path), "--candidates", str(cand), "--count", "6", "--progress", "none"]
        )
        == 0
    )
    names = sorted(p.name for p in (cand / "images").iterdir())
    assert len(names) == 6 and not into.exists()
    (tmp_path / "ok.txt").write_text(f"0\n{names[3]}\n")
    assert (
        train_main(
            [
                "curate",
                "--candidates",
                str(cand),
                "--accept",
                str(tmp_path / "ok.txt"),
                "--into",
                str(into),
                "--progress",
                "none",
            ]
        )
        == 0
    )
    record = json.loads((cand / "decisions.json").read_text())
    assert record["accepted"] == [names[0], names[3]] and len(record["rejected"]) == 4
    assert sorted(p.name for p in into.iterdir()) == [f"cand_{names[0]}", f"cand_{names[3]}"]
    # Decided candidates are not decided twice.
    record = apply_decisions(cand, {names[1]: True}, into)
    assert names[1] in record["rejected"] and len(list(into.iterdir())) == 2
    answers = iter(["y", "n", "q"])
    assert prompt_decisions(names, cand, ask=lambda _: next(answers), say=lambda _: None) == {
        names[0]: True,
        names[1]: False,
    }
    with pytest.raises(TrainingError, match="index 9"):
        parse_accept_list("9", names)
    list_file = tmp_path / "list.txt"
    list_file.write_text(f"1,2\n {names[4]}\n")
    assert parse_accept_list(str(list_file), names) == {names[1], names[2], names[4]}


def test_curation_continues_training_on_the_grown_style_set(tmp_path, generator_file):
    """--continue-run fine-tunes the candidates' generator in a new run on the style folders + accepted ones."""
    path, _ = generator_file
    cand, into, styles = tmp_path / "cand", tmp_path / "accepted", tmp_path / "styles"
    styles.mkdir()
    for i in range(6):
        cv2.imwrite(str(styles / f"s{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    args = ["curate", "--generator", str(path), "--candidates", str(cand), "--count", "4", "--progress", "none"]
    assert train_main(args) == 0
    follow_up = ["--accept", "0,1", "--into", str(into), "--data", str(styles), "--preset", "tiny"]
    run = tmp_path / "r2"
    assert train_main([*args, *follow_up, "--continue-run", str(run), "--continue-kimg", "0.008"]) == 0
    options = json.loads((run / "options.json").read_text())["options"]
    assert options["images"] == 8 and options["base"] == str(path)
    assert sorted(options["data"]) == sorted([str(styles), str(into)])
    assert (run / "checkpoints").is_dir()
