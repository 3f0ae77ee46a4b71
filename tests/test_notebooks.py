"""End-to-end: the notebooks run headless through papermill on real galaxies."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]


def run_notebook(name: str, tmp_path: Path, parameters: dict) -> Path:
    """Run notebooks/<name>.ipynb with papermill in ``tmp_path`` and return the executed copy there."""
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(REPOSITORY / "notebooks" / f"{name}.ipynb"),
        str(output),
        parameters=parameters,
        progress_bar=False,
        cwd=str(tmp_path),
    )
    return output


@pytest.mark.slow
def test_train_notebook_smoke_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GALAXALIGN_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    output = run_notebook(
        "train",
        tmp_path,
        {
            "stage": 2,
            "max_steps": 3,
            "epochs_stage1": 1,
            "epochs_stage2": 1,
            "run_dir": str(run_dir),
        },
    )

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "map_at_5", "map"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # The demo split puts 15% of each class in the test part.
    assert metrics["n_test"] == 849
    for name in ("config.json", "split.json", "schema.json", "symbols.png", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "checkpoints" / "stage2" / "epoch_001.pt").exists()

    notebook = nbformat.read(output, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    data_types = {key for o in outputs for key in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in data_types
    assert "image/png" in data_types
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("map_at_5" in table and "macro_f1" in table for table in tables)


def notebook_outputs(path: Path) -> list[dict]:
    notebook = nbformat.read(path, as_version=4)
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.slow
def test_evaluate_notebook_writes_tables(finished_run: Path, tmp_path: Path):
    output = run_notebook(
        "evaluate",
        tmp_path,
        {"run_dir": str(finished_run), "seeds": "0,1", "knn_k": 3, "gallery_neighbours": 2},
    )

    folder = finished_run / "evaluation" / "test"
    for name in ("classification.csv", "classification.md", "search.csv", "search.md"):
        assert (folder / name).is_file(), name
    for name in ("confusion.png", "gallery.png"):
        with Image.open(folder / name) as image:
            assert image.width > 200, name
    outputs = notebook_outputs(output)
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("linear probe" in table and "(0.000)" in table for table in markdown)
    assert any("image → image" in table for table in markdown)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2


@pytest.mark.slow
def test_ablations_notebook_runs_all_variants(small_catalog: Path, tmp_path: Path):
    parent = tmp_path / "ablations"
    output = run_notebook(
        "ablations",
        tmp_path,
        {
            "parent_dir": str(parent),
            "dataset": "catalog",
            "data_dir": str(small_catalog),
            "epochs_stage1": 1,
            "epochs_stage2": 1,
            "converged_epochs_stage1": 2,
            "batch_size": 16,
            "image_size": 32,
            "max_steps": 1,
            "device": "cpu",
            "train_notebook": str(REPOSITORY / "notebooks" / "train.ipynb"),
        },
    )

    variants = ["full", "clip_no_symbols", "stage1_only", "stage2_only", "stage1_converged", "random_init"]
    for variant in variants:
        assert (parent / f"{variant}-seed0" / "metrics.json").is_file(), variant
        assert (parent / f"{variant}-seed0" / "train.ipynb").is_file(), variant
    table = pd.read_csv(parent / "ablations.csv", index_col="variant")
    assert table.index.tolist() == variants
    assert table["accuracy_mean"].between(0, 1).all()
    stage1 = json.loads((parent / "stage1_only-seed0" / "metrics.json").read_text())
    assert table.loc["stage1_only", "accuracy_mean"] == pytest.approx(stage1["accuracy"])
    assert not (parent / "clip_no_symbols-seed0" / "symbols.png").exists()
    assert sum("image/png" in o.get("data", {}) for o in notebook_outputs(output)) == 1


@pytest.mark.slow
def test_explore_notebook_writes_maps_and_grid(finished_run: Path, tmp_path: Path):
    output = run_notebook(
        "explore",
        tmp_path,
        {"run_dir": str(finished_run), "split": "all", "k": 3, "grid_size": 5, "device": "cpu"},
    )

    folder = finished_run / "explore" / "all"
    for method in ("tsne", "umap", "pca"):
        frame = pd.read_csv(folder / f"map_{method}.csv", dtype={"object_id": str})
        assert len(frame) == 48, method
        assert (folder / f"map_{method}.html").is_file(), method
    # The three pages show thumbnails on hover from one sheet: 48 thumbnails of 32 px in 7 x 7 cells.
    sheets = list(folder.glob("map_thumbnails-*.jpg"))
    assert len(sheets) == 1
    assert Image.open(sheets[0]).size == (224, 224)
    assert all(sheets[0].name in (folder / f"map_{m}.html").read_text() for m in ("tsne", "umap", "pca"))
    grid = Image.open(folder / "pca_grid.png")
    # 5 x 5 cells of 32 px with 1 px between them.
    assert grid.size == (164, 164)
    for name in ("gallery.png", "search_symbol.png", "search_text.png"):
        assert Image.open(folder / name).size[0] > 100, name

    notebook = nbformat.read(output, as_version=4)
    outputs = [item for cell in notebook.cells for item in cell.get("outputs", [])]
    kinds = [kind for item in outputs for kind in item.get("data", {})]
    assert kinds.count("application/vnd.plotly.v1+json") == 3
    assert kinds.count("application/vnd.jupyter.widget-view+json") >= 2
    assert [item for item in outputs if item["output_type"] == "error"] == []
