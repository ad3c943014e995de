"""The browser model of a classifier, cached by weights and recipe: found in the cache, or built aside
in a child process (:mod:`nsfw_space.model.builds`) so start-up never waits for it. Until it is
ready, :meth:`BrowserModel.status` says so (and why, if it was refused)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from nsfw_space.model import builds, quantize
from nsfw_space.web import export, runtime

logger = logging.getLogger(__name__)

BUILDER = "nsfw_space.web.building:build_in_workdir"


def build_in_workdir(model: Any, processor: Any, workdir: Path, spec: builds.BuildSpec) -> Path:
    """The child's work (see builds.BuildSpec.builder): the browser model in ``workdir/browser``."""
    export.export_browser_model(model, processor, workdir / "browser", tolerance=spec.tolerance)
    return workdir / "browser"


class BrowserModel:
    """The on-device model and runtime for one classifier. ``start()`` finds or builds them aside;
    ``status()`` is what the page reads; ``files()`` where they are once ready."""

    def __init__(
        self,
        classifier: Any,
        *,
        source: tuple[str, str | None] | None = None,
        cache_dir: str | Path | None = None,
        runtime_dir: str | Path | None = None,
    ) -> None:
        self.classifier = classifier
        self.source = source
        self.cache_root = Path(cache_dir) if cache_dir else quantize.default_cache_dir()
        self.runtime_dir = runtime_dir or None
        self.key: str | None = None
        self.model_folder: Path | None = None
        self.runtime_folder: Path | None = None
        self.state = "starting"
        self.reason: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- what the page reads ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def status(self) -> dict[str, Any]:
        """``{"state": starting|building|ready|refused, ...}`` with sizes and the check once ready."""
        answer: dict[str, Any] = {"state": self.state}
        if self.reason:
            answer["reason"] = self.reason
        if self.ready and self.model_folder and self.runtime_folder:
            check = export.read_check(self.model_folder) or {}
            runtime_bytes = sum((self.runtime_folder / name).stat().st_size for name in runtime.FILES)
            answer.update(
                model_id=self.key,
                model_bytes=check.get("model_bytes"),
                runtime_bytes=runtime_bytes,
                worst_difference=check.get("worst"),
                runtime=runtime.runtime_tag(),
            )
        return answer

    # -- finding or building -----------------------------------------------------------------------------
    def start(self, build: str = "aside") -> None:
        """Find the model and runtime, or get them ready in a thread (``build="aside"``) or now."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._prepare, name="browser-model", daemon=True)
        if build == "now":
            self._prepare()
        else:
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for ``start()``'s work to end; True when the model is ready."""
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        return self.ready

    def _prepare(self) -> None:
        try:
            self.runtime_folder = runtime.ensure_runtime(self.cache_root, self.runtime_dir)
            folder = self._folder()
            builds.sweep(folder.parent)
            if export.read_check(folder) is None:
                earlier = builds.refusal(folder)
                if earlier:
                    raise export.BrowserModelRefused(
                        f"refused at an earlier start ({earlier}); delete {folder} to try again"
                    )
                missing = export.missing_requirement()
                if missing:
                    raise export.BrowserModelRefused(missing)
                self.state = "building"
                logger.info("building the browser model aside in a child process (once per model)")
                spec = builds.make_spec(
                    self.classifier, folder, self.source, tolerance=export.TOLERANCE, builder=BUILDER
                )
                builds.build_in_child(spec)
                if builds.exiting():
                    return
                if export.read_check(folder) is None:
                    why = builds.refusal(folder) or "the build left no model"
                    raise export.BrowserModelRefused(why)
            self.model_folder = folder
            self.state = "ready"
            logger.info("browser model ready for the On this device tab: %s", folder)
        except Exception as err:  # noqa: BLE001 - the tab says why; the rest of the Space serves on
            self.state, self.reason = "refused", str(err)
            logger.warning("the On this device tab is off: %s", err)

    def _folder(self) -> Path:
        if self.key is None:
            digest = quantize.weights_digest(self.classifier.model)
            self.key = quantize.cache_key(self.classifier.name, [export.RECIPE, digest])
        return self.cache_root / "web" / self.key
