import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galaxalign.embed import load_embeddings
from galaxalign.evaluate import evaluate_run
from galaxalign.runs import embed_run, load_run, load_run_images
from galaxalign.train.rundir import RunDirectoryError


def test_load_run_restores_stage2_model(finished_run: Path):
    run = load_run(finished_run, device="cpu")
    assert run.stage == 2
    assert run.checkpoint.name == "epoch_001.pt"
    assert run.model.has_symbol_tower
    assert run.schema.names[0] == "elliptical"
    assert run.config.image_size == 32


def test_embed_run_matches_training_embeddings(finished_run: Path):
    run = load_run(finished_run, device="cpu")
    embedded = embed_run(run, load_run_images(run), "test")
    written_by_trainer = load_embeddings(finished_run / "embeddings" / "test.npz")
    assert embedded.ids.tolist() == written_by_trainer["ids"].tolist()
    assert embedded.labels.tolist() == written_by_trainer["labels"].tolist()
    assert np.allclose(np.asarray(embedded.images), written_by_trainer["embeddings"], atol=1e-5)
    assert np.allclose(embedded.text, written_by_trainer["text_embeddings"], atol=1e-5)
    assert embedded.symbol_draws.shape == (6, 32, embedded.text.shape[1])


def test_evaluate_run_agrees_with_training_metrics(finished_run: Path):
    evaluation = evaluate_run(finished_run, seeds=[0, 1], k=5, knn_k=3, device="cpu")
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert evaluation.classification.loc["text", "accuracy_mean"] == pytest.approx(metrics["accuracy"])
    assert evaluation.classification.loc["text", "macro_f1_mean"] == pytest.approx(metrics["macro_f1"])
    assert evaluation.search.loc["image → image", "map_mean"] == pytest.approx(metrics["map"])
    assert evaluation.search.loc["image → image", "map_at_5_mean"] == pytest.approx(metrics["map_at_5"])

    folder = finished_run / "evaluation" / "test"
    saved = pd.read_csv(folder / "classification.csv", index_col="method")
    assert saved.index.tolist() == ["text", "symbol", "text + symbol", "linear probe", "kNN"]
    assert saved["n_seeds"].tolist() == [2] * 5
    assert "| kNN" in (folder / "classification.md").read_text()
    assert pd.read_csv(folder / "search.csv", index_col="method").index.tolist() == [
        "image → image",
        "symbol → image",
        "text → image",
    ]
    assert len(evaluation.confusions()) == 5
    assert evaluation.per_class("kNN").loc["elliptical", "support"] == 4


def test_evaluate_on_catalog_with_same_classes(finished_run: Path, small_catalog: Path):
    evaluation = evaluate_run(finished_run, dataset="catalog", data_dir=str(small_catalog), device="cpu")
    assert evaluation.split == "all"
    assert len(evaluation.embeddings) == 48
    assert evaluation.embeddings.path.name.endswith("-all")
    assert evaluation.embeddings.path.name.startswith("small_catalog")
    assert (finished_run / "evaluation" / evaluation.embeddings.path.name / "search.md").is_file()


@pytest.mark.filterwarnings("ignore:no built-in symbol recipe")
def test_evaluate_rejects_catalog_with_other_classes(finished_run: Path, small_catalog: Path, tmp_path: Path):
    (tmp_path / "images").mkdir()
    with small_catalog.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:4]
    for row, name in zip(rows, ("barred", "barred", "unbarred", "unbarred"), strict=True):
        shutil.copy(small_catalog.parent / row["file"], tmp_path / row["file"])
        row["class_name"] = name
        row["label"] = 0 if name == "barred" else 1
    with (tmp_path / "catalog.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"has the classes \['barred', 'unbarred'\] but run"):
        evaluate_run(finished_run, dataset="catalog", data_dir=str(tmp_path / "catalog.csv"), device="cpu")


def test_load_run_rejects_folder_without_run(tmp_path: Path):
    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_run(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(RunDirectoryError, match="no config.json"):
        load_run(tmp_path)


def test_load_run_rejects_unfinished_stage(finished_run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("stage2", "embeddings", "evaluation"))
    checkpoint = copy / "checkpoints" / "stage1" / "epoch_001.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["complete"] = False
    torch.save(state, checkpoint)
    with pytest.raises(RunDirectoryError, match="stage 1 has not finished .*train.ipynb again"):
        load_run(copy)
    checkpoint.unlink()
    with pytest.raises(RunDirectoryError, match="no checkpoint of a finished stage"):
        load_run(copy)


def test_evaluate_rejects_k_beyond_catalog(finished_run: Path):
    with pytest.raises(ValueError, match="k=20 is larger than the 11 other galaxies"):
        evaluate_run(finished_run, k=20, device="cpu")


def test_load_run_rejects_edited_config(finished_run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("embeddings", "evaluation"))
    config = json.loads((copy / "config.json").read_text())
    config["parameters"]["image_size"] = 96
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirectoryError, match="image_size: 96 in config.json, 32 in the checkpoint"):
        load_run(copy)


def test_load_run_rejects_edited_schema(finished_run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("embeddings", "evaluation"))
    schema = json.loads((copy / "schema.json").read_text())
    (copy / "schema.json").write_text(json.dumps(schema).replace("elliptical", "smooth"))
    with pytest.raises(RunDirectoryError, match="schema.json does not match the classes or prompts"):
        load_run(copy)
    (copy / "schema.json").write_text("{")
    with pytest.raises(RunDirectoryError, match="cannot read .*restore the files"):
        load_run(copy)


def test_evaluate_checks_parameters_before_work(finished_run: Path):
    with pytest.raises(ValueError, match=r"knn_k must be between 1 and 24 \(the training galaxies\)"):
        evaluate_run(finished_run, knn_k=100, device="cpu")
    with pytest.raises(ValueError, match="symbol_draws must be between 1 and 32"):
        evaluate_run(finished_run, symbol_draws=64, device="cpu")
