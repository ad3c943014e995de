"""``scan --engine ray``: the same items, the same row-making code, run on Ray Data.

Stages: the inputs are listed as small descriptors (ids and where to read), their bytes are read
and hashed in Ray tasks (CPU), and a pool of actors, each holding one ``NSFWClassifier`` loaded
once, turns batches into rows with :func:`nsfw_space.bulk.scan.score_rows` (the local engine's
code). The driver receives the rows in input order and writes them through the local engine's
:class:`~nsfw_space.bulk.scan.RowWriter`, flushing each, so ``--resume`` after a killed driver
skips exactly the ids already written. A worker that dies is restarted by Ray and its batch
retried; its rows reach the driver once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from nsfw_space.bulk.scan import RowWriter, ScanPlan, ScanSummary, _progress, score_rows
from nsfw_space.bulk.sources import Item, Loaded, load, read_batch
from nsfw_space.config import Settings
from nsfw_space.errors import ConfigError, InvalidImageError

logger = logging.getLogger(__name__)
OBJECT_STORE_BYTES = 256 * 1024 * 1024  # a small object store when Ray is started here


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start Ray on this machine; "auto" or "ray://host:10001": join
    workers: int | None = None  # model actors (default: this machine's cores, or the cluster's CPUs)
    gpus_per_worker: float = 0.0
    every: float | None = None


def start_ray(options: RayOptions) -> Any:
    """Join the named cluster, or start Ray here with this machine's cores."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError('The ray engine needs Ray: pip install "ray[data]" (or -e ".[scale]").') from err
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE_BYTES, **kwargs)
    return ray


class _Scorer:
    """A Ray actor: the model loaded once, batches of read inputs in, rows (JSON) out."""

    def __init__(self, settings: dict[str, Any], every: float | None, scoring: dict[str, Any]) -> None:
        from nsfw_space.model.classifier import NSFWClassifier

        classifier = NSFWClassifier.from_settings(Settings(**settings))
        self.classifier = classifier.with_limits(every=every) if every else classifier
        self.scoring = scoring

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        loaded = [
            Loaded(
                Item(str(identity), str(path), bytes),
                bytes(data) if not error else InvalidImageError(str(error)),
                sha or None,
            )
            for identity, path, data, sha, error in zip(
                batch["id"], batch["path"], batch["data"], batch["sha256"], batch["error"], strict=True
            )
        ]
        rows = score_rows(self.classifier, loaded, **self.scoring)
        return {"row": [json.dumps(row) for row in rows], "node": [_node_id()] * len(rows)}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _descriptor(item: Item) -> dict[str, Any]:
    """What a Ray task needs to read ``item``: a file's path, a URL, or bytes already in memory
    (a Parquet cell, a tar member)."""
    if item.url is not None:
        return {"id": item.id, "path": item.path, "kind": "url", "locator": item.url, "blob": b""}
    if item.id == item.path:  # a file of a folder scan
        return {"id": item.id, "path": item.path, "kind": "file", "locator": item.path, "blob": b""}
    entry = load(item)
    if isinstance(entry.data, InvalidImageError):
        return {"id": item.id, "path": item.path, "kind": "error", "locator": str(entry.data), "blob": b""}
    return {"id": item.id, "path": item.path, "kind": "bytes", "locator": "", "blob": entry.data}


def scan_with_ray(
    settings: Settings,
    plan: ScanPlan,
    options: RayOptions,
    *,
    threshold: float = 0.5,
    review_threshold: float | None = None,
    batch_size: int = 16,
    progress: bool = True,
    rule: str = "max",
    k: int = 1,
    nodes: list[str] | None = None,
) -> ScanSummary:
    """Score ``plan``'s inputs on Ray and write their rows, in input order; ``nodes`` (if given)
    collects the id of the Ray node that scored each row."""
    import json

    ray = start_ray(options)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    summary = ScanSummary(skipped=plan.skipped)
    descriptors = []
    for item in plan.items:
        if item.id in plan.skip:
            summary.skipped += 0 if isinstance(plan.items, list) else 1
            continue
        descriptors.append(_descriptor(item))
    if not descriptors:
        return summary
    review = threshold if review_threshold is None else min(review_threshold, threshold)
    settings_values = asdict(settings)
    workers = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    scoring = {"threshold": threshold, "review": review, "batch_size": batch_size, "rule": rule, "k": k}
    dataset = (
        ray.data.from_items(descriptors)
        # reading and hashing is light: it takes no CPU slot, so every core can hold a model actor
        .map_batches(
            read_batch,  # defined where no torch is imported: read tasks start in a fraction of a second
            fn_kwargs={"settings": settings_values},
            batch_size=batch_size,
            num_cpus=0,
            concurrency=2,
        )
        .map_batches(
            _Scorer,
            fn_constructor_kwargs={"settings": settings_values, "every": options.every, "scoring": scoring},
            batch_size=batch_size,
            concurrency=workers,
            num_gpus=options.gpus_per_worker or None,
        )
    )
    writer: RowWriter | None = None
    bar = _progress(len(descriptors), progress)
    try:
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="pandas"):
            for text, node in zip(batch["row"], batch["node"], strict=True):
                row = json.loads(text)
                if writer is None:
                    writer = RowWriter(
                        plan.output, plan.fmt, model_labels(settings), appending=plan.appending
                    )
                summary.add(row)
                writer.write(row)
                if nodes is not None:
                    nodes.append(node)
                bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return summary


def model_labels(settings: Settings) -> list[str]:
    """The model's labels in order, from its config alone (the driver loads no weights)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(settings.model, revision=settings.revision)
    return [str(config.id2label[i]) for i in range(len(config.id2label))]
