"""What each CLI command does, once its arguments are parsed (see cli.py): check the inputs, then
load what is needed and call one function. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsfw_space.config import Settings

if TYPE_CHECKING:
    from nsfw_space.model.policy import Policy


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        model=args.model,
        revision=args.revision,
        device=args.device,
        precision=args.precision,
        optimize=args.optimize,
        threshold=getattr(args, "threshold", None),
        batch_size=getattr(args, "batch_size", None),
        policy=getattr(args, "policy", None),
    )


def policy_from(settings: Settings, threshold: float | None = None) -> Policy:
    """The settings' policy file (NSFW_SPACE_POLICY or --policy), else their single threshold; a
    ``threshold`` given on the command line wins over the policy's block threshold."""
    from nsfw_space.model.policy import Policy

    if not settings.policy:
        return Policy.single(settings.threshold)
    return Policy.load(settings.policy).at(threshold)


def _review_note(count: int, policy: Policy) -> str:
    if policy.review >= policy.block:
        return ""
    return f", {count} for review (review threshold {policy.review})"


def run_scan(args: argparse.Namespace) -> int:
    """Every argument, input and the model's location are checked before torch is imported, so a
    mistake is one line in a fraction of a second, not after the model has loaded."""
    from nsfw_space.bulk.explained import ExplanationFiles
    from nsfw_space.bulk.scan import plan_scan, scan
    from nsfw_space.bulk.sources import Inputs, url_fetcher
    from nsfw_space.errors import ConfigError
    from nsfw_space.model.loading import check_model_argument

    settings = settings_from(args)
    if args.engine == "ray" and args.explain_dir:
        raise ConfigError("--explain-dir works with --engine local; explain flagged files from Ray's output.")
    if args.engine == "ray" and settings.desk_db:
        raise ConfigError(
            "the desk's known-image lists are checked by --engine local; unset NSFW_SPACE_DESK_DB for Ray."
        )
    inputs = Inputs(tuple(args.paths), args.input_format, args.image_column, args.url_column, args.id_column)
    plan = plan_scan(  # inputs and output checked first
        inputs, args.output, args.resume, max_bytes=settings.max_file_bytes, fetch=url_fetcher(settings)
    )
    if plan.total == 0:
        done = (
            f"all {plan.skipped} already in {args.output}"
            if plan.skipped
            else "no image or video files found"
        )
        print(f"nothing to scan: {done}", file=sys.stderr)
        return 0
    policy = policy_from(settings, getattr(args, "threshold", None))
    options = {
        "threshold": policy.block,
        "review_threshold": policy.review,
        "batch_size": settings.batch_size,
        "progress": not args.quiet,
        "rule": args.frame_rule,
        "k": args.min_frames,
    }
    if args.explain_dir:
        options["explain_to"] = ExplanationFiles(
            args.explain_dir,
            level=args.level,
            strength=args.strength,
            threshold=policy.block,
            review_threshold=policy.review,
        )
    check_model_argument(settings.model, settings.revision)
    if args.engine == "ray":  # Ray's start and the workers' model loads are part of its time
        from nsfw_space.bulk.ray_engine import RayOptions, scan_with_ray

        decode = {"auto": None, "on": True, "off": False}[args.decode_stage]
        engine = RayOptions(
            args.ray_address,
            args.workers,
            args.gpus_per_worker,
            args.every,
            decode_stage=decode,
            cpus_per_worker=args.cpus_per_worker,
        )
        started = time.perf_counter()
        summary = scan_with_ray(settings, plan, engine, **options)
        seconds = time.perf_counter() - started
    else:
        from nsfw_space.desk.desk import Desk
        from nsfw_space.model.classifier import NSFWClassifier

        desk = Desk.from_settings(settings)  # known-image lists decide first when the desk is on
        classifier = NSFWClassifier.from_settings(settings, job=True)
        if args.every:
            classifier = classifier.with_limits(every=args.every)
        started = time.perf_counter()
        summary = scan(classifier, plan, desk=desk, **options)
        seconds = time.perf_counter() - started
    rate = summary.files / seconds if seconds > 0 else 0.0
    skipped = f", {summary.skipped} already done" if summary.skipped else ""
    print(
        f"scanned {_count(summary.files, 'file')} in {seconds:.1f} s ({rate:.1f}/s): {summary.flagged} "
        f"flagged nsfw at threshold {policy.block}{_review_note(summary.review, policy)}, "
        f"{summary.errors} unreadable{skipped}",
        file=sys.stderr,
    )
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Explain each file: its heat map, redacted copy and JSON line (also printed on stdout).
    Exit status 1 when a file could not be read (one line each on stderr), else 0."""
    import json

    from nsfw_space.bulk.explained import ExplanationFiles
    from nsfw_space.bulk.locations import IMAGE_SUFFIXES, VIDEO_SUFFIXES, listing
    from nsfw_space.errors import ConfigError, InvalidImageError

    settings = settings_from(args)
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise ConfigError(f"{missing[0]!r} does not exist.")
    names = list(listing(args.paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    if not names:
        raise ConfigError("No image files were found in the paths given.")
    policy = policy_from(settings, args.threshold)
    files = ExplanationFiles(
        args.output_dir,
        level=args.level,
        strength=args.strength,
        threshold=policy.block,
        review_threshold=policy.review,
    )
    from nsfw_space.model.loading import check_model_argument

    check_model_argument(settings.model, settings.revision)  # before torch is imported
    from nsfw_space.model.classifier import NSFWClassifier

    classifier = NSFWClassifier.from_settings(settings, job=True)
    unreadable = 0
    for name in names:
        try:
            explanation = classifier.explain(name)
        except InvalidImageError as err:
            print(f"nsfw-space explain: {err}", file=sys.stderr)
            unreadable += 1
            continue
        print(json.dumps(files.write(name, explanation)), flush=True)
    print(f"explained {_count(len(names) - unreadable, 'file')} into {args.output_dir}", file=sys.stderr)
    return 1 if unreadable else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def run_serve(args: argparse.Namespace) -> int:
    from nsfw_space.model.loading import check_model_argument

    logging.getLogger("nsfw_space").setLevel(logging.INFO)
    settings = settings_from(args)
    check_model_argument(settings.model, settings.revision)  # before Gradio and torch are imported
    from nsfw_space.space.demo import demo_from_settings, launch_options

    demo = demo_from_settings(settings)
    demo.launch(**launch_options(settings, demo))
    return 0


def run_export_web(args: argparse.Namespace) -> int:
    """Build (or take from the cache) the browser model and write the static on-device checker."""
    from nsfw_space.errors import ConfigError
    from nsfw_space.model.loading import check_model_argument

    out_dir = Path(args.out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} is not an empty folder; give a new or empty one")
    settings = settings_from(args)
    policy = policy_from(settings, args.threshold)
    check_model_argument(settings.model, settings.revision)  # before torch is imported
    from nsfw_space.model.classifier import NSFWClassifier
    from nsfw_space.web.building import BrowserModel
    from nsfw_space.web.serve import export_site, page_status

    classifier = NSFWClassifier.from_settings(settings, job=True)
    browser = BrowserModel(
        classifier,
        source=(settings.model, settings.revision),
        cache_dir=settings.cache_dir or None,
        runtime_dir=settings.web_runtime or None,
    )
    browser.start(build="now")
    if not browser.ready:
        raise ConfigError(f"the browser model could not be made: {browser.reason}")
    labels = {"nsfw_labels": [classifier.labels[i] for i in classifier.nsfw_indices]}
    status = page_status(browser, {"threshold": policy.block, "review_threshold": policy.review}, labels)
    written = export_site(browser, status, out_dir)
    size = sum(path.stat().st_size for path in written)
    print(
        f"wrote {len(written)} files ({size / 1e6:.1f} MB) to {out_dir}; serve it with any static host, e.g."
    )
    print(f"  python -m http.server --directory {out_dir} 8000   # then open http://127.0.0.1:8000/")
    return 0


def run_loadtest(args: argparse.Namespace) -> int:
    from nsfw_space.tools.loadtest import format_report, run_loadtest, start_local_server

    process = None
    url, pid = args.url, args.pid
    if url is None:
        process, url = start_local_server()
        pid = process.pid
    try:
        results = run_loadtest(
            url,
            args.image,
            users=args.users,
            rounds=args.rounds,
            server_pid=pid,
            max_seconds=args.max_seconds,
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    print(format_report(results, args.users))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import tempfile

    from nsfw_space.tools.benchmark import ensure_benchmark_model, run_api_benchmark, run_benchmark

    workdir = args.workdir or tempfile.mkdtemp(prefix="nsfw-bench-")
    model = args.model or ensure_benchmark_model(Path(workdir))
    print(
        run_benchmark(
            model_dir=model,
            images=args.images,
            rounds=args.rounds,
            batch_size=args.batch_size,
            precision=args.precision,
            device=args.device,
            compile_model=args.compile,
            workdir=workdir,
        ),
        flush=True,
    )
    if args.api:
        print()
        print(
            run_api_benchmark(
                model_dir=model, calls=args.api_calls, precision=args.precision, workdir=workdir
            )
        )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from nsfw_space.model.loading import check_model_argument

    check_model_argument(args.base, setting="--base")  # a base that cannot load: said before torch loads
    from nsfw_space.training.train import train, training_stats_text

    if not args.quiet:
        show_library_progress()
    stats = train(
        args.data_dir,
        args.output_dir,
        base=args.base,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        eval_split=args.eval_split,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(f"model written to {args.output_dir}\nTraining Stats:\n{training_stats_text(stats)}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """The arguments, the data folder (against a local model's labels) and the model's location
    are checked before torch is imported."""
    from nsfw_space.model.loading import check_model_argument, labels_on_disk
    from nsfw_space.training.evaluate import eval_set_for, require_plotting

    require_plotting()  # before the model loads and every image is scored

    settings = settings_from(args)
    if args.from_desk == bool(args.data_dir):
        from nsfw_space.errors import ConfigError

        raise ConfigError("give DATA_DIR or --from-desk (the desk's decided items), one of them")
    check_model_argument(settings.model, settings.revision)
    labels = labels_on_disk(settings.model)
    if args.data_dir and labels:
        eval_set_for(args.data_dir, labels)
    from nsfw_space.desk_commands import desk_decisions
    from nsfw_space.model.classifier import NSFWClassifier

    with tempfile.TemporaryDirectory(prefix="nsfw-space-desk-") as scratch:
        data_dir = desk_decisions(settings, Path(scratch)) if args.from_desk else args.data_dir
        return _evaluate(args, settings, NSFWClassifier.from_settings(settings, job=True), data_dir)


def _evaluate(args: argparse.Namespace, settings: Settings, classifier: Any, data_dir: str | Path) -> int:
    from nsfw_space.training.evaluate import evaluate, summary_text

    metrics = evaluate(
        classifier,
        data_dir,
        args.output_dir,
        target_precision=args.target_precision,
        block_precision=args.block_precision,
        review_recall=args.review_recall,
        revision=settings.revision,
        threshold=settings.threshold,
        batch_size=settings.batch_size,
        progress=not args.quiet,
    )
    print(summary_text(metrics))
    print(f"metrics, plots and policy.json written to {args.output_dir}")
    return 0


def show_library_progress() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()
