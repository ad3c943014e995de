"""``scan --engine ray``: the same units, items and row-making code as the local engine, on Ray Data.

Stages: the driver lists the inputs' units (runs of file paths, Parquet row groups found from the
footers, tar shards; never image bytes); Ray tasks (CPU) read them, from this machine's disks or
from object storage, hash the bytes and pass on ids already written unread; a pool of actors, each
holding one ``NSFWClassifier`` loaded once, turns batches into rows with
:func:`nsfw_space.bulk.scan.score_rows` (the local engine's code). The driver receives the rows as
they are scored (not in input order: keeping order made the actors wait for each other) and writes
them through the local engine's :class:`~nsfw_space.bulk.scan.RowWriter`, flushing each, so
``--resume`` after a killed driver skips exactly the ids already written. A
worker that dies is restarted by Ray and its batch retried; its rows reach the driver once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from nsfw_space.bulk.scan import RowWriter, ScanPlan, ScanSummary, score_rows
from nsfw_space.bulk.sources import Item, Loaded, read_units
from nsfw_space.bulk.writers import progress_bar
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
    readers: int = 2  # concurrent reading tasks
    decode_stage: bool | None = None  # decode in CPU actors of their own (None: when workers use GPUs)
    decoders: int | None = None  # decoding actors (default: the CPUs the model actors leave)
    cpus_per_worker: int | None = None  # CPUs (torch threads) per model actor; see _pools
    start_timeout: int = 600  # seconds to wait for every model actor to load before scoring


def start_ray(options: RayOptions) -> Any:
    """Join the named cluster, or start Ray here with this machine's cores.

    Ray's usage statistics are off unless ``RAY_USAGE_STATS_ENABLED`` is set: a moderation job
    reports nothing to Ray's makers, and Ray Data starts no thread that polls a metrics server
    for them (it kept querying localhost:9090 every 10 s after the scan had ended)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # inherited by the Ray processes started here
    try:
        import ray
    except ImportError as err:
        raise ConfigError('The ray engine needs Ray: pip install "ray[data]" (or -e ".[scale]").') from err
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:  # "local": a new instance even where a cluster already runs on this machine
            ray.init(
                address="local", num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE_BYTES, **kwargs
            )
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = f"join the Ray cluster at {options.address}" if options.address else "start Ray here"
        raise ConfigError(f"Could not {where}: {str(err).splitlines()[0]}") from err
    return ray


class _Scorer:
    """A Ray actor: the model loaded once, batches of read inputs in, rows (JSON) out."""

    def __init__(self, settings: dict[str, Any], every: float | None, scoring: dict[str, Any]) -> None:
        from nsfw_space.model.classifier import NSFWClassifier

        classifier = NSFWClassifier.from_settings(Settings(**settings), job=True)
        self.classifier = classifier.with_limits(every=every) if every else classifier
        self.scoring = scoring

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        if "pixels" in batch:  # decoded by the decode stage: only the model runs here
            scorer, loaded = _predecoded(self.classifier, batch)
        else:
            scorer, loaded = self.classifier, _read(batch)
        rows = iter(score_rows(scorer, loaded, **self.scoring))
        texts = ["" if skipped else json.dumps(next(rows)) for skipped in batch["skipped"]]
        return {"row": texts, "node": [_node_id()] * len(texts)}


def _entry(identity: Any, path: Any, data: Any, sha: Any, error: Any) -> Loaded:
    outcome = InvalidImageError(str(error)) if error else data
    return Loaded(Item(str(identity), str(path), bytes), outcome, sha or None)


def _read(batch: dict[str, Any]) -> list[Loaded]:
    columns = ("id", "path", "data", "sha256", "error", "skipped")
    return [
        _entry(identity, path, bytes(data), sha, error)
        for identity, path, data, sha, error, skipped in zip(*(batch[c] for c in columns), strict=True)
        if not skipped
    ]


