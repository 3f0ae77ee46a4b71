from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from galaxalign.data.demo import DEMO_DIR
from galaxalign.data.download import (
    GALAXY10_DECALS_FILE,
    GALAXY_MNIST_FILES,
    ChecksumMismatchError,
    DatasetNotFoundError,
    RemoteFile,
    download_file,
    fetch,
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """Serve a folder over HTTP on 127.0.0.1 and yield (folder, base URL)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "server"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _real_bytes() -> bytes:
    """Return a real data file's bytes: the demo catalog (objids and labels of 5,652 galaxies)."""
    return (DEMO_DIR / "catalog.csv").read_bytes()


def test_download_writes_file_with_matching_md5(served, tmp_path: Path):
    folder, base = served
    content = _real_bytes()
    (folder / "catalog.csv").write_bytes(content)
    dest = tmp_path / "data" / "catalog.csv"

    result = download_file(f"{base}/catalog.csv", dest, hashlib.md5(content).hexdigest(), "demo catalog")

    assert result == dest
    assert dest.read_bytes() == content
    assert not dest.with_suffix(".csv.part").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["catalog.csv"]


def test_download_gunzips_after_md5_check(served, tmp_path: Path):
    folder, base = served
    content = _real_bytes()
    packed = gzip.compress(content, mtime=0)
    (folder / "catalog.csv.gz").write_bytes(packed)
    dest = tmp_path / "catalog.csv"

    download_file(
        f"{base}/catalog.csv.gz", dest, hashlib.md5(packed).hexdigest(), "demo catalog", gunzip=True
    )

    assert dest.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["catalog.csv"]


def test_download_md5_mismatch_deletes_file(served, tmp_path: Path):
    folder, base = served
    content = _real_bytes()
    (folder / "catalog.csv").write_bytes(content)
    dest = tmp_path / "catalog.csv"
    wrong = "0" * 32
    url = f"{base}/catalog.csv"

    with pytest.raises(ChecksumMismatchError) as caught:
        download_file(url, dest, wrong, "demo catalog")

    message = str(caught.value)
    assert url in message
    assert wrong in message
    assert hashlib.md5(content).hexdigest() in message
    assert not dest.exists()
    assert list(tmp_path.glob("catalog.csv*")) == []


def test_download_refused_connection_says_where_to_put_file(tmp_path: Path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The socket is closed, so nothing listens on the port and the connection is refused.
    url = f"http://127.0.0.1:{port}/Galaxy10_DECals.h5"
    dest = tmp_path / "Galaxy10_DECals.h5"

    with pytest.raises(DatasetNotFoundError) as caught:
        download_file(url, dest, "0" * 32, "Galaxy10 DECaLS", homepage="https://zenodo.org/records/10845026")

    message = str(caught.value)
    assert url in message
    assert str(dest) in message
    assert "https://zenodo.org/records/10845026" in message
    assert "by hand" in message
    assert "gunzip" not in message
    assert isinstance(caught.value, FileNotFoundError)
    assert not dest.exists()
    assert not dest.with_suffix(".h5.part").exists()


def test_download_http_error_is_not_found(served, tmp_path: Path):
    _, base = served
    with pytest.raises(DatasetNotFoundError, match="HTTP 404"):
        download_file(f"{base}/absent.h5", tmp_path / "absent.h5", "0" * 32, "absent file")


def test_existing_file_is_not_downloaded_again(tmp_path: Path):
    dest = tmp_path / "train_dataset.hdf5"
    dest.write_bytes(b"already here")
    # An existing file returns before the URL is opened.
    result = download_file("http://127.0.0.1:9/train_dataset.hdf5", dest, "0" * 32, "GalaxyMNIST")
    assert result == dest
    assert dest.read_bytes() == b"already here"


def test_fetch_unpacks_remote_gzip(served, tmp_path: Path):
    folder, base = served
    content = _real_bytes()
    packed = gzip.compress(content, mtime=0)
    (folder / "train_dataset.hdf5.gz").write_bytes(packed)
    remote = RemoteFile(
        url=f"{base}/train_dataset.hdf5.gz",
        md5=hashlib.md5(packed).hexdigest(),
        filename="train_dataset.hdf5",
        description="test file",
        homepage="https://github.com/mwalmsley/galaxy_mnist",
        size_note="small",
    )
    path = fetch(remote, tmp_path / "galaxymnist")
    assert path == tmp_path / "galaxymnist" / "train_dataset.hdf5"
    assert path.read_bytes() == content


def test_public_constants_hold_published_checksums():
    assert GALAXY10_DECALS_FILE.url == "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5"
    assert GALAXY10_DECALS_FILE.md5 == "c6b7b4db82b3a5d63d6a7e3e5249b51c"
    assert not GALAXY10_DECALS_FILE.gzipped
    train, test = GALAXY_MNIST_FILES
    assert train.md5 == "e408ae294e9b975482dc1abffeb373a6"
    assert test.md5 == "7a940e4cea64a8b7cb60339098f74490"
    assert (train.filename, test.filename) == ("train_dataset.hdf5", "test_dataset.hdf5")
    assert train.gzipped and test.gzipped
