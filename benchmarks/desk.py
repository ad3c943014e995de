"""The moderation desk, measured: the PDQ hash beside the model's own time, list matching with
100,000 entries, what the desk adds to a /moderate call, and 8 moderators at once over 1,000
queued items on SQLite and on a throwaway PostgreSQL server.

    python benchmarks/desk.py [--workdir /tmp/nsfw-desk] [--entries 100000] [--items 1000]

The model is a ViT-B/16 of the card's architecture (random weights: the time is the
architecture's), served fp32 as the Space serves it when int8 is not built.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def timed(function, repeats: int) -> list[float]:
    function()  # warm
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        out.append(time.perf_counter() - started)
    return out


def photo_jpeg(size: tuple[int, int]) -> bytes:
    from PIL import Image

    image = Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB").resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def fill_list(desk, entries: int) -> None:
    from nsfw_space.desk import store

    rng = np.random.default_rng(0)
    hashes = {bytes(row).hex() for row in rng.integers(0, 256, size=(entries, 32), dtype=np.uint8)}
    rows = [{"list": "block", "hash": h, "note": "", "added_by": "bench", "added_at": 0.0} for h in hashes]
    with desk.engine.begin() as connection:
        connection.execute(store.list_entries.insert(), rows)
        connection.execute(store.counters.update().values(value=store.counters.c.value + 1))


def moderators_at_once(url: str, items: int, moderators: int = 8) -> tuple[float, int, int]:
    from nsfw_space.desk.desk import Desk, DeskOptions

    desk = Desk(DeskOptions(url=url))
    payload = photo_jpeg((64, 64))
    for _ in range(items):
        desk.queue.enqueue(payload, 0.5, "review")
    decided: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (lease := desk.queue.next(name)) is not None:
            desk.queue.decide(lease.item_id, lease.token, name, "allow")
            with lock:
                decided.append(lease.item_id)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(f"mod{i}",)) for i in range(moderators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    desk.close()
    return items / seconds, len(decided), len(set(decided))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/nsfw-desk")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    from nsfw_space import NSFWClassifier, Settings
    from nsfw_space.desk.desk import Desk, DeskOptions
    from nsfw_space.media.hashing import pdq_hash
    from nsfw_space.media.images import load_image
    from nsfw_space.model.device import cpu_description
    from nsfw_space.space.handlers import Handlers
    from nsfw_space.tools.synthetic import VIT_BASE, build_model_dir

    print(f"CPU: {cpu_description()}")
    model_dir = workdir / "vitb"
    if not (model_dir / "config.json").is_file():
        build_model_dir(model_dir, architecture=VIT_BASE)
    classifier = NSFWClassifier.from_pretrained(str(model_dir), device="cpu", precision="fp32")
    image = photo_jpeg((1024, 768))
    image_path = workdir / "photo-1024x768.jpg"
    image_path.write_bytes(image)

    db = workdir / "desk.db"
    for leftover in workdir.glob("desk.db*"):
        leftover.unlink()
    desk = Desk(DeskOptions(url=f"sqlite:///{db}"))
    started = time.perf_counter()
    fill_list(desk, args.entries)
    fill_s = time.perf_counter() - started
    image_hash = desk.hash_of(image_path)
    started = time.perf_counter()
    desk.lists.match(image_hash)  # the first match loads the index
    load_s = time.perf_counter() - started

    decode = timed(lambda: load_image(image_path, draft_size=(256, 256)), args.repeats)
    picture = load_image(image_path, draft_size=(256, 256))
    hashing = timed(lambda: pdq_hash(picture), args.repeats)
    matching = timed(lambda: desk.lists.match(image_hash), args.repeats)
    model = timed(lambda: classifier.predict(image_path), args.repeats // 3 or 1)

    import base64

    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode()  # as an API caller may send it
    settings = Settings(max_batch_size=1)
    plain = Handlers(classifier, settings)
    desked = Handlers(classifier, settings, desk=desk)
    without, with_desk = [], []
    for _ in range(args.repeats):  # interleaved, so a drift of the machine falls on both alike
        without += timed(lambda: plain.moderate(data_url), 1)
        with_desk += timed(lambda: desked.moderate(data_url), 1)
    judge = timed(lambda: desk.judge(str(image_path), {"decision": "allow", "nsfw_score": 0.1}), args.repeats)

    print(
        f"\nlist of {args.entries:,} entries: inserted in {fill_s:.1f} s, index loaded in {load_s * 1000:.0f} ms"
    )
    print("| step (one 1024x768 JPEG) | p50 ms |")
    print("|---|---|")
    print(f"| decode at 256 px for the hash | {p50(decode):.1f} |")
    print(f"| PDQ hash + 8 rotations/flips | {p50(hashing):.1f} |")
    print(f"| match against {args.entries:,} entries (both lists) | {p50(matching):.2f} |")
    print(f"| desk.judge: decode + hash + match | {p50(judge):.1f} |")
    print(f"| the model (ViT-B/16 fp32, predict) | {p50(model):.0f} |")
    print(f"| /moderate handler without the desk | {p50(without):.0f} |")
    print(f"| /moderate handler with the desk ({args.entries:,} entries) | {p50(with_desk):.0f} |")
    added = [b - a for a, b in zip(without, with_desk, strict=True)]
    print(f"| what the desk added, pair by pair (p50) | {p50(added):.1f} |")
    desk.close()

    print(f"\n8 moderators at once over {args.items} queued items:")
    print("| database | decisions/s | decided | distinct |")
    print("|---|---|---|---|")
    sqlite_url = f"sqlite:///{workdir / 'queue.db'}"
    for leftover in workdir.glob("queue.db*"):
        leftover.unlink()
    rate, decided, distinct = moderators_at_once(sqlite_url, args.items)
    print(f"| SQLite (WAL) | {rate:.0f} | {decided} | {distinct} |")
    try:
        from tests.desk_db import fresh_database, postgres_server
    except ImportError:
        print("| PostgreSQL | (tests/desk_db.py not found) | | |")
        return
    with postgres_server() as server:
        rate, decided, distinct = moderators_at_once(fresh_database(server, "bench"), args.items)
        print(f"| PostgreSQL 15 (local, fsync off) | {rate:.0f} | {decided} | {distinct} |")


if __name__ == "__main__":
    main()
