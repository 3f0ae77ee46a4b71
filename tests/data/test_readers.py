from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from galaxalign.data import readers
from galaxalign.data.download import DatasetNotFoundError
from galaxalign.data.readers import (
    CatalogError,
    InvalidDatasetError,
    read_catalog,
    read_dataset,
    read_galaxy10,
    read_galaxymnist,
)
from galaxalign.schema import GALAXY10_DECALS, GALAXY_MNIST, GZ1, schema_from_names

GZ1_COUNTS = {
    "elliptical": 3931,
    "spiral_clockwise": 345,
    "spiral_anticlockwise": 371,
    "edge_on": 852,
    "dont_know": 49,
    "merger": 104,
}


# Galaxy10 DECaLS


def _write_galaxy10(path: Path, images: np.ndarray, labels: list[int], **extra: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images)
        h5.create_dataset("ans", data=np.array(labels, dtype=np.uint8))
        for name, values in extra.items():
            h5.create_dataset(name, data=values)


def test_galaxy10_reads_tiny_file(tmp_path: Path, galaxies):
    path = tmp_path / "Galaxy10_DECals.h5"
    ra = np.array([150.25, 10.5, 359.75])
    _write_galaxy10(path, galaxies[:3], [9, 0, 4], ra=ra, dec=np.array([2.5, -1.25, 30.0]))

    dataset = read_galaxy10(path)

    assert dataset.labels.tolist() == [9, 0, 4]
    assert dataset.ids.tolist() == ["galaxy10:0", "galaxy10:1", "galaxy10:2"]
    assert dataset.schema is GALAXY10_DECALS
    assert dataset.source == str(path)
    assert np.array_equal(dataset.load_image(1), galaxies[1])
    assert dataset.extra is not None
    assert dataset.extra["ra"].tolist() == ra.tolist()
    assert dataset.extra["dec"].dtype == np.float64
    assert sorted(dataset.extra) == ["dec", "ra"]


def test_galaxy10_accepts_folder(tmp_path: Path, galaxies):
    _write_galaxy10(tmp_path / "Galaxy10_DECals.h5", galaxies[:2], [1, 2])
    dataset = read_galaxy10(tmp_path)
    assert dataset.labels.tolist() == [1, 2]
    assert dataset.extra is None


def test_galaxy10_extra_follows_subset(tmp_path: Path, galaxies):
    path = tmp_path / "Galaxy10_DECals.h5"
    _write_galaxy10(
        path, galaxies[:3], [0, 1, 2], ra=np.array([1.0, 2.0, 3.0]), dec=np.array([4.0, 5.0, 6.0])
    )
    subset = read_galaxy10(path).subset([2, 0])
    assert subset.extra["ra"].tolist() == [3.0, 1.0]
    assert np.array_equal(subset.load_image(0), galaxies[2])