class _Decoding:
    """A Ray actor on a CPU: read inputs in, their frames decoded and preprocessed out (with the
    classifier's own :class:`~nsfw_space.model.preprocess.Decoder`), so model actors on GPUs
    only run the model. A file that does not decode keeps its sha256 and gets its error."""

    def __init__(self, settings: dict[str, Any], every: float | None) -> None:
        from nsfw_space.model.loading import load_processor
        from nsfw_space.model.preprocess import Decoder, Preprocessor

        config = Settings(**settings)
        processor = load_processor(config.model, revision=config.revision)
        self.decoder = Decoder(Preprocessor(processor), config.decode_limits, config.frames, every)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        import numpy as np

        out: dict[str, list] = {key: list(batch[key]) for key in ("id", "path", "sha256", "skipped")}
        out.update(error=[], pixels=[], shape=[], times=[])
        for data, error, skipped in zip(batch["data"], batch["error"], batch["skipped"], strict=True):
            pixels, shape, times = b"", "", ""
            if not skipped and not error:
                try:
                    decoded = self.decoder.decode(bytes(data))
                except InvalidImageError as err:
                    error = str(err)
                else:
                    pixels = np.ascontiguousarray(decoded.pixels, dtype=np.float32).tobytes()
                    shape, times = json.dumps(decoded.pixels.shape), json.dumps(decoded.times)
            out["error"].append(error)
            out["pixels"].append(pixels)
            out["shape"].append(shape)
            out["times"].append(times)
        return out


class _PreDecoded:
    """The classifier with decoding done elsewhere: ``decode`` looks an input's frames up by its
    id; batching, the model and the predictions are the classifier's own pipeline."""

    def __init__(self, classifier: Any, decoded: dict[str, Any]) -> None:
        self.classifier, self.decoded = classifier, decoded
        self.device, self.labels = classifier.device, classifier.labels

    def decode(self, source: str, budget: Any = None) -> Any:
        return self.decoded[source]

    def probabilities(self, pixels: Any) -> Any:
        return self.classifier.probabilities(pixels)

    def make_prediction(self, *args: Any, **kwargs: Any) -> Any:
        return self.classifier.make_prediction(*args, **kwargs)

    def iter_predictions(self, sources: list[str], batch_size: int = 16, *, rule: str = "max", k: int = 1):
        from nsfw_space.model.pipeline import iter_predictions

        return iter_predictions(self, sources, batch_size, rule=rule, k=k)


def _predecoded(classifier: Any, batch: dict[str, Any]) -> tuple[_PreDecoded, list[Loaded]]:
    import json

    import numpy as np

    from nsfw_space.model.preprocess import Decoded

    decoded: dict[str, Any] = {}
    loaded = []
    columns = ("id", "path", "sha256", "error", "skipped", "pixels", "shape", "times")
    for identity, path, sha, error, skipped, pixels, shape, times in zip(
        *(batch[c] for c in columns), strict=True
    ):
        if skipped:
            continue
        if not error:
            array = np.frombuffer(bytes(pixels), dtype=np.float32).reshape(json.loads(shape))
            frame_times = json.loads(times)
            decoded[str(identity)] = Decoded(array, tuple(frame_times) if frame_times else None)
        loaded.append(_entry(identity, path, str(identity), sha, error))  # the data: the id to look up
    return _PreDecoded(classifier, decoded), loaded


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


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
    """Score ``plan``'s inputs on Ray and write their rows as they are scored; ``nodes`` (if given)
    collects the id of the Ray node that scored each row."""
    import json

    labels = model_labels(settings)  # the model is checked before Ray starts
    ray = start_ray(options)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = False  # rows are written as they finish (resume is by id)
    context.wait_for_min_actors_s = options.start_timeout  # every model actor up before scoring
    summary = ScanSummary(skipped=plan.skipped)
    if not plan.units:
        return summary
    review = threshold if review_threshold is None else min(review_threshold, threshold)
    settings_values = asdict(settings)
    workers, cpus_each, decoders = _pools(options, ray.cluster_resources(), one_node=not options.address)
    units = _spread(plan.units, batch_size)
    scoring = {"threshold": threshold, "review": review, "batch_size": batch_size, "rule": rule, "k": k}
    dataset = (
        ray.data.from_items(units, override_num_blocks=len(units))
        # reading and hashing is light: it takes no CPU slot, so every core can hold a model actor
        .map_batches(
            read_units,  # defined where no torch is imported: read tasks start in a fraction of a second
            fn_kwargs={
                "settings": settings_values,
                "inputs": asdict(plan.inputs),
                "skip": frozenset(plan.skip),
            },
            batch_size=1,
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=options.readers),
        )
    )
    if decoders:  # decoding on CPU actors of its own, so the model actors only run the model
        dataset = dataset.map_batches(
            _Decoding,
            fn_constructor_kwargs={"settings": settings_values, "every": options.every},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=decoders),
            num_cpus=1,
        )
    dataset = dataset.map_batches(
        _Scorer,
        fn_constructor_kwargs={"settings": settings_values, "every": options.every, "scoring": scoring},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_each,
        num_gpus=options.gpus_per_worker or None,
    )
    writer: RowWriter | None = None
    bar = progress_bar(plan.total, progress)
    try:
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="pandas"):
            for text, node in zip(batch["row"], batch["node"], strict=True):
                if not text:  # an id already written: passed on unread
                    summary.skipped += 1
                    continue
                row = json.loads(text)
                if writer is None:
                    writer = RowWriter(plan.output, plan.fmt, labels, appending=plan.appending)
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


