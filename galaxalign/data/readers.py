"""Readers that turn Galaxy10 DECaLS, GalaxyMNIST and catalog CSV files into a GalaxyDataset."""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.download import (
    GALAXY10_DECALS_FILE,
    GALAXY_MNIST_FILES,
    DatasetNotFoundError,
    download_file,
    fetch,
)
from galaxalign.data.images import ConcatImages, FileImages, H5Images
from galaxalign.schema import GALAXY10_DECALS, GALAXY_MNIST, GZ1, ClassSchema, schema_from_names

logger = logging.getLogger(__name__)

CATALOG_FILENAME = "catalog.csv"
DATASET_NAMES = ("galaxy10", "galaxymnist", "catalog", "demo")

# Per-galaxy datasets of the full Galaxy10 DECaLS file, kept in GalaxyDataset.extra: ra and
# dec in degrees, redshift, pxscale in arcsec per pixel (github.com/henrysky/Galaxy10 README).
_GALAXY10_EXTRA = ("ra", "dec", "redshift", "pxscale")
_INTEGER = re.compile(r"[+-]?\d+")


class CatalogError(ValueError):
    """A catalog CSV that cannot be read as a dataset; the message names the file and row."""


class InvalidDatasetError(ValueError):
    """A data file without the expected layout; the message names the file and its datasets."""


