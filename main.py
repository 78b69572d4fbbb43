"""Stylecast command line: ``app`` (default), ``stylize``, ``bench``, ``styles``, ``train``, ``eval``.

Heavy packages load only inside the command that needs them: ``stylize`` never imports torch or Qt,
``train`` never imports Qt.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from engine.errors import StylecastError


def _cmd_app(args: argparse.Namespace) -> int:
    from gui.app import run_app

    return run_app(source=args.source, style=args.style)


def _blend_setting(name: str):
    """An argparse type: a number in the range the blend setting ``name`` takes (NaN and inf refused)."""
    from engine.bundle import blend_setting_problem

    def parse(text: str) -> float:
        value = float(text)  # a ValueError becomes argparse's own "invalid value" message
        if problem := blend_setting_problem(name, value):
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _cmd_stylize(args: argparse.Namespace) -> int:
    from engine.session import SessionOptions, run_session

    options = SessionOptions(
        source=args.source,
        style=args.style,
        tier=args.tier,
        backend=args.backend,
        threads=args.threads,
        max_faces=args.max_faces,
        intensity=args.intensity,
        temporal=args.temporal,
        color_match=args.color_match,
        skin_tone_limit=args.skin_tone_limit,
        out=args.out,
        report=args.report,
        frames=args.frames,
        paced=args.paced,
        virtual_camera=args.virtual_camera,
        style_per_face=tuple(s for s in args.style_per_face.split(",") if s),
        overlap=not args.no_overlap,
        light_tracking=not args.full_tracking,
        propagate_landmarks=not args.mesh_every_frame,
        redraw_every_face=args.redraw_every_face,
    )
    report = run_session(options)
    rt = report["runtime"]
    summary = {
        "style": report["style_label"],
        "backend": report["backend"],
        "tiers_used": report["tiers_used"],
        "frames": rt["frames_processed"],
        "fps": rt["fps"],
        "latency_ms": rt["latency_ms"],
        "startup_s": report["startup_s"],
        "face_fraction": report["faces"]["face_fraction"],
        "output": args.out,
        "report": args.report,
        "errors": rt["sink_errors"] or None,
    }
    print(json.dumps(summary, indent=1))
    return 0 if not rt["sink_errors"] else 1


def _cmd_styles(args: argparse.Namespace) -> int:
    from engine.bundle import BundleRegistry

    scan = BundleRegistry().scan()
    for style_id, bundle in sorted(scan.bundles.items()):
        tiers = ", ".join(f"{t.id} ({t.gmacs:.2f} GMAC)" for t in bundle.manifest.tiers)
        print(f"{style_id:16s} {bundle.manifest.name} [{tiers}]  {bundle.root}")
    for folder, err in scan.errors.items():
        print(f"REJECTED {folder}: {err}")
    if not scan.bundles:
        from engine.session import passthrough_notice

        print(passthrough_notice())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import run_bench

    return run_bench(args.what, args.rest)


def _training_entry(module: str):
    """The training CLI, or a clear message where the train extra (torch) is not installed."""
    import importlib

    try:
        return importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "training"):
            raise StylecastError(
                f"training is not available in this installation ({exc.name} is missing); install from source"
                " with `make setup` to train styles"
            ) from exc
        raise


def _cmd_train(args: argparse.Namespace) -> int:
    return _training_entry("training.cli")(args.rest)


def _cmd_eval(args: argparse.Namespace) -> int:
    return _training_entry("training.evaluate")(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylecast", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")

    app = sub.add_parser("app", help="open the window (default)")
    app.add_argument("--source", default="auto", help="demo, camera:N, a video file or an image folder")
    app.add_argument("--style", default="auto")
    app.set_defaults(func=_cmd_app)

    st = sub.add_parser("stylize", help="run the live pipeline headless on a source")
    st.add_argument("--source", default="demo", help="demo | demo:still | camera:N | video file | image folder")
    st.add_argument("--style", default="auto", help="style id, 'auto' (default style) or 'none' (pass-through)")
    st.add_argument("--tier", default="auto", help="'auto' or a tier id of the style")
    st.add_argument("--backend", default="auto", choices=["auto", "onnx", "mnn"])
    st.add_argument("--threads", type=int, default=2, help="inference threads")
    st.add_argument("--max-faces", type=int, default=4)
    st.add_argument("--intensity", type=_blend_setting("intensity"), help="0 = original, 1 = full style")
    st.add_argument("--temporal", type=_blend_setting("temporal"), help="temporal smoothing strength 0..1")
    st.add_argument("--color-match", type=_blend_setting("color_match"), help="colour matching strength 0..1")
    st.add_argument(
        "--skin-tone-limit",
        type=_blend_setting("skin_tone_limit"),
        default=None,
        metavar="L",
        help="the most (L*) the style may move the face's skin lightness (default: the style's; 0 = off)",
    )
    st.add_argument(
        "--out",
        default=None,
        help="video file to write (H.264 .mp4); for photos also an image file (one photo) or a folder",
    )
    st.add_argument("--report", default=None, help="JSON stats report to write")
    st.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    st.add_argument("--paced", action="store_true", help="play files at real-time speed (drops frames)")
    st.add_argument("--virtual-camera", default=None, metavar="BACKEND", help="also send to a virtual camera")
    st.add_argument(
        "--style-per-face",
        default="",
        metavar="ID,ID,...",
        help="give faces their own styles: each new face takes the next of these in turn",
    )
    st.add_argument(
        "--no-overlap", action="store_true", help="track each frame only after the last one is rendered (slower)"
    )
    st.add_argument(
        "--full-tracking", action="store_true", help="the dearer tracking scheme (to measure light tracking against)"
    )
    st.add_argument(
        "--mesh-every-frame",
        action="store_true",
        help="landmark every frame instead of moving the landmarks by optical flow between mesh updates",
    )
    st.add_argument(
        "--redraw-every-face",
        action="store_true",
        help="stylize every face on every frame, even when a crowd overruns the frame's stylizer budget",
    )
    st.set_defaults(func=_cmd_stylize)

    sty = sub.add_parser("styles", help="list installed styles and rejected bundles")
    sty.set_defaults(func=_cmd_styles)

    be = sub.add_parser("bench", help="benchmarks; print JSON")
    be.add_argument("what", choices=["engine", "students", "temporal", "tracking", "styles", "all"])
    be.add_argument("rest", nargs=argparse.REMAINDER)
    be.set_defaults(func=_cmd_bench)

    tr = sub.add_parser("train", help="training pipeline (needs the train extra)", add_help=False)
    tr.add_argument("rest", nargs=argparse.REMAINDER)
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a bundle or a run (needs the train extra)", add_help=False)
    ev.add_argument("rest", nargs=argparse.REMAINDER)
    ev.set_defaults(func=_cmd_eval)
    return parser


# Commands whose own CLI parses everything after their name (argparse's REMAINDER cannot start with an option).
DELEGATED = {"train": _cmd_train, "eval": _cmd_eval}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in DELEGATED:
        args = argparse.Namespace(verbose=False, command=argv[0], func=DELEGATED[argv[0]], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        args = parser.parse_args(["app", *(argv or [])])
    try:
        return args.func(args)
    except StylecastError as exc:
        logging.getLogger("stylecast").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
