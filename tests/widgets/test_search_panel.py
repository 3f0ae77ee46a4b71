"""The search panel on a real finished run: symbol, text and upload queries, and uploads that are no image."""

import datetime
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.explore import Exploration, load_exploration
from galaxalign.query import QueryEncoder
from galaxalign_widgets import SearchPanel


@pytest.fixture(scope="module")
def run_exploration(finished_run: Path) -> Exploration:
    return load_exploration(finished_run, split="all", device="cpu")


@pytest.fixture(scope="module")
def encoder(run_exploration: Exploration) -> QueryEncoder:
    return QueryEncoder(run_exploration.run)


MODIFIED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def result_ids(panel: SearchPanel) -> list[str]:
    return [card.caption.value.split("<br>")[0].split(". ")[1] for card in panel.result_cards.children]


def upload(panel: SearchPanel, name: str, content: bytes) -> None:
    panel.upload.value = (
        {
            "name": name,
            "type": "",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": MODIFIED,
        },
    )
    panel.upload_button.click()


def test_initial_symbol_search(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, k=4)
    first = run_exploration.class_names[0]
    expected = run_exploration.search(encoder.symbol(first), k=4).ids[0]
    assert result_ids(panel) == list(expected)
    assert panel.query_caption.value == f"symbol of {first}"


def test_text_search_results(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, k=3, initial=None)
    panel.text.value = "A picture of a merger"
    expected = run_exploration.search(encoder.text("A picture of a merger"), k=3).ids[0]
    assert result_ids(panel) == list(expected)


def test_uploaded_galaxy_finds_itself(
    run_exploration: Exploration, encoder: QueryEncoder, small_catalog: Path
):
    panel = SearchPanel(run_exploration, encoder, k=3, initial=None)
    image_path = sorted((small_catalog.parent / "images").iterdir())[0]
    upload(panel, image_path.name, image_path.read_bytes())
    assert "galaxalign-status" in panel.status._dom_classes
    assert result_ids(panel)[0] == image_path.stem
    assert panel.result.scores[0, 0] > 0.999


def test_text_file_upload_keeps_panel_usable(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, k=3, initial=None)
    upload(panel, "notes.txt", b"not an image at all")
    assert "cannot search by notes.txt" in panel.status.value
    assert "Upload a JPEG, PNG or TIFF file" in panel.status.value
    assert "/tmp" not in panel.status.value
    panel.search_text("A picture of an edge-on disk galaxy")
    assert len(panel.result_cards.children) == 3
    assert "nearest of 48 galaxies" in panel.status.value


def test_symbol_drawing_upload(run_exploration: Exploration, encoder: QueryEncoder, tmp_path: Path):
    panel = SearchPanel(run_exploration, encoder, k=2, initial=None)
    drawing = np.zeros((40, 40), dtype=np.uint8)
    drawing[15:25, 5:35] = 255
    buffer = io.BytesIO()
    Image.fromarray(drawing).save(buffer, format="PNG")
    panel.upload_kind.value = "symbol drawing"
    upload(panel, "cigar.png", buffer.getvalue())
    path = tmp_path / "cigar.png"
    path.write_bytes(buffer.getvalue())
    expected = run_exploration.search(encoder.drawing(path), k=2).ids[0]
    assert result_ids(panel) == list(expected)
    assert panel.query_caption.value == "symbol drawing cigar.png"


def test_upload_button_without_file(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, initial=None)
    panel.upload_button.click()
    assert "choose a file" in panel.status.value


def test_panel_needs_a_run(run_exploration: Exploration):
    from synthetic import synthetic_exploration

    with pytest.raises(ValueError, match="needs the run's model"):
        SearchPanel(synthetic_exploration())


def test_long_upload_name_is_searched(
    run_exploration: Exploration, encoder: QueryEncoder, small_catalog: Path
):
    panel = SearchPanel(run_exploration, encoder, k=2, initial=None)
    image_path = sorted((small_catalog.parent / "images").iterdir())[0]
    for name in ("a" * 300 + ".jpeg", "星系" * 60 + ".jpeg", "", "..", "bad\x00name.jpeg"):
        upload(panel, name, image_path.read_bytes())
        assert result_ids(panel)[0] == image_path.stem, repr(name)


def test_empty_upload_says_empty(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, initial=None)
    upload(panel, "empty.png", b"")
    assert "cannot search by empty.png: the file is empty" in panel.status.value


def test_k_slider_reruns_last_search(run_exploration: Exploration, encoder: QueryEncoder):
    panel = SearchPanel(run_exploration, encoder, k=4)
    panel.k_slider.value = 7
    first = run_exploration.class_names[0]
    assert result_ids(panel) == list(run_exploration.search(encoder.symbol(first), k=7).ids[0])
