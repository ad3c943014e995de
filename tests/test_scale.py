"""Scanning beyond folders: Parquet tables (image bytes or URLs), WebDataset shards, Parquet output,
``id`` and ``sha256`` on every row, and resuming by id. Through the CLI, as a user runs it."""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nsfw_space.tools.synthetic import jpeg_bytes, varied_image
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def pictures():
    """Ten JPEGs (bytes) and one broken file."""
    return [jpeg_bytes(varied_image(200 + seed, (96 + seed, 72))) for seed in range(10)] + [b"not an image"]


@pytest.fixture(scope="module")
def by_files(pictures, model_dir, tmp_path_factory):
    """The same pictures scanned as files: the reference rows, by sha256."""
    folder = tmp_path_factory.mktemp("as-files")
    for index, data in enumerate(pictures):
        (folder / f"{index:02d}.jpg").write_bytes(data)
    out = folder / "out.jsonl"
    result = run_cli("scan", str(folder), "-m", str(model_dir), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {row["sha256"]: row for row in rows if row["sha256"]}, rows


def test_file_rows_carry_the_sha256_of_their_bytes(by_files, pictures):
    _, rows = by_files
    assert len(rows) == len(pictures)
    assert {hashlib.sha256(data).hexdigest() for data in pictures} == {row["sha256"] for row in rows}
    broken = next(row for row in rows if row["path"].endswith("10.jpg"))
    assert broken["error"] and broken["label"] is None


def test_a_parquet_table_of_image_bytes_gives_the_same_rows(pictures, by_files, model_dir, tmp_path):
    """Recognised as a table by its suffix: no --input-format needed."""
    reference, _ = by_files
    table = pa.table({"key": [f"img-{i}" for i in range(len(pictures))], "image": pictures})
    pq.write_table(table, tmp_path / "images.parquet")
    out = tmp_path / "out.parquet"
    result = run_cli(
        "scan", str(tmp_path / "images.parquet"), "-m", str(model_dir),
        "--image-column", "image", "--id-column", "key", "-o", str(out), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(out).to_pylist()
    assert [row["id"] for row in rows] == [f"img-{i}" for i in range(len(pictures))]
    for row in rows[:-1]:
        expected = reference[row["sha256"]]
        assert row["nsfw_score"] == pytest.approx(expected["nsfw_score"], abs=1e-6)
        assert (row["label"], row["decision"]) == (expected["label"], expected["decision"])
    assert rows[-1]["error"] and rows[-1]["nsfw_score"] is None  # the broken cell: an error row
    assert not (tmp_path / "out.parquet.partial").exists()


@pytest.fixture
def image_server(pictures):
    """The pictures over HTTP on 127.0.0.1 (/0.jpg ... /10.jpg)."""
    server, base = _serve(pictures)
    yield base
    server.shutdown()


def test_a_parquet_table_of_urls_is_fetched_through_the_url_guard(
    pictures, by_files, model_dir, image_server, tmp_path
):
    reference, _ = by_files
    urls = [f"{image_server}/{i}.jpg" for i in range(10)]
    pq.write_table(pa.table({"url": urls}), tmp_path / "urls.parquet")
    out = tmp_path / "out.csv"
    args = ["scan", str(tmp_path / "urls.parquet"), "-m", str(model_dir), "--input-format", "parquet"]
    args += ["--url-column", "url", "-o", str(out), "-q"]
    refused = run_cli(*args)  # the guard refuses 127.0.0.1 as it does in the Space: error rows
    assert refused.returncode == 0, refused.stderr
    assert all(row["error"] for row in csv.DictReader(out.open()))
    allowed = run_cli(*args, env_extra={"NSFW_SPACE_ALLOW_PRIVATE_URLS": "1"})  # the test-only switch
    assert allowed.returncode == 0, allowed.stderr
    rows = list(csv.DictReader(out.open()))
    assert [row["id"] for row in rows] == [f"{tmp_path / 'urls.parquet'}#{i}" for i in range(10)]
    for row in rows:
        assert not row["error"], row
        assert float(row["nsfw_score"]) == pytest.approx(reference[row["sha256"]]["nsfw_score"], abs=1e-6)


def _shard(path, pictures, suffix=".jpg"):
    with tarfile.open(path, "w") as archive:
        for key, data in pictures:
            for ending, body in ((suffix, data), (".json", b'{"caption": "x"}')):
                member = tarfile.TarInfo(key + ending)
                member.size = len(body)
                archive.addfile(member, io.BytesIO(body))


def test_webdataset_shards_use_their_keys_as_ids(pictures, by_files, model_dir, tmp_path):
    reference, _ = by_files
    shards = tmp_path / "shards"
    shards.mkdir()
    _shard(shards / "shard-000.tar", [(f"sample{i:03d}", pictures[i]) for i in range(5)])
    _shard(shards / "shard-001.tar", [(f"sample{i:03d}", pictures[i]) for i in range(5, 11)])
    out = tmp_path / "out.jsonl"
    result = run_cli("scan", str(shards), "-m", str(model_dir), "-o", str(out), "-q")  # a folder of .tar
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected_ids = [f"shard-000.tar/sample{i:03d}" for i in range(5)]
    expected_ids += [f"shard-001.tar/sample{i:03d}" for i in range(5, 11)]
    assert [row["id"] for row in rows] == expected_ids  # captions (.json members) are not inputs
    for row in rows[:-1]:
        assert row["nsfw_score"] == pytest.approx(reference[row["sha256"]]["nsfw_score"], abs=1e-6)
    assert rows[-1]["error"]


def test_resuming_a_parquet_scan_writes_each_id_once(pictures, model_dir, tmp_path):
    keys = [f"img-{i}" for i in range(len(pictures))]
    pq.write_table(pa.table({"key": keys[:6], "image": pictures[:6]}), tmp_path / "first.parquet")
    pq.write_table(pa.table({"key": keys, "image": pictures}), tmp_path / "all.parquet")
    out = tmp_path / "out.parquet"
    common = [
        "-m",
        str(model_dir),
        "--input-format",
        "parquet",
        "--image-column",
        "image",
        "--id-column",
        "key",
    ]
    first = run_cli("scan", str(tmp_path / "first.parquet"), *common, "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    again = run_cli("scan", str(tmp_path / "all.parquet"), *common, "-o", str(out), "--resume", "-q")
    assert again.returncode == 0, again.stderr
    assert "scanned 5 files" in again.stderr and "6 already done" in again.stderr  # nothing rescored
    ids = pq.read_table(out).column("id").to_pylist()
    assert sorted(ids) == sorted(keys) and len(ids) == len(set(ids))


def test_unusable_table_arguments_are_one_line(model_dir, tmp_path):
    pq.write_table(pa.table({"image": [b"x"]}), tmp_path / "t.parquet")
    for extra, message in [
        ([], "Give one of --image-column and --url-column"),
        (["--image-column", "pixels"], "has no column 'pixels'"),
    ]:
        result = run_cli(
            "scan", str(tmp_path / "t.parquet"), "-m", str(model_dir), "--input-format", "parquet", *extra
        )
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_flags_and_mixes_that_do_not_fit_the_inputs_are_one_line(pictures, model_dir, tmp_path):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(pictures[0])
    pq.write_table(pa.table({"image": [pictures[1]]}), tmp_path / "t.parquet")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes(pictures[0])
    pq.write_table(pa.table({"image": [pictures[1]]}), mixed / "t.parquet")
    for paths, extra, message in [
        (
            [folder],
            ["--image-column", "image"],
            "--image-column applies to Parquet tables; these inputs are image files",
        ),
        ([folder], ["--id-column", "key"], "--id-column applies to Parquet tables"),
        ([folder, tmp_path / "t.parquet"], ["--image-column", "image"], "of different kinds"),
        ([mixed], [], "a folder of several kinds"),
    ]:
        out = tmp_path / "out.csv"
        result = run_cli("scan", *map(str, paths), "-m", str(model_dir), "-o", str(out), *extra)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()  # no silent error row


# --- the Ray engine: the same rows as the local engine, on one machine and on two nodes --------------
def _rows_of(path):
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


def _same_rows(ray_rows, local_rows):
    """Every input once, each row as the local engine wrote it. The Ray engine writes rows as they
    are scored, not in input order (waiting for order halved its throughput), so rows are matched
    by id."""
    ids = [row["id"] for row in ray_rows]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(row["id"] for row in local_rows)
    by_id = {row["id"]: row for row in ray_rows}
    for theirs in local_rows:
        ours = by_id[theirs["id"]]
        assert ours["sha256"] == theirs["sha256"] and bool(ours["error"]) == bool(theirs["error"])
        assert ours["error"] == theirs["error"]
        if not ours["error"]:
            assert float(ours["nsfw_score"]) == pytest.approx(float(theirs["nsfw_score"]), abs=1e-4)
            assert ours["decision"] == theirs["decision"]


@pytest.fixture(scope="module")
def mixed_inputs(pictures, tmp_path_factory):
    """41 inputs: a folder of the pictures, a GIF and a broken file (12), a Parquet table of their
    bytes (11), a Parquet table of URLs served from 127.0.0.1 (6, one of them broken) and two
    WebDataset shards of the pictures and the GIF (12). For each: the CLI arguments and extra
    environment."""
    root = tmp_path_factory.mktemp("mixed")
    folder = root / "folder"
    folder.mkdir()
    for index, data in enumerate(pictures):
        (folder / f"{index:02d}.jpg").write_bytes(data)
    frames = [varied_image(300 + i, (64, 48)) for i in range(4)]
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    pq.write_table(
        pa.table({"key": [f"k{i}" for i in range(len(pictures))], "image": pictures}), root / "t.parquet"
    )
    shards = root / "shards"
    shards.mkdir()
    _shard(shards / "a.tar", [(f"s{i}", pictures[i]) for i in range(5)])
    _shard(shards / "b.tar", [(f"s{i}", pictures[i]) for i in range(5, len(pictures))])
    _shard(shards / "c.tar", [("clip", (folder / "clip.gif").read_bytes())], suffix=".gif")
    server, base = _serve(pictures)
    urls = [f"{base}/{i}.jpg" for i in (0, 3, 6, 8, 9, 10)]
    pq.write_table(pa.table({"url": urls}), root / "urls.parquet")
    private = {"NSFW_SPACE_ALLOW_PRIVATE_URLS": "1"}  # the test-only switch: 127.0.0.1 is private
    yield {
        "files": ([str(folder)], [], {}),
        "parquet": (
            [str(root / "t.parquet")],
            ["--input-format", "parquet", "--image-column", "image", "--id-column", "key"],
            {},
        ),
        "urls": ([str(root / "urls.parquet")], ["--input-format", "parquet", "--url-column", "url"], private),
        "webdataset": ([str(shards)], ["--input-format", "webdataset"], {}),
    }
    server.shutdown()


def _serve(pictures):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pictures[int(self.path.strip("/").split(".")[0])]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    """An S3 server on 127.0.0.1 (moto), reached through the standard AWS variables, as a user's
    own S3-compatible storage would be."""
    pytest.importorskip("moto", reason="moto[server] is in requirements-dev.txt")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch_module.setenv(key, value)  # for Ray workers started from this process too
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="moderation")
    yield client
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def ray_cluster(s3):
    """A two-node Ray cluster on 127.0.0.1 (Ray's test utilities), one CPU each, shared by the
    tests that join it with ``--ray-address`` as a user joins a real one."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20}
    )
    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)  # a second node on 127.0.0.1
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def _local_rows(classifier, inputs, extra, env, out):
    """The local engine's rows for the same arguments, through the Python API (the CLI's engine,
    without a second model load per run)."""
    from nsfw_space import Settings
    from nsfw_space.bulk.scan import plan_scan, scan
    from nsfw_space.bulk.sources import Inputs, url_fetcher

    options = dict(zip(extra[::2], extra[1::2], strict=True))
    spec = Inputs(
        tuple(inputs),
        options.get("--input-format", "files"),
        options.get("--image-column"),
        options.get("--url-column"),
        options.get("--id-column"),
    )
    fetch = url_fetcher(Settings(allow_private_urls=bool(env)))
    scan(classifier, plan_scan(spec, str(out), fetch=fetch), progress=False)
    return _rows_of(out)


def _ray_rows_in_process(inputs, model_dir, ray_cluster, out):
    """A folder through the Ray engine from this process (the Python API), two model actors at one
    picture a batch on the two-node cluster: its rows and the Ray node that scored each."""
    import ray

    from nsfw_space import Settings
    from nsfw_space.bulk.ray_engine import RayOptions, scan_with_ray
    from nsfw_space.bulk.scan import plan_scan

    nodes: list[str] = []
    try:
        ray.init(address=ray_cluster, include_dashboard=False, log_to_driver=False)
        settings = Settings(model=str(model_dir), precision="fp32")
        options = RayOptions(address=ray_cluster, workers=2)
        summary = scan_with_ray(
            settings, plan_scan(inputs, str(out)), options, batch_size=1, progress=False, nodes=nodes
        )
    finally:
        ray.shutdown()
    rows = _rows_of(out)
    assert summary.files == len(rows) == len(nodes)
    # usage statistics off: Ray Data left a thread behind that kept querying a metrics server and
    # logging tracebacks (whose formatting raced another test's ast.parse on Python 3.11)
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}
    return rows, nodes


@pytest.mark.slow
def test_the_ray_engine_gives_the_local_engines_rows_for_41_mixed_inputs(
    mixed_inputs, model_dir, classifier, ray_cluster, tmp_path
):
    """Each kind of input through the Ray engine on the two-node cluster gives the local engine's
    rows. The folder goes through the Python API with two model actors, one picture a batch: both
    nodes score rows. The tables and shards go through the CLI (``--ray-address``, as a user joins a
    cluster); the shards run with ``--decode-stage on`` (the default when workers use GPUs): their
    frames are decoded on a CPU actor and only the model runs in the model actor, and the GIF's
    frames, the broken file's error and every score still come out as the local engine's; the
    others decode inside the model actor (the CPU default)."""
    total = 0
    for name, (inputs, extra, env) in mixed_inputs.items():
        outputs = {"local": _local_rows(classifier, inputs, extra, env, tmp_path / f"{name}-local.jsonl")}
        out = tmp_path / f"{name}-ray.jsonl"
        if name == "files":
            outputs["ray"], nodes = _ray_rows_in_process(inputs, model_dir, ray_cluster, out)
            assert len(set(nodes)) == 2  # both nodes scored rows
        else:
            args = ["scan", *inputs, "-m", str(model_dir), *extra, "-o", str(out), "--engine", "ray", "-q"]
            stage = ["--decode-stage", "on"] if name == "webdataset" else []
            # the tables: one model actor (the folder above has two); a table is one block, read in one pass
            workers = [] if stage else ["--workers", "1"]
            result = run_cli(*args, "--ray-address", ray_cluster, *stage, *workers, env_extra=env)
            assert result.returncode == 0, result.stderr
            # Ray's execution plan: the decode stage ran where asked, and only there
            assert ("MapBatches(_Decoding)" in result.stderr) == bool(stage), (name, result.stderr[-2000:])
            outputs["ray"] = _rows_of(out)
        _same_rows(outputs["ray"], outputs["local"])
        total += len(outputs["ray"])
        errors = [row for row in outputs["ray"] if row["error"]]
        assert len(errors) == 1, (name, errors)  # the broken picture: one error row, the job went on
        if name in ("files", "webdataset"):
            wanted = "/clip.gif" if name == "files" else ".tar/clip"  # a shard's ids drop the suffix
            gif = next(row for row in outputs["ray"] if row["id"].endswith(wanted))
            assert gif["nsfw_score"] is not None and not gif["error"]
    assert total == 41


@pytest.mark.slow
def test_inputs_in_object_storage_are_read_through_pyarrows_filesystems(
    pictures, by_files, mixed_inputs, s3, model_dir, classifier, ray_cluster, tmp_path
):
    """The same files, table and shards in S3 (moto on 127.0.0.1): both engines read them there
    and score the same bytes as the local files. The local engine through the Python API (the
    CLI's engine), the Ray engine through the CLI; a missing S3 path is the CLI's one line."""
    reference, _ = by_files
    for index, data in enumerate(pictures):
        s3.put_object(Bucket="moderation", Key=f"photos/day-{index % 2}/{index:02d}.jpg", Body=data)
    s3.upload_file(mixed_inputs["parquet"][0][0], "moderation", "tables/t.parquet")
    for shard in ("a.tar", "b.tar"):  # the pictures' shards
        s3.upload_file(str(Path(mixed_inputs["webdataset"][0][0]) / shard), "moderation", f"shards/{shard}")
    cases = {
        "files": (["s3://moderation/photos"], []),
        "parquet": (["s3://moderation/tables/t.parquet"], mixed_inputs["parquet"][1]),
        "webdataset": (["s3://moderation/shards"], ["--input-format", "webdataset"]),
    }
    for name, (inputs, extra) in cases.items():
        runs = {"local": _local_rows(classifier, inputs, extra, {}, tmp_path / f"{name}-local.jsonl")}
        if name == "parquet":
            out = tmp_path / f"{name}-ray.jsonl"
            args = ["scan", *inputs, "-m", str(model_dir), *extra, "-o", str(out), "--engine", "ray", "-q"]
            result = run_cli(*args, "--ray-address", ray_cluster, "--workers", "1")  # one table: one block
            assert result.returncode == 0, result.stderr
            runs["ray"] = _rows_of(out)
        for engine, rows in runs.items():
            assert len(rows) == len(pictures), (name, engine)
            if name == "files":
                assert rows[0]["id"] == "s3://moderation/photos/day-0/00.jpg"
            for row in rows:  # the same bytes as the local files, the same scores and errors
                expected = reference[row["sha256"]]
                assert bool(row["error"]) == bool(expected["error"])
                if not row["error"]:
                    assert float(row["nsfw_score"]) == pytest.approx(expected["nsfw_score"], abs=1e-4)
    missing = run_cli("scan", "s3://moderation/nothing-here", "-m", str(model_dir))
    assert (
        missing.returncode == 2 and "No such file or folder: s3://moderation/nothing-here" in missing.stderr
    )


def _start_scan(folder, model_dir, out, *extra, batch_size=1):
    import os
    import subprocess
    import sys

    from tests.test_cli import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "nsfw_space", "scan", str(folder), "-m", str(model_dir), "-o", str(out)]
    command += ["--engine", "ray", "--batch-size", str(batch_size), "-q", *extra]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _valid_ids(out):
    ids = []
    for line in out.read_text().splitlines():
        try:
            ids.append(json.loads(line)["id"])
        except ValueError:
            continue
    return ids


MANY = 150  # enough that the job is still running after the worker's kill and 40 more rows


@pytest.fixture(scope="module")
def many_pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    for index in range(MANY):
        varied_image(1000 + index, (48, 36)).save(folder / f"{index:03d}.png")
    return folder


@pytest.mark.slow
def test_a_killed_worker_and_then_a_killed_driver_leave_each_row_once(many_pictures, model_dir, tmp_path):
    """One job on one model worker: it is killed mid-job (Ray replaces it, retries its batch and
    the job goes on), then the driver and everything it started are killed; ``--resume`` (full
    batches, nothing killed) finishes with each input once and scores only what was not written."""
    import os
    import signal
    import subprocess
    import time

    def wait_for_rows(count: int) -> None:
        deadline = time.monotonic() + 180
        while not out.exists() or len(_valid_ids(out)) < count:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"fewer than {count} rows after 180 s"
            time.sleep(0.05)

    out = tmp_path / "out.jsonl"
    driver = _start_scan(many_pictures, model_dir, out, "--workers", "1")  # no other actor takes over
    wait_for_rows(5)
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    workers = [
        int(line.split()[0]) for line in listing.splitlines() if "MapWorker(MapBatches(_Scorer))" in line
    ]
    assert workers, "no model worker found"
    os.kill(workers[0], signal.SIGKILL)  # a model worker dies mid-job ...
    before = len(_valid_ids(out))
    wait_for_rows(before + 40)  # ... and the job goes on
    os.killpg(driver.pid, signal.SIGKILL)  # then the driver and what it started, mid-job
    driver.wait()
    written = _valid_ids(out)
    assert len(written) == len(set(written)) and 45 <= len(written) < MANY, len(written)
    again = _start_scan(many_pictures, model_dir, out, "--resume", "--workers", "1", batch_size=16)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr.decode()[-2000:]
    ids = _valid_ids(out)
    assert sorted(ids) == sorted(str(path) for path in many_pictures.glob("*.png"))  # each input once
    scored_again = int(stderr.decode().split("scanned ")[1].split(" file")[0])
    assert scored_again == MANY - len(written) and f"{len(written)} already done" in stderr.decode()


def test_the_ray_engine_refuses_a_missing_model_before_starting_ray(mixed_inputs, tmp_path):
    folder = mixed_inputs["files"][0][0]
    result = run_cli(
        "scan", folder, "-m", str(tmp_path / "no-model"), "--engine", "ray", "-o", str(tmp_path / "o.csv")
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Could not load the model" in result.stderr and not (tmp_path / "o.csv").exists()


def test_the_ray_pools_share_out_cpus_and_gpus():
    """How many model and decoding actors a scan asks Ray for, and how many CPUs (torch threads)
    each model actor holds: Ray gives an actor's torch as many threads as it holds CPUs."""
    from nsfw_space.bulk.ray_engine import RayOptions, _pools

    machine = {"CPU": 8.0}
    assert _pools(RayOptions(), machine, one_node=True) == (8, 1, 0)  # an actor per core
    assert _pools(RayOptions(workers=2), machine, one_node=True) == (2, 4, 0)  # 4 threads each
    assert _pools(RayOptions(workers=2), machine, one_node=False) == (2, 1, 0)  # a cluster: 1 each
    assert _pools(RayOptions(workers=2, cpus_per_worker=3), machine, one_node=False) == (2, 3, 0)
    assert _pools(RayOptions(decode_stage=True), machine, one_node=True) == (7, 1, 1)
    gpu_node = {"CPU": 16.0, "GPU": 2.0}
    assert _pools(RayOptions(gpus_per_worker=0.5), gpu_node, one_node=True) == (4, 1, 12)  # decode on
    assert _pools(RayOptions(gpus_per_worker=1, decode_stage=False), gpu_node, one_node=True) == (2, 1, 0)
