"""StyleGAN comparison runs: FID, precision and recall (EL0 / VGG) over CPU time per run, plots, sample grids.

    python bench/stylegan_compare.py eval --data STYLE_DIR --runs runs/a runs/b ...
    python bench/stylegan_compare.py report --runs runs/a runs/b ... --docs docs/stylegan
    python bench/stylegan_compare.py rows --folders A/images B/images --count 6 --out grid.png

``eval`` fills each run's ``fid.jsonl`` from its snapshots (see training/stylegan/evaluate.py);
``rows`` stacks image folders as grid rows (targets over inversions, truncation sweeps).
``report`` prints one JSON object (per run: kimg/CPU-hour, final and best figures, the curve) and, with
``--docs``, writes fid_el0.png / fid_vgg.png (against CPU minutes) and each run's last sample grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CURVE_METRICS = ("fid_el0", "fid_vgg", "precision_el0", "recall_el0", "precision_vgg", "recall_vgg")
sys.path.insert(0, str(REPO))


def cmd_eval(args) -> None:
    import torch

    from training.stylegan.evaluate import evaluate_run

    torch.set_num_threads(args.threads)
    for run in args.runs:
        evaluate_run(Path(run), [Path(d) for d in args.data], n_fake=args.n_fake)


def cmd_report(args) -> None:
    import cv2

    from training.stylegan.evaluate import cached_records

    report = {}
    for run in map(Path, args.runs):
        curve = sorted(cached_records(run).values(), key=lambda r: r["iteration"])
        if not curve:
            continue
        stats_path = run / "stats.jsonl"
        stats = [json.loads(line) for line in stats_path.read_text().splitlines()] if stats_path.exists() else []
        last = stats[-1] if stats else {}
        report[run.name] = {
            "kimg": last.get("kimg"),
            "cpu_minutes": last.get("cpu_minutes"),
            "kimg_per_cpu_hour": last["kimg"] / (last["cpu_minutes"] / 60) if last.get("cpu_minutes") else None,
            "final_fid_el0": curve[-1]["fid_el0"],
            "final_fid_vgg": curve[-1]["fid_vgg"],
            "best_fid_el0": min(r["fid_el0"] for r in curve),
            "best_fid_vgg": min(r["fid_vgg"] for r in curve),
            **{f"final_{k}": curve[-1][k] for k in CURVE_METRICS[2:]},
            "augment_p": last.get("augment_p"),
            "curve": [{k: r[k] for k in ("cpu_minutes", "kimg", *CURVE_METRICS)} for r in curve],
        }
    print(json.dumps(report, indent=1))
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        _plot(report, "fid_el0", "FID-EL0 (EfficientNet-Lite0; not Inception FID)", docs / "fid_el0.png")
        _plot(report, "fid_vgg", "FID-VGG (VGG16 relu5_3 pooled; log scale)", docs / "fid_vgg.png", log=True)
        for run in map(Path, args.runs):
            latest = run / "samples" / "latest.png"
            if latest.exists():  # the first two rows (8 samples) keep the committed PNGs small
                grid = cv2.imread(str(latest))
                cv2.imwrite(
                    str(docs / f"samples_{run.name}.png"),
                    grid[: grid.shape[0] // 2 + 1],
                    [cv2.IMWRITE_PNG_COMPRESSION, 9],
                )


def cmd_rows(args) -> None:
    """Stack image folders as rows of one grid (e.g. targets over their inversions, or ψ sweeps)."""
    import cv2
    import numpy as np

    from training.images import grid

    rows = []
    for folder in args.folders:
        files = sorted(Path(folder).glob("*.png"))[: args.count]
        rows += [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    out = grid(np.stack(rows), cols=args.count)
    cv2.imwrite(args.out, cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _plot(report: dict, key: str, title: str, path: Path, log: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for name, r in report.items():
        xs = [p["cpu_minutes"] for p in r["curve"]]
        ax.plot(xs, [p[key] for p in r["curve"]], marker="o", label=name)
    ax.set_xlabel("CPU minutes (1 thread)")
    ax.set_ylabel(key)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--runs", nargs="+", required=True)
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--n-fake", type=int, help="generated images per snapshot (default: the style set's size)")
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--runs", nargs="+", required=True)
    r.add_argument("--docs", help="write plots and sample grids here")
    g = sub.add_parser("rows")
    g.add_argument("--folders", nargs="+", required=True)
    g.add_argument("--count", type=int, default=6)
    g.add_argument("--out", required=True)
    args = parser.parse_args()
    {"eval": cmd_eval, "report": cmd_report, "rows": cmd_rows}[args.cmd](args)


if __name__ == "__main__":
    main()
