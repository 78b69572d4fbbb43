"""Model fusion: resolution-dependent layer swapping and weight interpolation between two generators.

Two generators of one architecture (typically a base and its fine-tuned style child) are blended per
resolution: the child's weights at resolution r are ``lerp(A_r, B_r, α_r)``. Layer swapping at level r
is the special case α = 0 up to r and 1 above (coarse structure — pose, face shape, identity — from
A; textures and colours from B), and a single α for every level is plain weight interpolation. Sliding
these is the identity ↔ style tilt. ``torch.lerp`` is exact at 0 and 1, so the ends reproduce the
parents bit for bit.

Chaining (nesting) applies fusion repeatedly: ((A ⊕ B) ⊕ C) …, e.g. a face base, a cartoon child and
a second style fine-tuned from the cartoon one.

The mapping network follows the α of the lowest resolution unless given its own; per-layer noise
constants are taken from whichever parent has the larger weight.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.errors import TrainingError
from training.stylegan.networks import Generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionSpec:
    """α per resolution (missing resolutions use ``default``); ``mapping`` None = lowest resolution's α."""

    alphas: dict[int, float] = field(default_factory=dict)
    default: float = 1.0
    mapping: float | None = None

    @classmethod
    def swap(cls, level: int) -> FusionSpec:
        """Layer swap: resolutions ≤ ``level`` from A, above from B (level 0: all B; ≥ top: all A)."""
        return cls(alphas={r: 0.0 if r <= level else 1.0 for r in (2**i for i in range(2, 13))})

    @classmethod
    def blend(cls, alpha: float) -> FusionSpec:
        return cls(default=alpha)

    def alpha(self, res: int) -> float:
        return self.alphas.get(res, self.default)

    def describe(self, resolutions: list[int]) -> dict[str, float]:
        return {"mapping": self.mapping_alpha(resolutions), **{str(r): self.alpha(r) for r in resolutions}}

    def mapping_alpha(self, resolutions: list[int]) -> float:
        return self.mapping if self.mapping is not None else self.alpha(min(resolutions))


def parameter_resolution(name: str) -> int | None:
    """The resolution a generator parameter belongs to (None for the mapping network)."""
    m = re.match(r"synthesis\.b(\d+)\.", name)
    return int(m.group(1)) if m else None


def check_compatible(a: Generator, b: Generator) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    if set(sa) != set(sb):
        diff = sorted(set(sa) ^ set(sb))
        raise TrainingError(
            f"generators differ in parameters ({', '.join(diff[:6])}...): fusion needs one architecture"
        )
    bad = [k for k in sa if sa[k].shape != sb[k].shape]
    if bad:
        raise TrainingError(f"generators differ in shape at {', '.join(bad[:6])}: fusion needs one architecture")


@torch.no_grad()
def fuse(a: Generator, b: Generator, spec: FusionSpec) -> Generator:
    """A new generator whose weights are lerp(A, B, α(resolution)) parameter by parameter."""
    check_compatible(a, b)
    child = copy.deepcopy(a)
    resolutions = a.synthesis.block_resolutions
    mapping_alpha = spec.mapping_alpha(resolutions)
    sb = b.state_dict()
    for name, value in child.state_dict().items():
        res = parameter_resolution(name)
        alpha = mapping_alpha if res is None else spec.alpha(res)
        other = sb[name].to(value.dtype)
        if name.endswith(("noise_const", "resample_filter")):
            value.copy_(other if alpha >= 0.5 else value)
        else:
            value.copy_(torch.lerp(value, other, alpha))
    return child.eval().requires_grad_(False)


def parse_spec(text: str) -> FusionSpec:
    """``swap=16`` | ``alpha=0.5`` | ``4:0,8:0,16:0.5,32:1`` (per resolution; ``mapping:0`` allowed)."""
    text = text.strip()
    try:
        if text.startswith("swap="):
            return FusionSpec.swap(int(text[5:]))
        if text.startswith("alpha="):
            return FusionSpec.blend(float(text[6:]))
        alphas: dict[int, float] = {}
        mapping = None
        for item in text.split(","):
            key, _, value = item.partition(":")
            if key.strip() == "mapping":
                mapping = float(value)
            else:
                alphas[int(key)] = float(value)
        return FusionSpec(alphas=alphas, mapping=mapping)
    except ValueError:
        raise TrainingError(f"fusion spec {text!r} not understood: use swap=R, alpha=A or R:A,R:A,...") from None


# ----- the ``fuse`` stage ---------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--a", required=True, help="first generator (e.g. the base / photo model)")
    parser.add_argument("--b", required=True, help="second generator (e.g. the fine-tuned style model)")
    parser.add_argument("--spec", default="swap=8", help="swap=R | alpha=A | R:A,R:A,... (mapping:A)")
    parser.add_argument(
        "--chain",
        nargs="*",
        default=[],
        metavar="CKPT@SPEC",
        help="further models fused onto the result in order, e.g. runs/anime@alpha=0.5",
    )
    parser.add_argument("--out", required=True, help="output generator file (.pt)")
    parser.add_argument("--grid", help="also write a grid PNG: rows = α from 0 to 1 (or swap levels), same latents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncation", type=float, default=0.7)


def run(args) -> int:
    from training.stylegan.checkpoint import load_generator, save_generator

    a, b = load_generator(args.a), load_generator(args.b)
    spec = parse_spec(args.spec)
    result = fuse(a, b, spec)
    steps = [{"a": str(args.a), "b": str(args.b), "spec": spec.describe(a.synthesis.block_resolutions)}]
    for item in args.chain:
        path, sep, text = item.rpartition("@")
        if not sep:
            raise TrainingError(f"--chain expects CKPT@SPEC, got {item!r}")
        step_spec = parse_spec(text)
        result = fuse(result, load_generator(path), step_spec)
        steps.append({"b": path, "spec": step_spec.describe(a.synthesis.block_resolutions)})
    save_generator(result, args.out, {"fusion": steps})
    log.info("fused generator written to %s", args.out)
    if args.grid:
        write_fusion_grid(a, b, Path(args.grid), seed=args.seed, psi=args.truncation)
    return 0


@torch.no_grad()
def write_fusion_grid(a: Generator, b: Generator, path: Path, seed: int = 0, psi: float = 0.7, n: int = 6) -> Path:
    """Rows: swap levels from 'all A' to 'all B'; then α blends 0, 0.25 … 1. Columns: the same latents."""
    from training.images import save_grid

    z = torch.randn([n, a.z_dim], generator=torch.Generator().manual_seed(seed))
    ws = a.mapping(z, truncation_psi=psi)
    rows = []
    resolutions = a.synthesis.block_resolutions
    specs = [FusionSpec.swap(r) for r in [resolutions[-1], *resolutions[-2::-1]]] + [FusionSpec.swap(0)]
    specs += [FusionSpec.blend(x) for x in (0.25, 0.5, 0.75)]
    for spec in specs:
        rows.append(fuse(a, b, spec).synthesis(ws, noise_mode="const"))
    return save_grid(path, torch.cat(rows), cols=n)
