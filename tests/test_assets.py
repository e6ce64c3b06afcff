"""Verified fetching against a local HTTP server on 127.0.0.1 and mirror folders."""

import hashlib
import http.server
import logging
import threading

import pytest

from deepdream_caffe import assets
from deepdream_caffe.errors import DreamError

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated":  # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", "")
    return tmp_path / "cache" / "data"


def asset(url, data=PAYLOAD, algorithm="sha256", name="file.bin"):
    return assets.Asset(
        name, url, f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}", len(data)
    )


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_caches(server, cache):
    a = asset(server + "/good", algorithm="sha1")
    path = assets.fetch(a, progress=False)
    assert path == cache / "file.bin" and path.read_bytes() == PAYLOAD
    assert assets.fetch(a, progress=False) == path  # second time from the cache


def test_wrong_checksum_is_refused_and_removed(server, cache):
    bad = asset(server + "/good", data=b"something else")
    bad = assets.Asset(bad.filename, bad.url, bad.hash)  # size unknown: only the hash decides
    with pytest.raises(DreamError, match="not kept"):
        assets.fetch(bad, progress=False)
    assert leftovers(cache) == []


def test_interrupted_download_leaves_nothing(server, cache):
    with pytest.raises(DreamError, match="cannot download"):
        assets.fetch(asset(server + "/truncated"), progress=False)
    assert leftovers(cache) == []


def test_unreachable_names_url_mirror_and_weights(cache):
    a = asset("http://127.0.0.1:9/file.bin")  # nothing listens on port 9
    with pytest.raises(DreamError) as e:
        assets.fetch(a, progress=False)
    message = str(e.value)
    assert a.url in message and "DEEPDREAM_CAFFE_MIRROR" in message and "--weights" in message


def test_mirror_is_used_before_network(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", f"{tmp_path / 'missing'}:{mirror}")
    assert assets.fetch(asset("http://127.0.0.1:9/x"), progress=False) == mirror / "file.bin"


def test_corrupt_mirror_copy_is_never_used(server, tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(PAYLOAD[:-1] + b"!")
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(mirror))
    path = assets.fetch(asset(server + "/good"), progress=False)
    assert path == cache / "file.bin" and path.read_bytes() == PAYLOAD
    assert (mirror / "file.bin").read_bytes() != PAYLOAD  # the user's file is left alone


def test_corrupt_mirror_copy_and_no_network_is_one_error_naming_both(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(b"not it")
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(mirror))
    with assert_nothing_logged(), pytest.raises(DreamError) as e:
        assets.fetch(asset("http://127.0.0.1:9/file.bin"), progress=False)
    message = str(e.value)
    assert "cannot download" in message and "\n" not in message
    assert f"ignored {mirror / 'file.bin'}" in message and "replace" in message
    assert (mirror / "file.bin").read_bytes() == b"not it"


class assert_nothing_logged:  # noqa: N801 (a context manager, used like a function)
    def __enter__(self):
        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        logging.getLogger().addHandler(self.handler)

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self.handler)
        assert [r.getMessage() for r in self.records] == []


def test_corrupt_cached_copy_is_replaced(server, cache):
    cache.mkdir(parents=True)
    (cache / "file.bin").write_bytes(b"half")
    assert assets.fetch(asset(server + "/good"), progress=False).read_bytes() == PAYLOAD


def test_notebook_assets_in_mirror_match_registry():
    for a in assets.NOTEBOOK_ASSETS.values():
        assert a.url.startswith(assets.NOTEBOOK_URL)
        try:
            path = assets.fetch(a, progress=False)
        except DreamError:
            pytest.skip("no mirror of the notebook's files")
        assert assets.matches(path, a)


def test_wrong_size_is_refused_and_removed(server, cache):
    a = asset(server + "/good")
    wrong = assets.Asset(a.filename, a.url, a.hash, a.size + 1)  # the record says otherwise
    with pytest.raises(DreamError, match="wrong size"):
        assets.fetch(wrong, progress=False)
    assert leftovers(cache) == []