def test_galaxy10_missing_file_names_flag_and_place(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as caught:
        read_galaxy10(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "Galaxy10_DECals.h5") in message
    assert "download=True" in message
    assert "zenodo.org/records/10845026" in message


def test_galaxy10_download_flag_fetches_file(tmp_path: Path, galaxies, monkeypatch):
    original = tmp_path / "original.h5"
    _write_galaxy10(original, galaxies[:2], [3, 5])
    requested = []

    def fake_download(url, dest, md5, description, **kwargs):
        requested.append((url, Path(dest), md5))
        shutil.copy(original, dest)
        return Path(dest)

    monkeypatch.setattr(readers, "download_file", fake_download)
    folder = tmp_path / "galaxy10"
    folder.mkdir()
    dataset = read_galaxy10(folder, download=True)

    assert requested == [
        (
            "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5",
            folder / "Galaxy10_DECals.h5",
            "c6b7b4db82b3a5d63d6a7e3e5249b51c",
        )
    ]
    assert dataset.labels.tolist() == [3, 5]


def test_galaxy10_without_expected_datasets(tmp_path: Path, galaxies):
    path = tmp_path / "Galaxy10_DECals.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=galaxies[:2])
        h5.create_dataset("labels", data=[0, 1])
    with pytest.raises(InvalidDatasetError) as caught:
        read_galaxy10(path)
    message = str(caught.value)
    assert str(path) in message
    assert "['ans']" in message
    assert "['images', 'labels']" in message


def test_galaxy10_label_count_must_match(tmp_path: Path, galaxies):
    path = tmp_path / "Galaxy10_DECals.h5"
    _write_galaxy10(path, galaxies[:3], [0, 1])
    with pytest.raises(InvalidDatasetError, match=r"'ans' has shape \(2,\) but 'images' holds 3 images"):
        read_galaxy10(path)


def test_galaxy10_rejects_non_hdf5_file(tmp_path: Path):
    path = tmp_path / "Galaxy10_DECals.h5"
    path.write_text("<html>a download page, not the data</html>")
    with pytest.raises(InvalidDatasetError, match="not a readable HDF5 file"):
        read_galaxy10(path)


def test_galaxy10_label_out_of_range_names_file(tmp_path: Path, galaxies):
    path = tmp_path / "Galaxy10_DECals.h5"
    _write_galaxy10(path, galaxies[:2], [0, 10])
    with pytest.raises(
        ValueError, match=r"Galaxy10_DECals.h5: label 10 of object galaxy10:1 is outside 0..9"
    ):
        read_galaxy10(path)


def test_galaxy10_real_sample(shared_data: Path):
    path = shared_data / "galaxy10-sample" / "Galaxy10_DECals.h5"
    dataset = read_galaxy10(path)
    assert len(dataset) == 10
    assert dataset.labels.tolist() == list(range(10))
    with h5py.File(path, "r") as h5:
        expected = h5["images"][7]
    assert np.array_equal(dataset.load_image(7), expected)


# GalaxyMNIST


def _write_galaxymnist(
    folder: Path, galaxies: np.ndarray, train_labels: list[int], test_labels: list[int]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n_train = len(train_labels)
    for name, images, labels in (
        ("train_dataset.hdf5", galaxies[:n_train, :64, :64], train_labels),
        ("test_dataset.hdf5", galaxies[n_train : n_train + len(test_labels), :64, :64], test_labels),
    ):
        with h5py.File(folder / name, "w") as h5:
            h5.create_dataset("images", data=images)
            h5.create_dataset("labels", data=np.array(labels, dtype=np.int64))


def test_galaxymnist_reads_tiny_pair(tmp_path: Path, galaxies):
    _write_galaxymnist(tmp_path, galaxies, [0, 3, 1], [2, 2])
    dataset = read_galaxymnist(tmp_path)

    assert dataset.labels.tolist() == [0, 3, 1, 2, 2]
    assert dataset.ids.tolist() == ["train:0", "train:1", "train:2", "test:0", "test:1"]
    assert dataset.canonical_split.tolist() == ["train", "train", "train", "test", "test"]
    assert dataset.schema is GALAXY_MNIST
    assert np.array_equal(dataset.load_image(4), galaxies[4, :64, :64])
    assert dataset.describe(3) == f"{tmp_path / 'test_dataset.hdf5'}:images[0]"


def test_galaxymnist_missing_file_names_it(tmp_path: Path, galaxies):
    _write_galaxymnist(tmp_path, galaxies, [0, 1], [2])
    (tmp_path / "test_dataset.hdf5").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        read_galaxymnist(tmp_path)
    message = str(caught.value)
    assert "['test_dataset.hdf5']" in message
    assert str(tmp_path) in message
    assert "download=True" in message
    assert "5rza12nn24cwd2k/test_dataset.hdf5.gz" in message


def test_galaxymnist_channels_first_rejected(tmp_path: Path, galaxies):
    _write_galaxymnist(tmp_path, galaxies, [0], [1])
    with h5py.File(tmp_path / "train_dataset.hdf5", "w") as h5:
        h5.create_dataset("images", data=galaxies[:1, :64, :64].transpose(0, 3, 1, 2))
        h5.create_dataset("labels", data=[0])
    with pytest.raises(
        InvalidDatasetError, match=r"train_dataset.hdf5: dataset 'images' has shape \(1, 3, 64, 64\)"
    ):
        read_galaxymnist(tmp_path)


def test_galaxymnist_real_sample(shared_data: Path):
    folder = shared_data / "galaxymnist-sample"
    dataset = read_galaxymnist(folder)

    assert len(dataset) == 43
    assert (dataset.canonical_split == "train").sum() == 35
    assert (dataset.canonical_split == "test").sum() == 8
    with h5py.File(folder / "train_dataset.hdf5", "r") as h5:
        train_images, train_labels = h5["images"][:], h5["labels"][:]
    with h5py.File(folder / "test_dataset.hdf5", "r") as h5:
        test_images, test_labels = h5["images"][:], h5["labels"][:]
    assert dataset.labels.tolist() == train_labels.tolist() + test_labels.tolist()
    for position in (0, 34):
        assert np.array_equal(dataset.load_image(position), train_images[position])
    for row in (0, 7):
        assert np.array_equal(dataset.load_image(35 + row), test_images[row])


# Catalog CSV beside an image folder


def _write_catalog(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_images(folder: Path, galaxies: np.ndarray, names: list[str]) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.fromarray(galaxies[index]).save(folder / "images" / name)


def test_catalog_reads_jpeg_and_png_kinds(tmp_path: Path, galaxies):
    folder = tmp_path / "survey"
    (folder / "images").mkdir(parents=True)
    galaxy = galaxies[0]
    grey = galaxies[1][:, :, 0]
    alpha = np.tile(np.linspace(0, 255, 96).round().astype(np.uint8), (96, 1))
    deep = galaxies[2][:, :, 1].astype(np.uint16) * 257
    Image.fromarray(galaxy).save(folder / "images" / "a.png")
    Image.fromarray(grey).save(folder / "images" / "b.png")
    Image.fromarray(np.dstack([galaxies[3], alpha])).save(folder / "images" / "c.png")
    Image.fromarray(deep).save(folder / "images" / "d.png")
    Image.fromarray(galaxies[4]).save(folder / "images" / "e.jpeg", quality=95)
    catalog = _write_catalog(
        folder,
        [
            "objid,file,label,class_name",
            "588848901537202306,images/a.png,0,elliptical",
            "588848901532418163,images/b.png,3,edge_on",
            "588848901530583233,images/c.png,1,spiral_clockwise",
            "588848901527896238,images/d.png,5,merger",
            "587722952767439450,images/e.jpeg,2,spiral_anticlockwise",
        ],
    )

    dataset = read_catalog(catalog)

    assert dataset.schema is GZ1
    assert dataset.labels.tolist() == [0, 3, 1, 5, 2]
    # 18-digit SDSS objids exceed float precision; they must survive as text.
    assert dataset.ids.tolist()[0] == "588848901537202306"
    assert np.array_equal(dataset.load_image(0), galaxy)
    assert np.array_equal(dataset.load_image(1), np.dstack([grey] * 3))
    composited = np.rint(galaxies[3] * (alpha[:, :, None] / 255.0)).astype(np.uint8)
    assert np.array_equal(dataset.load_image(2), composited)
    assert np.array_equal(dataset.load_image(3), np.dstack([galaxies[2][:, :, 1]] * 3))
    with Image.open(folder / "images" / "e.jpeg") as jpeg:
        assert np.array_equal(dataset.load_image(4), np.asarray(jpeg))
    assert dataset.describe(1) == str(folder / "images" / "b.png")


def test_catalog_image_dir_and_ids_from_stems(tmp_path: Path, galaxies):
    image_root = tmp_path / "cutouts"
    _write_images(image_root, galaxies, ["g1.png", "g2.png"])
    catalog = _write_catalog(
        tmp_path / "tables", ["file,class_name", "images/g1.png,merger", "images/g2.png,edge_on"]
    )

    dataset = read_catalog(catalog, image_dir=image_root)

    assert dataset.ids.tolist() == ["g1", "g2"]
    assert dataset.schema is GZ1
    assert dataset.labels.tolist() == [5, 3]
    assert np.array_equal(dataset.load_image(1), galaxies[1])


def test_catalog_custom_column_names(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies, ["a.png"])
    catalog = _write_catalog(tmp_path, ["name,path,morphology", "NGC 4565,images/a.png,edge_on"])
    dataset = read_catalog(catalog, file_column="path", id_column="name", class_column="morphology")
    assert dataset.ids.tolist() == ["NGC 4565"]
    assert dataset.labels.tolist() == [3]


def test_catalog_builds_schema_in_label_order(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies, ["a.png", "b.png", "c.png"])
    catalog = _write_catalog(
        tmp_path,
        [
            "objid,file,label,class_name",
            "1,images/a.png,1,spiral",
            "2,images/b.png,0,cigar",
            "3,images/c.png,1,spiral",
        ],
    )
    dataset = read_catalog(catalog)
    assert dataset.schema.names == ["cigar", "spiral"]
    assert dataset.labels.tolist() == [1, 0, 1]


def test_catalog_builds_schema_from_sorted_names(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies, ["a.png", "b.png", "c.png"])
    catalog = _write_catalog(
        tmp_path,
        ["objid,file,class_name", "1,images/a.png,spiral", "2,images/b.png,merger", "3,images/c.png,cigar"],
    )
    dataset = read_catalog(catalog)
    assert dataset.schema.names == ["cigar", "merger", "spiral"]
    assert dataset.labels.tolist() == [2, 1, 0]


def test_catalog_gz1_subset_keeps_gz1_labels(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies, ["a.png", "b.png"])
    catalog = _write_catalog(
        tmp_path, ["objid,file,label,class_name", "1,images/a.png,5,merger", "2,images/b.png,0,elliptical"]
    )
    dataset = read_catalog(catalog)
    assert dataset.schema is GZ1
    assert dataset.labels.tolist() == [5, 0]


def test_catalog_with_given_schema(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies, ["a.png", "b.png"])
    catalog = _write_catalog(
        tmp_path, ["objid,file,class_name", "1,images/a.png,smooth_cigar", "2,images/b.png,smooth_round"]
    )
    dataset = read_catalog(catalog, schema=GALAXY_MNIST)
    assert dataset.schema is GALAXY_MNIST
    assert dataset.labels.tolist() == [1, 0]


def _catalog_error(tmp_path: Path, galaxies, lines: list[str], **kwargs) -> str:
    _write_images(tmp_path, galaxies, ["a.png", "b.png", "c.png"])
    catalog = _write_catalog(tmp_path, lines)
    with pytest.raises(CatalogError) as caught:
        read_catalog(catalog, **kwargs)
    message = str(caught.value)
    assert str(catalog) in message
    return message


def test_catalog_missing_columns(tmp_path: Path, galaxies):
    message = _catalog_error(tmp_path, galaxies, ["objid,path,kind", "1,images/a.png,merger"])
    assert "['file', 'label or class_name']" in message
    assert "['objid', 'path', 'kind']" in message
    assert "file_column=" in message


def test_catalog_header_without_rows(tmp_path: Path, galaxies):
    message = _catalog_error(tmp_path, galaxies, ["objid,file,label,class_name"])
    assert "has a header but no rows" in message


def test_catalog_empty_file(tmp_path: Path):
    path = tmp_path / "catalog.csv"
    path.write_text("")
    with pytest.raises(CatalogError, match=r"catalog.csv is empty: expected a header line"):
        read_catalog(path)


def test_catalog_unknown_class_name(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        ["objid,file,class_name", "1,images/a.png,merger", "2,images/b.png,lenticular"],
        schema=GZ1,
    )
    assert "row 2 (line 3)" in message
    assert "unknown class name 'lenticular'" in message
    assert "'dont_know'" in message


def test_catalog_label_out_of_range(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path, galaxies, ["objid,file,label", "1,images/a.png,0", "2,images/b.png,6"], schema=GZ1
    )
    assert "row 2 (line 3)" in message
    assert "label 6 is out of range 0..5" in message


def test_catalog_label_gap_without_schema(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        ["objid,file,label,class_name", "1,images/a.png,0,bar", "2,images/b.png,2,ring"],
    )
    assert "row 2 (line 3)" in message
    assert "label 2 is out of range 0..1" in message
    assert "schema=" in message


@pytest.mark.parametrize("label", ["2.0", "two", "1_0", ""])
def test_catalog_label_not_integer(tmp_path: Path, galaxies, label):
    message = _catalog_error(
        tmp_path,
        galaxies,
        ["objid,file,label,class_name", "1,images/a.png,0,elliptical", f"2,images/b.png,{label},merger"],
    )
    assert "row 2 (line 3)" in message
    if label:
        assert f"label {label!r} is not an integer" in message
    else:
        assert "the 'label' cell is empty" in message


def test_catalog_label_disagrees_with_schema_name(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        ["objid,file,label,class_name", "1,images/a.png,0,elliptical", "2,images/b.png,1,merger"],
        schema=GZ1,
    )
    assert "row 2 (line 3)" in message
    assert "label 1 ('spiral_clockwise') disagrees with class_name 'merger'" in message


def test_catalog_gz1_names_with_other_order(tmp_path: Path, galaxies):
    names = GZ1.names
    lines = ["objid,file,label,class_name"]
    lines += [f"{i},images/a.png,{(i + 1) % 6},{name}" for i, name in enumerate(names)]
    message = _catalog_error(tmp_path, galaxies, lines)
    assert "row 1 (line 2)" in message
    assert "label 1 ('spiral_clockwise') disagrees with class_name 'elliptical'" in message


def test_catalog_label_name_pairs_conflict(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        [
            "objid,file,label,class_name",
            "1,images/a.png,0,bar",
            "2,images/b.png,1,ring",
            "3,images/c.png,0,ring",
        ],
    )
    assert "row 3 (line 4)" in message
    assert "label 0 disagrees with class_name 'ring'" in message
    assert "row 1 gives label 0 to class 'bar'" in message


def test_catalog_labels_without_names_need_schema(tmp_path: Path, galaxies):
    message = _catalog_error(tmp_path, galaxies, ["objid,file,label", "1,images/a.png,0"])
    assert "no 'class_name' column" in message
    assert "schema=" in message


def test_catalog_duplicated_id(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        ["objid,file,class_name", "7,images/a.png,merger", "8,images/b.png,merger", "7,images/c.png,edge_on"],
    )
    assert "row 3 (line 4)" in message
    assert "object id '7' repeats row 1" in message


def test_catalog_empty_id_cell(tmp_path: Path, galaxies):
    message = _catalog_error(tmp_path, galaxies, ["objid,file,class_name", " ,images/a.png,merger"])
    assert "row 1 (line 2)" in message
    assert "the 'objid' cell is empty" in message


def test_catalog_missing_image_file(tmp_path: Path, galaxies):
    message = _catalog_error(
        tmp_path,
        galaxies,
        [
            "objid,file,class_name",
            "1,images/a.png,merger",
            "2,images/lost.png,merger",
            "3,images/gone.png,edge_on",
        ],
    )
    assert "row 2 (line 3)" in message
    assert str(tmp_path / "images" / "lost.png") in message
    assert "2 of 3 image files are missing" in message
    assert "skip_missing=True" in message


def test_catalog_skip_missing_logs_names(tmp_path: Path, galaxies, caplog):
    _write_images(tmp_path, galaxies, ["a.png", "c.png"])
    catalog = _write_catalog(
        tmp_path,
        [
            "objid,file,class_name",
            "1,images/a.png,merger",
            "2,images/lost.png,merger",
            "3,images/c.png,edge_on",
        ],
    )
    with caplog.at_level("WARNING", logger="galaxalign.data.readers"):
        dataset = read_catalog(catalog, skip_missing=True)

    assert dataset.ids.tolist() == ["1", "3"]
    assert dataset.labels.tolist() == [5, 3]
    assert np.array_equal(dataset.load_image(1), galaxies[1])
    assert "skipped 1 of 3 rows" in caplog.text
    assert "lost.png" in caplog.text


def test_catalog_not_found(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError, match=r"catalog not found: .*nowhere.csv"):
        read_catalog(tmp_path / "nowhere.csv")


def test_catalog_real_gz1_sdss(shared_data: Path):
    dataset = read_catalog(shared_data / "gz1-sdss" / "catalog.csv")
    assert len(dataset) == 5652
    assert dataset.schema is GZ1
    assert dataset.class_counts() == GZ1_COUNTS
    assert dataset.ids[0] == "588848901537202306"
    assert dataset.load_image(0).shape == (423, 423, 3)


# Dispatch by name


def test_read_dataset_dispatches(tmp_path: Path, galaxies):
    _write_galaxy10(tmp_path / "Galaxy10_DECals.h5", galaxies[:2], [4, 8])
    _write_galaxymnist(tmp_path / "mnist", galaxies, [1], [2])
    _write_images(tmp_path / "survey", galaxies, ["a.png"])
    _write_catalog(tmp_path / "survey", ["objid,file,class_name", "1,images/a.png,merger"])

    assert read_dataset("galaxy10", tmp_path).labels.tolist() == [4, 8]
    assert read_dataset("GalaxyMNIST", tmp_path / "mnist").labels.tolist() == [1, 2]
    assert read_dataset("catalog", tmp_path / "survey").labels.tolist() == [5]
    assert read_dataset("catalog", tmp_path / "survey" / "catalog.csv", id_column="file").ids.tolist() == [
        "images/a.png"
    ]
    assert len(read_dataset("demo", None)) == 5652


def test_read_dataset_unknown_name_lists_choices():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'sdss'; choose one of \['galaxy10', 'galaxymnist', 'catalog', 'demo'\]",
    ):
        read_dataset("sdss", None)


def test_read_dataset_catalog_needs_path():
    with pytest.raises(ValueError, match="'catalog' dataset needs data_dir"):
        read_dataset("catalog", None)


def test_read_dataset_rejects_catalog_options_elsewhere(tmp_path: Path):
    with pytest.raises(ValueError, match=r"options \['skip_missing'\] apply only to the 'catalog' dataset"):
        read_dataset("galaxy10", tmp_path, skip_missing=True)


def test_read_dataset_default_folder_from_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GALAXALIGN_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "galaxymnist")):
        read_dataset("galaxymnist", None)


