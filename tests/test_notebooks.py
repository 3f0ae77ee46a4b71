"""End-to-end: the training notebook runs headless through papermill on the bundled demo set."""

import json
from pathlib import Path

import nbformat
import papermill
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_notebook_smoke_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GALAXALIGN_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    output = tmp_path / "train.ipynb"
    papermill.execute_notebook(
        str(REPOSITORY / "notebooks" / "train.ipynb"),
        str(output),
        parameters={
            "stage": 2,
            "max_steps": 3,
            "epochs_stage1": 1,
            "epochs_stage2": 1,
            "run_dir": str(run_dir),
        },
        progress_bar=False,
        cwd=str(tmp_path),
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
