"""Official StyleGAN2-ADA checkpoints: the documented 256² layout loads by name; bad files are named.

``official_generator_layout`` writes down the parameter names and shapes of the official
``training/networks.py`` Generator (paper256 config: channel_base 16384, channel_max 512, z/w 512,
8 mapping layers) independently of our modules, so the test checks our module tree against the spec.
"""

import io
import pickle
import sys
import types

import pytest
import torch

from training.errors import TrainingError
from training.stylegan import official
from training.stylegan.checkpoint import load_generator, load_networks


def official_generator_layout(res=256, z=512, w=512, layers=8, base=16384, cmax=512):
    ch = {r: min(base // r, cmax) for r in [2**i for i in range(2, res.bit_length())]}
    shapes = {}
    for i in range(layers):
        shapes[f"mapping.fc{i}.weight"] = (w, z if i == 0 else w)
        shapes[f"mapping.fc{i}.bias"] = (w,)
    shapes["mapping.w_avg"] = (w,)

    def layer(prefix, cin, cout, r):
        shapes.update(
            {
                f"{prefix}.weight": (cout, cin, 3, 3),
                f"{prefix}.bias": (cout,),
                f"{prefix}.noise_strength": (),
                f"{prefix}.noise_const": (r, r),
                f"{prefix}.resample_filter": (4, 4),
                f"{prefix}.affine.weight": (cin, w),
                f"{prefix}.affine.bias": (cin,),
            }
        )

    for r in ch:
        b = f"synthesis.b{r}"
        shapes[f"{b}.resample_filter"] = (4, 4)
        if r == 4:
            shapes[f"{b}.const"] = (ch[4], 4, 4)
        else:
            layer(f"{b}.conv0", ch[r // 2], ch[r], r)
        layer(f"{b}.conv1", ch[r], ch[r], r)
        shapes.update(
            {
                f"{b}.torgb.weight": (3, ch[r], 1, 1),
                f"{b}.torgb.bias": (3,),
                f"{b}.torgb.affine.weight": (ch[r], w),
                f"{b}.torgb.affine.bias": (ch[r],),
            }
        )
    return shapes


def official_state(**kw):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.1 for k, s in official_generator_layout(**kw).items()}


def test_official_256_generator_loads_with_nothing_missing_or_left_over(tmp_path):
    state = official_state()
    assert len(state) == 144
    G = official.generator_from_state(state, "official")
    assert (G.img_resolution, G.z_dim, G.w_dim, G.num_ws) == (256, 512, 512, 14)
    assert G.cfg.channel_base == 16384 and G.cfg.channel_max == 512
    ours = G.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], state[k]) for k in state)
    # Through a file too, bare or nested under G_ema, and it renders.
    torch.save({"G_ema": state}, tmp_path / "ffhq.pt")
    G2 = load_generator(tmp_path / "ffhq.pt")
    img = G2(torch.randn(1, 512), noise_mode="const")
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()


def test_other_official_configs_are_inferred():
    G = official.generator_from_state(official_state(res=64, z=128, w=256, layers=2, base=4096, cmax=256), "x")
    assert (G.img_resolution, G.z_dim, G.w_dim, G.cfg.mapping_layers) == (64, 128, 256, 2)
    assert [G.cfg.channels(r) for r in (4, 8, 16, 32, 64)] == [256, 256, 256, 128, 64]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.pop("synthesis.b16.conv0.affine.bias"), "missing synthesis.b16.conv0.affine.bias"),
        (lambda s: s.__setitem__("synthesis.b64.conv1.extra", torch.zeros(1)), "unexpected synthesis.b64.conv1.extra"),
        (lambda s: s.__setitem__("synthesis.b32.torgb.bias", torch.zeros(4)), "mis-shaped synthesis.b32.torgb.bias"),
        (lambda s: s.__setitem__("mapping.embed.weight", torch.zeros(512, 10)), "unexpected mapping.embed.weight"),
    ],
)
def test_incompatible_parameters_are_rejected_by_name(edit, message):
    state = official_state(res=32, base=512, cmax=64, z=32, w=32, layers=2)
    edit(state)
    with pytest.raises(TrainingError, match=message.replace(".", r"\.")):
        official.generator_from_state(state, "bad.pt")


def test_not_a_generator_is_rejected(tmp_path):
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="neither a StyleGAN2 generator"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(TrainingError, match="junk.pkl"):
        load_generator(tmp_path / "junk.pkl")


# ----- network pickles ---------------------------------------------------------------------------


def _persistent_pickle(nets: dict, monkeypatch) -> bytes:
    """Pickle the way official persistent classes do: ``_reconstruct_persistent_obj(meta)`` per module."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: our loader stubs it
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)

    class Persistent:
        def __init__(self, class_name, state):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            meta = {
                "type": "class",
                "version": 6,
                "module_src": "import os; os.system('echo pwned')",
                "class_name": self.class_name,
                "state": self.state,
            }
            return (_reconstruct_persistent_obj, (meta,))

    def tree(state, class_name):
        children = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            children.setdefault(head, {})[rest] = value
        tensors = {k: v[""] for k, v in children.items() if set(v) == {""}}
        modules = {k: tree(v, k) for k, v in children.items() if set(v) != {""}}
        buffers = ("resample_filter", "noise_const", "w_avg")
        return Persistent(
            class_name,
            {
                "_parameters": {k: torch.nn.Parameter(v) for k, v in tensors.items() if k not in buffers},
                "_buffers": {k: v for k, v in tensors.items() if k in buffers},
                "_modules": modules,
                "training": False,
                "_init_kwargs": {"w_dim": 32},
            },
        )

    return pickle.dumps({k: tree(v, k) for k, v in nets.items()} | {"training_set_kwargs": {"resolution": 32}})


def test_network_pickle_loads_through_the_restricted_unpickler(tmp_path, monkeypatch):
    state = official_state(res=32, base=512, cmax=64, z=32, w=32, layers=2)
    data = _persistent_pickle({"G_ema": state}, monkeypatch)
    (tmp_path / "net.pkl").write_bytes(data)
    nets = load_networks(tmp_path / "net.pkl")
    assert nets.kind == "official-pickle"
    loaded = nets.G_ema.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_pickle_with_other_callables_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(TrainingError, match=r"references (posix|os)\.system"):
        load_networks(tmp_path / "evil.pkl")
    buf = io.BytesIO()
    torch.save({"arch": "student", "params": {}}, buf)
    (tmp_path / "student.pt").write_bytes(buf.getvalue())
    with pytest.raises(TrainingError, match="'student' checkpoint"):
        load_networks(tmp_path / "student.pt")