def test_schema_from_names_matches_built_schema(tmp_path: Path, galaxies):
    _write_images(tmp_path / "survey", galaxies, ["a.png"])
    catalog = _write_catalog(tmp_path / "survey", ["objid,file,label,class_name", "1,images/a.png,0,merger"])
    dataset = read_catalog(catalog)
    assert dataset.schema == schema_from_names("survey", ["merger"])


def test_galaxy10_non_uint8_pixels_rejected(tmp_path: Path, galaxies):
    _write_galaxy10(tmp_path / "Galaxy10_DECals.h5", galaxies[:2].astype(np.uint16), [0, 1])
    with pytest.raises(
        InvalidDatasetError, match="Galaxy10_DECals.h5: dataset 'images' contains uint16 pixels"
    ):
        read_galaxy10(tmp_path)


def test_catalog_not_utf8_names_file(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies[:1], ["a.png"])
    (tmp_path / "catalog.csv").write_bytes(
        "objid,file,class_name\n1,a.png,elliptical\u00e9\n".encode("latin-1")
    )
    with pytest.raises(CatalogError, match="catalog.csv is not valid UTF-8 text.*save the catalog as UTF-8"):
        read_catalog(tmp_path / "catalog.csv")


def test_catalog_semicolon_header_hint(tmp_path: Path, galaxies):
    message = _catalog_error(tmp_path, galaxies, ["objid;file;class_name", "1;a.png;elliptical"])
    assert "separated by ';'" in message


def test_catalog_spreadsheet_rounded_ids(tmp_path: Path, galaxies):
    lines = ["objid,file,class_name", "5.88849E+17,a.png,elliptical", "5.88849E+17,b.png,merger"]
    message = _catalog_error(tmp_path, galaxies, lines)
    assert "repeats row 1" in message
    assert "scientific notation" in message


def test_catalog_scientific_ids_warn(tmp_path: Path, galaxies):
    _write_images(tmp_path, galaxies[:2], ["a.png", "b.png"])
    lines = ["objid,file,class_name", "5.8E+17,images/a.png,elliptical", "5.9E+17,images/b.png,merger"]
    catalog = _write_catalog(tmp_path, lines)
    with pytest.warns(UserWarning, match="'5.8E\\+17' and 1 more are in scientific notation"):
        read_catalog(catalog)
