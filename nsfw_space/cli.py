"""``python -m nsfw_space`` / ``nsfw-space``: serve, scan, loadtest (and more as they land).

User mistakes end as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from nsfw_space import __version__, commands, desk_commands
from nsfw_space.bulk.sources import INPUT_FORMATS
from nsfw_space.cli_values import positive_float, positive_int, unit_float
from nsfw_space.config import DEFAULT_HEAT_LEVEL, DEFAULT_MODEL
from nsfw_space.errors import NSFWSpaceError
from nsfw_space.logs import quiet_libraries
from nsfw_space.modes import FrameRule, Optimization, Precision
from nsfw_space.stopping import SIGTERM_STATUS, Terminated, sigterm_stops

logger = logging.getLogger("nsfw_space")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_libraries()
    try:
        with sigterm_stops():  # a SIGTERM (a host or a job runner stopping it) ends it as Ctrl-C does
            return int(args.run(args) or 0)
    except NSFWSpaceError as err:
        print(f"nsfw-space {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        _stop_builds()
        print(f"nsfw-space {args.command}: stopped (SIGTERM)", file=sys.stderr)
        return SIGTERM_STATUS
    except KeyboardInterrupt:
        _stop_builds()
        print(f"nsfw-space {args.command}: interrupted", file=sys.stderr)
        return 130


def _stop_builds() -> None:
    """Stop a build still running aside before the command says it stopped, so that line is the
    last (at exit it would be stopped anyway, after it). Nothing to do where no build was started."""
    builds = sys.modules.get("nsfw_space.model.builds")
    if builds is not None:
        builds.stop_all()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsfw-space", description="NSFW image moderation with a ViT classifier."
    )
    parser.add_argument("--version", action="version", version=f"nsfw-space {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    adders = (
        _add_scan,
        _add_explain,
        _add_serve,
        _add_export_web,
        _add_loadtest,
        _add_bench,
        _add_train,
        _add_eval,
    )
    for add in adders:
        add(subcommands).add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    desk_commands.add_lists(subcommands)  # their actions carry --verbose themselves
    desk_commands.add_desk(subcommands)
    return parser


def _add_scan(subcommands: Any) -> argparse.ArgumentParser:
    scan = subcommands.add_parser(
        "scan", help="score every image (and GIF/video) under folders; CSV or JSON Lines out"
    )
    scan.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files or folders (walked recursively), parquet files or tar shards",
    )
    _model_options(scan)
    scan.add_argument(
        "--threshold", type=unit_float, default=None, help="flag at or above this nsfw score (default 0.5)"
    )
    scan.add_argument(
        "--policy",
        default=None,
        metavar="POLICY.json",
        help="block and review thresholds (from eval); adds decision allow/review/block (default: NSFW_SPACE_POLICY)",
    )
    scan.add_argument(
        "--batch-size", type=positive_int, default=None, help="images per forward pass (default 16)"
    )
    scan.add_argument(
        "--output", "-o", default=None, help="FILE.csv, FILE.jsonl or FILE.parquet (default: CSV on stdout)"
    )
    scan.add_argument("--resume", action="store_true", help="skip files already in --output and append")
    scan.add_argument(
        "--frame-rule",
        choices=FrameRule.values(),
        default="max",
        help="how GIF/video frames are summed up",
    )
    scan.add_argument(
        "--min-frames", type=positive_int, default=2, help="k, for --frame-rule k-of-n (default 2)"
    )
    scan.add_argument(
        "--every",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="GIFs and videos: a frame at least every SECONDS (up to 1000) instead of 8 evenly spaced",
    )
    scan.add_argument(
        "--input-format",
        choices=("auto", *INPUT_FORMATS),
        default="auto",
        help="auto (default: .parquet files and folders of them are tables, .tar files WebDataset "
        "shards, the rest image files), files, parquet or webdataset",
    )
    scan.add_argument("--image-column", default=None, help="parquet: the column of image bytes")
    scan.add_argument("--url-column", default=None, help="parquet: the column of image URLs")
    scan.add_argument("--id-column", default=None, help="parquet: the column of ids (default FILE#ROW)")
    scan.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="local (default) or ray (Ray Data)"
    )
    scan.add_argument("--ray-address", default=None, help="ray: auto or ray://HOST:10001 (default: Ray here)")
    scan.add_argument("--workers", type=positive_int, default=None, help="ray: model workers (default: CPUs)")
    scan.add_argument("--gpus-per-worker", type=unit_float, default=0.0, help="ray: GPUs per worker (0 to 1)")
    scan.add_argument(
        "--cpus-per-worker",
        type=positive_int,
        default=None,
        help="ray: CPUs (torch threads) per worker (default: shared out on one machine, 1 on a cluster)",
    )
    scan.add_argument(
        "--decode-stage",
        choices=("auto", "on", "off"),
        default="auto",
        help="ray: decode on CPU actors of their own (auto: when workers use GPUs)",
    )
    scan.add_argument(
        "--explain-dir",
        default=None,
        metavar="DIR",
        help="local engine: write a heat map and a redacted copy of every flagged (block or review) input here",
    )
    _redaction_options(scan)
    scan.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    scan.set_defaults(run=commands.run_scan)
    return scan


def _add_explain(subcommands: Any) -> argparse.ArgumentParser:
    explain = subcommands.add_parser(
        "explain",
        help="where the model looked: NAME.heat.png, NAME.redacted.EXT and a JSON line per file",
    )
    explain.add_argument("paths", nargs="+", metavar="FILE", help="images (or folders of them)")
    explain.add_argument("--output-dir", "-o", required=True, metavar="DIR", help="where the files go")
    _model_options(explain)
    explain.add_argument(
        "--threshold", type=unit_float, default=None, help="flag at or above this nsfw score (default 0.5)"
    )
    explain.add_argument("--policy", default=None, metavar="POLICY.json", help="block and review thresholds")
    _redaction_options(explain)
    explain.set_defaults(run=commands.run_explain)
    return explain


def _redaction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--level",
        type=unit_float,
        default=DEFAULT_HEAT_LEVEL,
        help=f"redacted copy: blur where the heat (0 to 1, relative to the hottest region) is at least this (default {DEFAULT_HEAT_LEVEL})",
    )
    parser.add_argument(
        "--strength",
        type=positive_float,
        default=None,
        metavar="PIXELS",
        help="redacted copy: the blur's radius (default 4%% of the image's longer side)",
    )


def _add_serve(subcommands: Any) -> argparse.ArgumentParser:
    serve = subcommands.add_parser("serve", help="start the Gradio app (as app.py does)")
    _model_options(serve)
    serve.set_defaults(run=commands.run_serve)
    return serve


def _add_export_web(subcommands: Any) -> argparse.ArgumentParser:
    export = subcommands.add_parser(
        "export-web",
        help="write the On this device checker (page, runtime, 8-bit ONNX model) as static files",
    )
    export.add_argument("out_dir", metavar="DIR", help="an empty or new folder; any static host can serve it")
    _model_options(export)
    export.add_argument(
        "--threshold", type=unit_float, default=None, help="the page's starting threshold (default 0.5)"
    )
    export.add_argument("--policy", default=None, metavar="POLICY.json", help="block and review thresholds")
    export.set_defaults(run=commands.run_export_web)
    return export


def _add_loadtest(subcommands: Any) -> argparse.ArgumentParser:
    load = subcommands.add_parser("loadtest", help="N concurrent gradio_client users against a local Space")
    load.add_argument(
        "url", nargs="?", default=None, help="the Space's URL on this machine (default: start one)"
    )
    load.add_argument("--image", required=True, help="the image every user sends")
    load.add_argument(
        "--users", type=positive_int, default=64, help="simultaneous users (default 64, at most 256)"
    )
    load.add_argument(
        "--rounds", type=positive_int, default=3, help="rounds of calls (default 3, at most 20)"
    )
    load.add_argument("--pid", type=int, default=None, help="server process id, to report its memory")
    load.add_argument("--max-seconds", type=float, default=300.0, help="stop after this long (default 300)")
    load.set_defaults(run=commands.run_loadtest)
    return load


def _add_bench(subcommands: Any) -> argparse.ArgumentParser:
    bench = subcommands.add_parser(
        "bench", help="the model card's snippet and this package side by side (speed, scores, memory)"
    )
    bench.add_argument("--model", "-m", default=None, help="model directory (default: a random ViT-B/16)")
    bench.add_argument("--images", type=positive_int, default=64, help="JPEGs of mixed sizes (default 64)")
    bench.add_argument("--rounds", type=positive_int, default=2, help="alternating rounds (default 2)")
    bench.add_argument("--batch-size", type=positive_int, default=16, help="our batch size (default 16)")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--precision", default="auto", choices=Precision.values())
    bench.add_argument("--compile", action="store_true", help="also time torch.compile (slow warm-up)")
    bench.add_argument("--api", action="store_true", help="also time /classify through gradio_client")
    bench.add_argument("--api-calls", type=positive_int, default=30, help="calls per server (default 30)")
    bench.add_argument("--workdir", default=None, help="keep the generated model and images here")
    bench.set_defaults(run=commands.run_bench)
    return bench


def _add_train(subcommands: Any) -> argparse.ArgumentParser:
    training = subcommands.add_parser(
        "train", help="fine-tune a ViT on labelled folders (the model card's recipe)"
    )
    training.add_argument(
        "data_dir", metavar="DATA_DIR", help="one subfolder per label, or train/ and test/ that hold them"
    )
    training.add_argument("--output-dir", "-o", required=True, help="where the trained model is written")
    training.add_argument(
        "--base", default="google/vit-base-patch16-224-in21k", help="base model (hub id or directory)"
    )
    training.add_argument("--batch-size", type=positive_int, default=16)
    training.add_argument("--learning-rate", type=float, default=5e-5)
    training.add_argument("--epochs", type=float, default=3.0)
    training.add_argument(
        "--eval-split", type=float, default=0.2, help="share held out when there is no test/ folder"
    )
    training.add_argument("--seed", type=int, default=42)
    training.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    training.set_defaults(run=commands.run_train)
    return training


def _add_eval(subcommands: Any) -> argparse.ArgumentParser:
    evaluation = subcommands.add_parser(
        "eval", help="metrics, a chosen threshold and plots on labelled folders"
    )
    evaluation.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        nargs="?",
        help="one subfolder per label (or a test/ folder of them); leave out with --from-desk",
    )
    evaluation.add_argument(
        "--from-desk",
        action="store_true",
        help="use the moderation desk's decided items (NSFW_SPACE_DESK_DB) as the labelled data",
    )
    evaluation.add_argument("--output-dir", "-o", required=True, help="where metrics.json and the plots go")
    _model_options(evaluation)
    evaluation.add_argument("--target-precision", type=unit_float, default=0.95)
    evaluation.add_argument(
        "--block-precision",
        type=unit_float,
        default=0.99,
        help="policy.json: block without a person at this precision (default 0.99)",
    )
    evaluation.add_argument(
        "--review-recall",
        type=unit_float,
        default=0.95,
        help="policy.json: send to review from the threshold that catches this share of nsfw (default 0.95)",
    )
    evaluation.add_argument(
        "--threshold", type=unit_float, default=None, help="for precision/recall/F1 (default 0.5)"
    )
    evaluation.add_argument("--batch-size", type=positive_int, default=None)
    evaluation.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    evaluation.set_defaults(run=commands.run_eval)
    return evaluation


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"hub id or local directory (default: NSFW_SPACE_MODEL if set, else {DEFAULT_MODEL})",
    )
    parser.add_argument("--revision", default=None, help="hub revision to pin")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default=None, choices=Precision.values())
    parser.add_argument(
        "--optimize",
        default=None,
        choices=Optimization.values(),
        help="forward-pass speed-up (default auto)",
    )


if __name__ == "__main__":
    sys.exit(main())
