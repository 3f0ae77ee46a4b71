import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.data.images import UnreadableImageError
from galaxalign.query import QueryEncoder
from galaxalign.runs import embed_run, load_run, load_run_images
from galaxalign.search import NeighbourIndex
from galaxalign.symbols import draw_symbol


@pytest.fixture(scope="module")
def encoder_and_set(finished_run: Path):
    run = load_run(finished_run, device="cpu")
    test_set = embed_run(run, load_run_images(run), "test")
    return QueryEncoder(run, symbol_draws=32), test_set


def catalog_file(catalog: Path, object_id: str) -> Path:
    with catalog.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["objid"] == object_id:
                return catalog.parent / row["file"]
    raise AssertionError(f"{object_id} not in {catalog}")


def test_image_file_query_matches_stored_embedding(encoder_and_set, small_catalog: Path):
    encoder, test_set = encoder_and_set
    object_id = str(test_set.ids[0])
    vector = encoder.image_file(catalog_file(small_catalog, object_id))
    assert np.allclose(vector, test_set.images[0], atol=1e-5)

    index = NeighbourIndex.from_embedding_set(test_set)
    result = index.search(vector, k=1)
    assert str(result.ids[0, 0]) == object_id


def test_class_symbol_query_matches_stored_symbols(encoder_and_set):
    encoder, test_set = encoder_and_set
    vector = encoder.symbol("edge_on", seed=0)
    label = test_set.class_names.index("edge_on")
    assert np.allclose(vector, test_set.symbols()[label], atol=1e-5)


def test_text_query_matches_class_prompt(encoder_and_set):
    encoder, test_set = encoder_and_set
    prompt = encoder.run.schema.prompts[3]
    assert np.allclose(encoder.text(prompt), test_set.text[3], atol=1e-5)


def test_drawing_query_is_unit_vector(encoder_and_set, tmp_path: Path):
    encoder, test_set = encoder_and_set
    path = tmp_path / "my_merger.png"
    Image.fromarray(draw_symbol("merger", 48)).save(path)
    vector = encoder.drawing(path)
    assert vector.shape == (test_set.images.shape[1],)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_query_rejects_bad_inputs(encoder_and_set, tmp_path: Path):
    encoder, _ = encoder_and_set
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not pixels")
    with pytest.raises(UnreadableImageError, match="cannot use .*notes.jpg as a query"):
        encoder.image_file(not_an_image)
    with pytest.raises(ValueError, match="unknown class 'barred'"):
        encoder.symbol("barred")
    with pytest.raises(ValueError, match="must be a non-empty string"):
        encoder.text("  ")


def test_long_text_query_warns(encoder_and_set, caplog: pytest.LogCaptureFixture):
    encoder, _ = encoder_and_set
    encoder.text("A picture of a merger " * 20)
    assert "more than the 30 tokens" in caplog.text
