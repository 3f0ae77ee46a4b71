"""The bundled demo set: 5,652 Galaxy Zoo 1 SDSS galaxies as 96x96 JPEG cutouts."""

from __future__ import annotations

import logging
from pathlib import Path

from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.download import DatasetNotFoundError
from galaxalign.data.readers import read_catalog
from galaxalign.schema import GZ1

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def load_demo() -> GalaxyDataset:
    """Read the demo set that ships with the package, with the GZ1 schema.

    ``DEMO_DIR/catalog.csv`` has the columns objid, file, label and class_name,
    and ``DEMO_DIR/images`` contains one 96x96 JPEG per galaxy: the central half
    of each SDSS cutout, resized. ``DEMO_DIR/README.md`` gives the credits.
    """
    catalog = DEMO_DIR / "catalog.csv"
    if not catalog.is_file():
        raise DatasetNotFoundError(
            f"the demo catalog {catalog} is missing, so the package was installed without its "
            "data files; reinstall galaxalign from a wheel or a full source checkout"
        )
    return read_catalog(catalog, schema=GZ1)