def _pools(options: RayOptions, resources: dict[str, float], one_node: bool) -> tuple[int, int, int]:
    """(model actors, CPUs each, decoding actors; 0 for no decode stage).

    With GPUs: a model actor per GPU share, and the CPUs left decode. On CPUs: a model actor per
    CPU, or ``--workers`` of them; torch in an actor runs as many threads as CPUs it holds (Ray
    sets OMP_NUM_THREADS), so where Ray was started here the CPUs are shared out among the actors
    (on a cluster, whose nodes may differ, each holds ``--cpus-per-worker``, default 1)."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = options.gpus_per_worker
    decode = options.decode_stage if options.decode_stage is not None else bool(gpus)
    if gpus:
        workers = options.workers or max(1, int(resources.get("GPU", 0) / gpus))
        decoders = (options.decoders or max(1, cpus - workers)) if decode else 0
        return workers, options.cpus_per_worker or 1, decoders
    decoders = (options.decoders or 1) if decode else 0  # on CPUs: one decodes, the rest run the model
    workers = options.workers or max(1, cpus - decoders)
    shared = max(1, (cpus - decoders) // workers) if one_node else 1
    return workers, options.cpus_per_worker or shared, decoders


def _spread(units: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Runs of files cut to one batch each. A unit is read into one block and a block is scored by
    one actor, so small units let every actor, on every node, take a share of a small folder. (A
    Parquet row group or a tar shard stays one unit: it is read in one pass.)"""
    spread = []
    for unit in units:
        if unit["format"] != "files":
            spread.append(unit)
            continue
        for start in range(0, len(unit["files"]), batch_size):
            spread.append({**unit, "files": unit["files"][start : start + batch_size]})
    return spread


def model_labels(settings: Settings) -> list[str]:
    """The model's labels in order, from its config alone (the driver loads no weights); a model
    that cannot be found is a ModelLoadError here, before Ray starts."""
    from transformers import AutoConfig

    from nsfw_space.errors import ModelLoadError
    from nsfw_space.model.loading import describe_failure, locate_for_loading

    source, local_only = locate_for_loading(settings.model, settings.revision)
    try:
        config = AutoConfig.from_pretrained(source, revision=settings.revision, local_files_only=local_only)
    except Exception as err:  # every failure becomes the one model message
        raise ModelLoadError(describe_failure(settings.model, settings.revision, err)) from err
    return [str(config.id2label[i]) for i in range(len(config.id2label))]
