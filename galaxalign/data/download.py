"""Download of the public data set files with MD5 checks, and where to get them by hand."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A data file that is neither on disk nor downloadable; the message names where to place it."""


class ChecksumMismatchError(OSError):
    """A downloaded file whose MD5 differs from the published one; the partial file is deleted."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a public data set: its URL, published MD5 and name on disk.

    ``filename`` is the name after download, without ``.gz`` when the URL
    points at a gzip file that is unpacked. ``homepage`` is the page to get
    the file from by hand. ``size_note`` is an approximate size for messages.
    """

    url: str
    md5: str
    filename: str
    description: str
    homepage: str
    size_note: str

    @property
    def gzipped(self) -> bool:
        return self.url.endswith(".gz")


GALAXY10_DECALS_FILE = RemoteFile(
    url="https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5",
    md5="c6b7b4db82b3a5d63d6a7e3e5249b51c",
    filename="Galaxy10_DECals.h5",
    description="Galaxy10 DECaLS (Leung & Bovy, 17,736 images of 256x256 pixels)",
    homepage="https://zenodo.org/records/10845026",
    size_note="about 2.5 GB",
)

# The MD5 sums are those of the .gz files, as published in M. Walmsley's galaxy_mnist package.
GALAXY_MNIST_TRAIN_FILE = RemoteFile(
    url="https://dl.dropboxusercontent.com/s/5a14de0o7slyif9/train_dataset.hdf5.gz",
    md5="e408ae294e9b975482dc1abffeb373a6",
    filename="train_dataset.hdf5",
    description="GalaxyMNIST training set (8,000 images of 64x64 pixels)",
    homepage="https://github.com/mwalmsley/galaxy_mnist",
    size_note="98 MB unpacked",
)
GALAXY_MNIST_TEST_FILE = RemoteFile(
    url="https://dl.dropboxusercontent.com/s/5rza12nn24cwd2k/test_dataset.hdf5.gz",
    md5="7a940e4cea64a8b7cb60339098f74490",
    filename="test_dataset.hdf5",
    description="GalaxyMNIST test set (2,000 images of 64x64 pixels)",
    homepage="https://github.com/mwalmsley/galaxy_mnist",
    size_note="25 MB unpacked",
)
GALAXY_MNIST_FILES = (GALAXY_MNIST_TRAIN_FILE, GALAXY_MNIST_TEST_FILE)


def fetch(remote: RemoteFile, folder: str | Path, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``folder`` unless it is already there, and return its path."""
    return download_file(
        remote.url,
        Path(folder) / remote.filename,
        remote.md5,
        remote.description,
        gunzip=remote.gzipped,
        homepage=remote.homepage,
        timeout=timeout,
    )


def download_file(
    url: str,
    dest: str | Path,
    md5: str,
    description: str,
    *,
    gunzip: bool = False,
    homepage: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, check its MD5 and return ``dest``.

    The download streams to ``<dest>.part`` and is renamed into place only
    after the MD5 matches, so a partial file never appears at ``dest``. With
    ``gunzip=True`` the MD5 is that of the compressed download, which is then
    unpacked to ``dest``. An existing ``dest`` is returned without download or
    check. ``timeout`` is in seconds, per network operation.

    Raises ``DatasetNotFoundError`` when the server cannot be reached or
    responds with an HTTP error, and ``ChecksumMismatchError`` when the MD5
    differs. Both delete the partial file. An interrupted download is not
    resumed: the next call starts again from the first byte.
    """
    dest = Path(dest)
    if dest.exists():
        logger.info("%s is already at %s", description, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + (".gz.part" if gunzip else ".part"))

    logger.info("downloading %s from %s to %s", description, url, dest)
    try:
        actual_md5 = _stream_to_file(url, part, description, timeout)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
        part.unlink(missing_ok=True)
        unpack = ", unpack it with gunzip" if gunzip else ""
        raise DatasetNotFoundError(
            f"could not download {description} from {url}: {_reason(error)}. "
            f"Download it by hand from {homepage or url}{unpack} and place it at {dest}."
        ) from error
    except BaseException:
        part.unlink(missing_ok=True)
        raise

    if actual_md5 != md5.lower():
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"the download of {url} has MD5 {actual_md5}, expected {md5.lower()}; the file was "
            "deleted. Retry the download; if the mismatch persists, the file on the server "
            f"changed: get it by hand from {homepage or url} and place it at {dest}."
        )

    if gunzip:
        _gunzip_into_place(part, dest)
    else:
        os.replace(part, dest)
    logger.info("saved %s to %s", description, dest)
    return dest


def _stream_to_file(url: str, part: Path, description: str, timeout: float) -> str:
    """Write the body at ``url`` to ``part`` and return its MD5 as hex digits."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with (
            open(part, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description) as progress,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)
    return digest.hexdigest()


def _gunzip_into_place(compressed: Path, dest: Path) -> None:
    unpacked = dest.with_suffix(dest.suffix + ".part")
    try:
        with gzip.open(compressed, "rb") as source, open(unpacked, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK_BYTES)
        os.replace(unpacked, dest)
    finally:
        unpacked.unlink(missing_ok=True)
        compressed.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__