def default_data_dir() -> Path:
    """Return the folder for downloaded data sets: $GALAXALIGN_DATA, else ~/.cache/galaxalign/datasets."""
    configured = os.environ.get("GALAXALIGN_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "galaxalign" / "datasets"


def read_dataset(
    name: str,
    data_dir: str | Path | None,
    download: bool = False,
    **catalog_kwargs: Any,
) -> GalaxyDataset:
    """Read a data set by name: "galaxy10", "galaxymnist", "catalog" or "demo".

    ``data_dir`` is the Galaxy10 file or its folder, the GalaxyMNIST folder,
    or the catalog CSV (or a folder containing ``catalog.csv``). ``None`` means
    :func:`default_data_dir` for the two downloadable sets. The demo set ships
    with the package and takes no ``data_dir``. ``catalog_kwargs`` go to
    :func:`read_catalog`.
    """
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
    if catalog_kwargs and key != "catalog":
        raise ValueError(
            f"options {sorted(catalog_kwargs)} apply only to the 'catalog' dataset, not to {name!r}"
        )

    if key == "demo":
        from galaxalign.data.demo import load_demo

        if data_dir is not None:
            logger.warning("the demo set ships with the package; data_dir=%s is not used", data_dir)
        return load_demo()
    if key == "catalog":
        if download:
            raise ValueError("a catalog cannot be downloaded; drop download=True for the 'catalog' dataset")
        if data_dir is None:
            raise ValueError(
                "the 'catalog' dataset needs data_dir: the catalog CSV file, or a folder "
                f"containing {CATALOG_FILENAME}"
            )
        path = Path(data_dir).expanduser()
        return read_catalog(path / CATALOG_FILENAME if path.is_dir() else path, **catalog_kwargs)

    folder = Path(data_dir) if data_dir is not None else default_data_dir() / key
    if key == "galaxy10":
        return read_galaxy10(folder, download=download)
    return read_galaxymnist(folder, download=download)


def read_galaxy10(path: str | Path, download: bool = False) -> GalaxyDataset:
    """Read Galaxy10 DECaLS from ``Galaxy10_DECals.h5``, or from a folder containing it.

    The file contains ``images`` (N, 256, 256, 3) uint8 and ``ans`` (N,) labels
    0..9. It has no object ids, so galaxy ``i`` gets the id ``"galaxy10:<i>"``.
    The ``ra``, ``dec`` (degrees), ``redshift`` and ``pxscale`` (arcsec per
    pixel) datasets, where present, go to ``extra`` as float64 arrays. Images
    are read lazily, one at a time. ``download=True`` fetches the file (about
    2.5 GB) when it is missing.
    """
    file = _galaxy10_file(Path(path).expanduser())
    if not file.exists():
        if not download:
            raise DatasetNotFoundError(
                f"Galaxy10 DECaLS file not found: {file}. Pass download=True to fetch it "
                f"({GALAXY10_DECALS_FILE.size_note}) from {GALAXY10_DECALS_FILE.url}, or download "
                f"{GALAXY10_DECALS_FILE.filename} by hand from {GALAXY10_DECALS_FILE.homepage} "
                f"and place it at {file}."
            )
        download_file(
            GALAXY10_DECALS_FILE.url,
            file,
            GALAXY10_DECALS_FILE.md5,
            GALAXY10_DECALS_FILE.description,
            homepage=GALAXY10_DECALS_FILE.homepage,
        )

    with _open_h5(file) as h5:
        _check_layout(h5, file, {"images": "(N, H, W, 3) uint8 images", "ans": "(N,) labels"})
        labels = _read_labels(h5, file, "ans")
        extra = {
            name: h5[name][:].astype(np.float64)
            for name in _GALAXY10_EXTRA
            if isinstance(h5.get(name), h5py.Dataset) and h5[name].shape == (len(labels),)
        }

    ids = np.array([f"galaxy10:{row}" for row in range(len(labels))])
    dataset = GalaxyDataset(
        images=H5Images(file, "images"),
        labels=labels,
        ids=ids,
        schema=GALAXY10_DECALS,
        source=str(file),
        extra=extra or None,
    )
    logger.info("read %d Galaxy10 DECaLS galaxies from %s", len(dataset), file)
    return dataset


def _galaxy10_file(path: Path) -> Path:
    if path.is_dir():
        return path / GALAXY10_DECALS_FILE.filename
    if path.exists() or path.suffix.lower() in (".h5", ".hdf5"):
        return path
    return path / GALAXY10_DECALS_FILE.filename


def read_galaxymnist(folder: str | Path, download: bool = False) -> GalaxyDataset:
    """Read GalaxyMNIST from a folder containing ``train_dataset.hdf5`` and ``test_dataset.hdf5``.

    Each file contains ``images`` (N, 64, 64, 3) uint8, channels last, and
    ``labels`` (N,) 0..3. The training galaxies come first, with ids
    ``"train:<row>"``, then the test galaxies with ids ``"test:<row>"``;
    ``canonical_split`` records which set each came from. ``download=True``
    fetches and unpacks the missing files.
    """
    folder = Path(folder).expanduser()
    names = [remote.filename for remote in GALAXY_MNIST_FILES]
    if folder.is_file():
        raise ValueError(f"{folder} is a file; pass the folder that contains {names}")
    missing = [remote for remote in GALAXY_MNIST_FILES if not (folder / remote.filename).exists()]
    if missing and not download:
        raise DatasetNotFoundError(
            f"GalaxyMNIST files not found in {folder}: {[remote.filename for remote in missing]}. "
            "Pass download=True to fetch them, or download "
            f"{', '.join(remote.url for remote in missing)} by hand (see {missing[0].homepage}), "
            f"unpack them with gunzip and place {names} in {folder}."
        )
    for remote in missing:
        fetch(remote, folder)

    sources: list[H5Images] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    splits: list[str] = []
    for remote, split in zip(GALAXY_MNIST_FILES, ("train", "test"), strict=True):
        file = folder / remote.filename
        with _open_h5(file) as h5:
            _check_layout(h5, file, {"images": "(N, 64, 64, 3) uint8 images", "labels": "(N,) labels"})
            part_labels = _read_labels(h5, file, "labels")
        sources.append(H5Images(file, "images"))
        labels.append(part_labels)
        ids.extend(f"{split}:{row}" for row in range(len(part_labels)))
        splits.extend([split] * len(part_labels))

    dataset = GalaxyDataset(
        images=ConcatImages(sources),
        labels=np.concatenate(labels),
        ids=np.array(ids),
        schema=GALAXY_MNIST,
        source=str(folder),
        canonical_split=np.array(splits),
    )
    logger.info(
        "read %d GalaxyMNIST galaxies from %s (%d train, %d test)",
        len(dataset),
        folder,
        len(labels[0]),
        len(labels[1]),
    )
    return dataset


def _open_h5(file: Path) -> h5py.File:
    try:
        return h5py.File(file, "r")
    except OSError as error:
        raise InvalidDatasetError(
            f"{file} is not a readable HDF5 file ({error}); download it again or replace it"
        ) from error


def _check_layout(h5: h5py.File, file: Path, expected: dict[str, str]) -> None:
    """Raise InvalidDatasetError unless ``h5`` has the expected datasets with N matching."""
    found = sorted(h5.keys())
    missing = [name for name in expected if not isinstance(h5.get(name), h5py.Dataset)]
    if missing:
        expected_text = ", ".join(f"{name} {shape}" for name, shape in expected.items())
        raise InvalidDatasetError(
            f"{file} lacks the datasets {missing}: it contains {found}, expected {expected_text}. "
            "Check that this is the right file, or download it again."
        )
    images_name, labels_name = list(expected)
    images, labels = h5[images_name], h5[labels_name]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise InvalidDatasetError(
            f"{file}: dataset {images_name!r} has shape {images.shape}, expected "
            f"{expected[images_name]} with channels last"
        )
    if images.dtype != np.uint8:
        raise InvalidDatasetError(
            f"{file}: dataset {images_name!r} contains {images.dtype} pixels, expected uint8 (0-255). "
            "Convert the images to uint8 before writing the file, because other pixel types have "
            "no agreed brightness scale"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise InvalidDatasetError(
            f"{file}: dataset {labels_name!r} has shape {labels.shape} but {images_name!r} "
            f"holds {images.shape[0]} images; expected one label per image"
        )


def _read_labels(h5: h5py.File, file: Path, labels_name: str) -> np.ndarray:
    values = h5[labels_name][:]
    if not np.issubdtype(values.dtype, np.integer):
        if not np.issubdtype(values.dtype, np.floating) or not np.all(np.mod(values, 1) == 0):
            raise InvalidDatasetError(
                f"{file}: dataset {labels_name!r} contains {values.dtype} values that are not "
                "integer class labels"
            )
    return values.astype(np.int64)


@dataclass
class _CatalogRow:
    number: int
    line: int
    objid: str
    file: str
    label: int | None
    class_name: str | None


def read_catalog(
    catalog: str | Path,
    image_dir: str | Path | None = None,
    schema: ClassSchema | None = None,
    file_column: str = "file",
    id_column: str = "objid",
    label_column: str = "label",
    class_column: str = "class_name",
    skip_missing: bool = False,
) -> GalaxyDataset:
    """Read a catalog CSV with one row per galaxy and the image files it names.

    ``file_column`` contains the image path, relative to ``image_dir`` or, without
    it, to the CSV's folder. ``id_column`` contains the object id, read as text so
    that SDSS objids keep all their digits. Without that column the file name
    stem is the id. Labels come from ``label_column`` (integers) or
    ``class_column`` (class names) or both, and then both must agree on every row.

    Without ``schema``: class names that all belong to Galaxy Zoo 1 (with
    labels, if any, in GZ1's order) give the GZ1 schema. Other names give a
    schema built by :func:`schema_from_names` in the order of the labels, or
    in sorted order when there is no label column. A catalog with labels but
    no class names needs ``schema``.

    Errors raise ``CatalogError`` naming the CSV and the row: row N is the Nth
    data row, the header not counted, and the line number in the file is
    given beside it. Rows whose image file is missing raise too, unless
    ``skip_missing=True``, which leaves them out with a warning in the log.
    """
    csv_path = Path(catalog).expanduser()
    if not csv_path.is_file():
        raise DatasetNotFoundError(f"catalog not found: {csv_path}; pass the path of the catalog CSV")
    image_root = Path(image_dir).expanduser() if image_dir is not None else csv_path.parent

    rows, has_label, has_class = _read_catalog_rows(
        csv_path, file_column, id_column, label_column, class_column
    )
    if schema is not None:
        labels = _labels_from_schema(csv_path, rows, schema)
    else:
        schema, labels = _infer_schema(csv_path, rows, has_label, has_class, label_column, class_column)
    _check_unique_ids(csv_path, rows, id_column)
    paths, kept_rows = _resolve_image_files(csv_path, rows, image_root, image_dir is not None, skip_missing)

    dataset = GalaxyDataset(
        images=FileImages(paths),
        labels=labels[kept_rows],
        ids=np.array([rows[i].objid for i in kept_rows]),
        schema=schema,
        source=str(csv_path),
    )
    logger.info(
        "read %d galaxies in %d classes from %s (schema %r)",
        len(dataset),
        len(schema),
        csv_path,
        schema.name,
    )
    return dataset


def _where(csv_path: Path, row: _CatalogRow) -> str:
    return f"{csv_path}, row {row.number} (line {row.line})"


def _read_catalog_rows(
    csv_path: Path, file_column: str, id_column: str, label_column: str, class_column: str
) -> tuple[list[_CatalogRow], bool, bool]:
    """Parse the CSV into rows, checking the columns and each cell that needs no schema."""
    try:
        return _parse_catalog(csv_path, file_column, id_column, label_column, class_column)
    except UnicodeDecodeError as error:
        raise CatalogError(
            f"{csv_path} is not valid UTF-8 text ({error}); save the catalog as UTF-8 CSV"
        ) from error


def _parse_catalog(
    csv_path: Path, file_column: str, id_column: str, label_column: str, class_column: str
) -> tuple[list[_CatalogRow], bool, bool]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise CatalogError(
                f"{csv_path} is empty: expected a header line with the columns "
                f"{file_column}, {id_column} and {label_column} or {class_column}, "
                "then one row per galaxy"
            )
        header = [name.strip() for name in reader.fieldnames]
        reader.fieldnames = header
        has_label = label_column in header
        has_class = class_column in header
        has_id = id_column in header

        missing = [] if file_column in header else [file_column]
        if not (has_label or has_class):
            missing.append(f"{label_column} or {class_column}")
        if missing:
            separator_hint = ""
            if len(header) == 1 and any(mark in header[0] for mark in ";\t|"):
                separator_hint = (
                    " The header looks separated by ';', tab or '|': save the catalog with commas."
                )
            raise CatalogError(
                f"{csv_path} lacks the columns {missing}; its header has {header}. Rename the "
                "columns, or pass file_column=, label_column= or class_column= with the names "
                "this catalog uses." + separator_hint
            )
        if not has_id:
            logger.info("%s has no column %r; the file name stems are the object ids", csv_path, id_column)

        rows = []
        for number, record in enumerate(reader, start=1):
            row = _CatalogRow(number, reader.line_num, "", "", None, None)
            row.file = _cell(csv_path, row, record, file_column)
            row.objid = _cell(csv_path, row, record, id_column) if has_id else Path(row.file).stem
            if has_label:
                row.label = _parse_label(csv_path, row, _cell(csv_path, row, record, label_column))
            if has_class:
                row.class_name = _cell(csv_path, row, record, class_column)
            rows.append(row)

    if not rows:
        raise CatalogError(f"{csv_path} has a header but no rows; add one row per galaxy")
    return rows, has_label, has_class


def _cell(csv_path: Path, row: _CatalogRow, record: dict[str | None, Any], column: str) -> str:
    value = (record.get(column) or "").strip()
    if not value:
        raise CatalogError(
            f"{_where(csv_path, row)}: the {column!r} cell is empty; fill it or remove the row"
        )
    return value


def _parse_label(csv_path: Path, row: _CatalogRow, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise CatalogError(
            f"{_where(csv_path, row)}: label {text!r} is not an integer; labels are class "
            "numbers 0, 1, 2, ... (or leave out the label column and use class names)"
        )
    return int(text)


def _labels_from_schema(csv_path: Path, rows: Sequence[_CatalogRow], schema: ClassSchema) -> np.ndarray:
    """Return each row's label under ``schema``, checking names, ranges and agreement."""
    index = {name: i for i, name in enumerate(schema.names)}
    labels = np.empty(len(rows), dtype=np.int64)
    for position, row in enumerate(rows):
        from_name = None
        if row.class_name is not None:
            from_name = index.get(row.class_name)
            if from_name is None:
                raise CatalogError(
                    f"{_where(csv_path, row)}: unknown class name {row.class_name!r}; schema "
                    f"{schema.name!r} has the classes {schema.names}. Fix the name, or pass a "
                    "schema that contains it."
                )
        if row.label is not None:
            if not 0 <= row.label < len(schema):
                raise CatalogError(
                    f"{_where(csv_path, row)}: label {row.label} is out of range 0..{len(schema) - 1} "
                    f"of schema {schema.name!r} ({schema.names})"
                )
            if from_name is not None and from_name != row.label:
                raise CatalogError(
                    f"{_where(csv_path, row)}: label {row.label} ({schema.names[row.label]!r}) "
                    f"disagrees with class_name {row.class_name!r}, which is label {from_name} in "
                    f"schema {schema.name!r}; fix one of them"
                )
        label = row.label if row.label is not None else from_name
        assert label is not None, "a catalog row has a label or a class name"
        labels[position] = label
    return labels


def _infer_schema(
    csv_path: Path,
    rows: Sequence[_CatalogRow],
    has_label: bool,
    has_class: bool,
    label_column: str,
    class_column: str,
) -> tuple[ClassSchema, np.ndarray]:
    """Choose GZ1 or build a schema from the catalog's class names; return it and the labels."""
    if not has_class:
        raise CatalogError(
            f"{csv_path} has a {label_column!r} column but no {class_column!r} column, so the "
            f"class names are unknown; add a {class_column!r} column or pass schema="
        )
    class_names = [row.class_name for row in rows if row.class_name is not None]
    names = set(class_names)
    if names <= set(GZ1.names):
        in_gz1_order = not has_label or all(
            row.label == GZ1.index(name) for row, name in zip(rows, class_names, strict=True)
        )
        # Names that are exactly GZ1's must carry GZ1's labels: the schema check names the row.
        if in_gz1_order or names == set(GZ1.names):
            return GZ1, _labels_from_schema(csv_path, rows, GZ1)

    if has_label:
        ordered = _names_by_label(csv_path, rows)
    else:
        ordered = sorted(names)
    schema_name = (
        csv_path.parent.name if csv_path.stem == "catalog" and csv_path.parent.name else csv_path.stem
    )
    schema = schema_from_names(schema_name, ordered)
    return schema, _labels_from_schema(csv_path, rows, schema)


def _names_by_label(csv_path: Path, rows: Sequence[_CatalogRow]) -> list[str]:
    """Map labels to class names, checking that each label has one name and each name one label."""
    name_of: dict[int, tuple[str, _CatalogRow]] = {}
    label_of: dict[str, tuple[int, _CatalogRow]] = {}
    for row in rows:
        label, name = row.label, row.class_name
        assert label is not None and name is not None
        if label in name_of and name_of[label][0] != name:
            first_name, first = name_of[label]
            raise CatalogError(
                f"{_where(csv_path, row)}: label {label} disagrees with class_name {name!r}, because "
                f"row {first.number} gives label {label} to class {first_name!r}; fix one of them"
            )
        if name in label_of and label_of[name][0] != label:
            first_label, first = label_of[name]
            raise CatalogError(
                f"{_where(csv_path, row)}: class_name {name!r} disagrees with label {label}, because "
                f"row {first.number} gives class {name!r} the label {first_label}; fix one of them"
            )
        name_of.setdefault(label, (name, row))
        label_of.setdefault(name, (label, row))

    count = len(name_of)
    for row in rows:
        if not 0 <= row.label < count:  # type: ignore[operator]
            raise CatalogError(
                f"{_where(csv_path, row)}: label {row.label} is out of range 0..{count - 1}: the "
                f"catalog has {count} classes, and without a schema the labels must number them "
                "from 0 without gaps. Renumber the labels or pass schema=."
            )
    return [name_of[label][0] for label in range(count)]


# An id such as "5.88849E+17" is an integer objid that a spreadsheet rounded and
# wrote in scientific notation.
_SCIENTIFIC_ID = re.compile(r"^[+-]?\d(\.\d+)?[eE][+-]?\d+$")
_ROUNDED_ID_HINT = (
    " Ids like this are integer objids that a spreadsheet rounded to scientific notation, which "
    "loses digits: export the column as text from the original catalog."
)


def _check_unique_ids(csv_path: Path, rows: Sequence[_CatalogRow], id_column: str) -> None:
    first_row: dict[str, _CatalogRow] = {}
    for row in rows:
        if row.objid in first_row:
            hint = _ROUNDED_ID_HINT if _SCIENTIFIC_ID.match(row.objid) else ""
            raise CatalogError(
                f"{_where(csv_path, row)}: object id {row.objid!r} repeats row "
                f"{first_row[row.objid].number} (ids come from the {id_column!r} column, or from "
                "the file name stem without it); remove the duplicate row or give it its own id." + hint
            )
        first_row[row.objid] = row
    rounded = [row for row in rows if _SCIENTIFIC_ID.match(row.objid)]
    if rounded:
        warnings.warn(
            f"{_where(csv_path, rounded[0])}: object id {rounded[0].objid!r} and {len(rounded) - 1} "
            f"more are in scientific notation.{_ROUNDED_ID_HINT}",
            stacklevel=4,
        )


def _resolve_image_files(
    csv_path: Path,
    rows: Sequence[_CatalogRow],
    image_root: Path,
    root_given: bool,
    skip_missing: bool,
) -> tuple[list[Path], np.ndarray]:
    """Return the image path of each kept row and the kept row positions."""
    paths = [image_root / row.file for row in rows]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing and not skip_missing:
        first = rows[missing[0]]
        root = "image_dir" if root_given else "the catalog's folder"
        raise CatalogError(
            f"{_where(csv_path, first)}: image file not found: {paths[missing[0]]}. "
            f"{len(missing)} of {len(rows)} image files are missing; paths are read relative to "
            f"{root} ({image_root}). Fix the paths, pass image_dir=, or pass skip_missing=True "
            "to leave these rows out."
        )
    if missing:
        missing_names = [str(paths[i]) for i in missing[:20]]
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        logger.warning(
            "%s: skipped %d of %d rows whose image file is missing: %s%s",
            csv_path,
            len(missing),
            len(rows),
            ", ".join(missing_names),
            more,
        )
        if len(missing) == len(rows):
            raise CatalogError(
                f"{csv_path}: none of the {len(rows)} image files exists under {image_root}; "
                "check image_dir and the file column"
            )
    kept_rows = np.setdiff1d(np.arange(len(rows)), missing)
    return [paths[i] for i in kept_rows], kept_rows
