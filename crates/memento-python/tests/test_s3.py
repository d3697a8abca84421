"""``s3://bucket/prefix`` locations against a real local S3 server: moto's,
started by ``scripts/moto.sh`` (installed from PyPI on first use) for the
session. Without the server, or in a build without S3 support, these tests
fail; they never skip (``scripts/test-python.sh`` builds the package with
the ``s3`` feature)."""

import multiprocessing
import pathlib
import pickle
import subprocess
import urllib.request
import uuid
import warnings

import numpy as np
import pytest

import memento_workers
from memento import Memory, _memento

REPO = pathlib.Path(__file__).resolve().parents[3]
BUCKET = "memento-py"


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory):
    """The URL of a moto server with the bucket ``BUCKET`` made."""
    assert _memento.S3, (
        "this build of memento has no S3 support: build it with the s3 feature "
        "(scripts/test-python.sh does)"
    )
    pidfile = tmp_path_factory.mktemp("moto") / "moto.pid"
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "moto.sh"), "start", str(pidfile)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    url = started.stdout.strip()
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/{BUCKET}", method="PUT"))
        yield url
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "moto.sh"), "stop", str(pidfile)])


def options(endpoint, near, **more):
    """backend_options for the server, with the near cache ``near``."""
    return {
        "endpoint_url": endpoint,
        "allow_http": True,
        "region_name": "us-east-1",
        "aws_access_key_id": "AKIDMEMENTOPY",
        "aws_secret_access_key": "memento-py-secret",
        "near_cache": near,
        **more,
    }


def bucket(name):
    """A location of its own in the bucket, for one test."""
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:12]}"


def counted(memory):
    calls = []

    def f(x, y=1):
        calls.append((x, y))
        return x + y

    return memory.cache(f), calls


def elsewhere(location, options, name, *args, **kwargs):
    """``memento_workers.on_bucket`` in a new process: another machine."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(memento_workers.on_bucket, (location, options, name) + args, kwargs)


def test_hit_miss_and_a_second_machine(endpoint, tmp_path):
    location = bucket("hits")
    memory = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "a"))
    assert memory.location == location
    f = memory.cache(memento_workers.ramp)
    assert not f.check_call_in_cache(1000)
    expected = float(f(1000).sum())
    assert f.check_call_in_cache(1000)
    assert not f.check_call_in_cache(5)
    # Another machine: its own near cache (empty), the same bucket.
    near_b = tmp_path / "b"
    stored, (total, n, _) = elsewhere(location, options(endpoint, str(near_b)), "ramp", 1000)
    assert stored and (total, n) == (expected, 1000)
    assert any(p.is_file() for p in near_b.rglob("*")), "the result was kept in b's near cache"
    # A result stored by the other machine is read here.
    stored, (total, n, _) = elsewhere(location, options(endpoint, str(near_b)), "ramp", 7)
    assert not stored
    assert f.check_call_in_cache(7)


def test_no_near_cache(endpoint, tmp_path):
    location = bucket("far-only")
    memory = Memory(location, verbose=0, backend_options=options(endpoint, None))
    f, calls = counted(memory)
    assert f(3) == 4 and f(3) == 4 and f(3, y=1) == 4
    assert calls == [(3, 1)]
    stored, _ = elsewhere(location, options(endpoint, None), "ramp", 10)
    assert not stored
    g = memory.cache(memento_workers.ramp)
    assert g.check_call_in_cache(10)
    np.testing.assert_array_equal(g(10), memento_workers.ramp(10))


def test_arrays_loaded_and_mapped(endpoint, tmp_path):
    location = bucket("arrays")
    memory = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "near"))
    n = 1 << 18  # 2 MiB: stored raw beside the pickle
    f = memory.cache(memento_workers.ramp)
    expected = memento_workers.ramp(n)
    np.testing.assert_array_equal(f(n), expected)
    stored, loaded = elsewhere(location, options(endpoint, str(tmp_path / "b")), "ramp", n)
    assert stored and loaded == (float(expected.sum()), n, True)
    stored, mapped = elsewhere(
        location, options(endpoint, str(tmp_path / "c")), "ramp", n, mmap_mode="r"
    )
    assert stored and mapped == (float(expected.sum()), n, False)


def test_clear_and_call_and_shelve(endpoint, tmp_path):
    location = bucket("clear")
    memory = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "near"))
    f, calls = counted(memory)
    shelved = f.call_and_shelve(10)
    assert shelved.get() == 11
    assert f(10) == 11 and calls == [(10, 1)]
    f.clear()
    assert not f.check_call_in_cache(10)
    assert f(10) == 11 and len(calls) == 2
    memory.clear()
    other = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "other"))
    assert not other.cache(f.func).check_call_in_cache(10)


def test_four_machines_compute_a_new_key_once(endpoint, tmp_path):
    """Four processes, each with a near cache of its own (four machines),
    on one new key: a lease in the bucket lets one compute, the others
    read its result."""
    counter = tmp_path / "computations"
    counter.touch()
    location = bucket("once")
    exits = memento_workers.released_together(
        memento_workers.square_once_on_bucket,
        lambda i: (location, options(endpoint, str(tmp_path / f"near{i}")), str(counter)),
        4,
        timeout=120,
    )
    assert exits == [0] * 4
    assert len(counter.read_text().splitlines()) == 1
    memory = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "last"))
    f = memory.cache(memento_workers._slow_square, ignore=["counter_path"])
    assert f.check_call_in_cache(7, str(counter))


def test_memory_pickles_with_its_bucket(endpoint, tmp_path):
    location = bucket("pickled")
    memory = Memory(location, verbose=0, backend_options=options(endpoint, tmp_path / "near"))
    f, calls = counted(memory)
    assert f(2) == 3
    again = pickle.loads(pickle.dumps(memory))
    assert again.location == location
    assert again.cache(f.func).check_call_in_cache(2)


def test_unreachable_bucket_warns_and_computes(tmp_path):
    """Nothing listens on the endpoint: the call computes and returns its
    value, with a warning that names the problem."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    memory = Memory(
        bucket("unreachable"),
        verbose=0,
        backend_options=options(f"http://127.0.0.1:{port}", tmp_path / "near"),
    )
    f, calls = counted(memory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert f(4) == 5
    assert calls == [(4, 1)]
    text = " ".join(str(w.message) for w in caught)
    assert caught and "127.0.0.1" in text, text


def test_options_checked(tmp_path):
    with pytest.raises(ValueError, match="endpoint_url"):  # the list of options
        Memory("s3://b/p", backend_options={"endpoint": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="together"):
        Memory("s3://b/p", backend_options={"aws_access_key_id": "id"})
    with pytest.raises(ValueError, match="allow_http"):
        Memory("s3://b/p", backend_options={"allow_http": "yes"})
    with pytest.raises(ValueError, match="near_cache_limit"):
        Memory("s3://b/p", backend_options={"near_cache_limit": "lots"})
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Memory(tmp_path / "folder", backend="s3")
    with pytest.raises(ValueError, match="'local'"):
        Memory(tmp_path / "folder", backend="gcs")
    with pytest.raises(ValueError, match="bucket"):
        Memory("s3://", backend_options={"endpoint_url": "http://127.0.0.1:1"})
    # A mistyped URL is a folder: a bucket's settings with it are refused.
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Memory(str(tmp_path / "s3:") + "/b", backend_options={"endpoint_url": "http://x"})
    assert not (tmp_path / "s3:").exists()

