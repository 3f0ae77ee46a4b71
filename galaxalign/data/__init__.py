"""Galaxy data: readers, the decoded-image cache, splits and augmentation."""

from galaxalign.data.cache import CachedImages, cache_images, default_cache_dir
from galaxalign.data.dataset import GalaxyDataset, ImageSource
from galaxalign.data.demo import DEMO_DIR, load_demo
from galaxalign.data.download import (
    GALAXY10_DECALS_FILE,
    GALAXY_MNIST_FILES,
    ChecksumMismatchError,
    DatasetNotFoundError,
    RemoteFile,
    download_file,
)
from galaxalign.data.images import (
    ConcatImages,
    FileImages,
    H5Images,
    UnreadableImageError,
    center_crop,
    resize,
    to_rgb_uint8,
)
from galaxalign.data.readers import (
    DATASET_NAMES,
    CatalogError,
    InvalidDatasetError,
    default_data_dir,
    read_catalog,
    read_dataset,
    read_galaxy10,
    read_galaxymnist,
)
from galaxalign.data.split import Split, SplitIndices, stratified_split

__all__ = [
    "DATASET_NAMES",
    "DEMO_DIR",
    "GALAXY10_DECALS_FILE",
    "GALAXY_MNIST_FILES",
    "CachedImages",
    "CatalogError",
    "ChecksumMismatchError",
    "ConcatImages",
    "DatasetNotFoundError",
    "FileImages",
    "GalaxyDataset",
    "H5Images",
    "ImageSource",
    "InvalidDatasetError",
    "RemoteFile",
    "Split",
    "SplitIndices",
    "UnreadableImageError",
    "cache_images",
    "center_crop",
    "default_cache_dir",
    "default_data_dir",
    "download_file",
    "load_demo",
    "read_catalog",
    "read_dataset",
    "read_galaxy10",
    "read_galaxymnist",
    "resize",
    "stratified_split",
    "to_rgb_uint8",
]
