"""Serving through int8: find the package cached for a classifier's weights and CPU, or have one
built in a child process (:mod:`nsfw_space.model.builds`) while the current plan serves, then swap
it in whole. What :meth:`NSFWClassifier.use_int8` does."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from nsfw_space.model import builds, quantize
from nsfw_space.model.runner import ForwardPlan, Runner
from nsfw_space.model.torch_thread import on_torch_thread

logger = logging.getLogger(__name__)

BUILDS = ("aside", "now", "never")


class NSFWClassifier(Protocol):
    """What serving through int8 needs of a classifier (the real NSFWClassifier is one)."""

    device: torch.device
    dtype: torch.dtype
    name: str
    processor: Any
    _runner: Runner
    _int8_key: str | None

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def precision(self) -> str: ...

    @property
    def optimization(self) -> str: ...

    def preprocess(self, image: Any) -> np.ndarray: ...


RETRY_HINT = f"set {builds.RETRY_SETTING}=1 to try again"


def use_int8(
    classifier: NSFWClassifier,
    when: str = "always",
    *,
    cache_dir: str | Path | None = None,
    source: tuple[str, str | None] | None = None,
    build: str = "aside",
    retry: bool = False,
) -> str:
    """See :meth:`NSFWClassifier.use_int8`."""
    if build not in BUILDS:
        raise ValueError(f"build must be one of {', '.join(BUILDS)}, not {build!r}")
    if classifier.device.type != "cpu":
        return f"int8 runs on the CPU, not on {classifier.device.type}"
    reason = quantize.missing_requirement()
    if reason:
        logger.warning("int8 not available: %s; serving %s", reason, classifier.precision)
        return reason
    folder = package_folder(classifier, cache_dir)
    builds.sweep(folder.parent)
    problem = quantize.unpack_problem(folder / "model.pt2")
    if problem:  # the package (if any) is kept: nothing is wrong with it
        logger.warning("int8 not used: %s; serving %s", problem, classifier.precision)
        return problem
    package = on_torch_thread(quantize.load_package, folder, classifier.preprocess)
    if package is not None:
        return adopt(classifier, package, when)
    earlier = builds.refusal(folder)
    if earlier and not retry:
        logger.info(
            "int8 not built for %s: refused at an earlier start (%s); %s; serving %s",
            classifier.name,
            earlier,
            RETRY_HINT,
            classifier.precision,
        )
        return earlier
    if build == "never":
        return "not built"
    if earlier:
        shutil.rmtree(folder, ignore_errors=True)  # retrying: the old refusal goes
    try:
        spec = _spec(classifier, folder, source)
    except quantize.Int8Unavailable as err:
        logger.warning("int8 not used (%s); serving on with %s", err, classifier.optimization)
        return str(err)

    def make() -> None:
        builds.build_in_child(spec)
        if builds.exiting():
            return  # this process is ending: nothing to serve any more
        built = quantize.load_package(folder, classifier.preprocess)
        if built is None:
            why = builds.refusal(folder)
            raise quantize.Int8Unavailable(f"{why}; {RETRY_HINT}" if why else "the build left no package")
        logger.info("int8 package built in %.0f s: %s", built.meta.get("build_seconds", 0), folder)
        adopt(classifier, built, when)

    if build == "now":
        logger.info("building int8 now (a minute or two, once per model and CPU)")
        try:
            make()
        except Exception as err:  # noqa: BLE001 - the served forward stays; say why
            logger.warning("int8 not used (%s); serving on with %s", err, classifier.optimization)
            return str(err)
        return "int8" if classifier.precision == "int8" else "slower here"
    logger.info(
        "building int8 aside in a child process (a minute or two, once per model and CPU); serving %s meanwhile",
        classifier.precision,
    )
    classifier._runner.build_aside("int8", make)
    return "building"


def package_folder(classifier: NSFWClassifier, cache_dir: str | Path | None) -> Path:
    """Where the package (or the refusal) for this classifier's weights, torch and CPU is kept."""
    root = Path(cache_dir) if cache_dir else quantize.default_cache_dir()
    if classifier._int8_key is None:  # a digest of all the weights: computed once
        classifier._int8_key = quantize.package_key(classifier.model, classifier.name)
    return root / "int8" / classifier._int8_key


def adopt(classifier: NSFWClassifier, package: Any, when: str) -> str:
    """Swap the checked package in as the plan (unless ``if-faster`` and it was measured slower)."""
    if when == "if-faster" and not package.faster:
        logger.info("int8 not used: %s", quantize.describe(package.meta))
        return "slower here"
    classifier._runner.plan = ForwardPlan(
        package.forward, package.forward, name="int8", input_dtype=torch.float32
    )
    logger.info("serving int8 (%s)", quantize.describe(package.meta))
    return "int8"


def _spec(
    classifier: NSFWClassifier, folder: Path, source: tuple[str, str | None] | None
) -> builds.BuildSpec:
    """What the child builds from (see :func:`builds.make_spec`)."""
    try:
        return builds.make_spec(classifier, folder, source, tolerance=quantize.TOLERANCE)
    except builds.NoSource as err:
        raise quantize.Int8Unavailable(str(err)) from None
