import json
from pathlib import Path

import pytest

from galaxalign import ablations


def test_variants_in_table_order():
    variants = ablations.ablation_variants(converged_epochs_stage1=20)
    assert list(variants) == [
        "full",
        "clip_no_symbols",
        "stage1_only",
        "stage2_only",
        "stage1_converged",
        "random_init",
    ]
    assert variants["full"].overrides == {}
    assert variants["clip_no_symbols"].overrides == {"symbols": "none"}
    assert variants["stage1_only"].overrides == {"stage": 1}
    assert variants["stage2_only"].overrides == {"epochs_stage1": 0}
    assert variants["stage1_converged"].overrides == {"epochs_stage1": 20}
    assert variants["random_init"].overrides == {"pretrained": None}


def test_select_variants_by_name():
    variants = ablations.ablation_variants(12)
    chosen = ablations.select_variants("stage1_only, full", variants)
    assert [v.name for v in chosen] == ["stage1_only", "full"]
    assert len(ablations.select_variants("all", variants)) == 6
    with pytest.raises(ValueError, match=r"unknown variants \['stage3'\]"):
        ablations.select_variants(["full", "stage3"], variants)


def finished_parameters(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["parameters"]


def test_finished_variant_is_skipped(finished_run: Path, tmp_path: Path):
    parameters = finished_parameters(finished_run)
    assert ablations.run_is_finished(finished_run, parameters)
    # A notebook path that does not exist proves that nothing was executed.
    trained = ablations.run_variant(tmp_path / "missing.ipynb", finished_run, parameters)
    assert trained is False


def test_finished_variant_with_other_parameters(finished_run: Path):
    parameters = {**finished_parameters(finished_run), "lr": 0.1}
    with pytest.raises(ValueError, match="finished run with other parameters .lr: 0.0005 there, 0.1 now"):
        ablations.run_is_finished(finished_run, parameters)


def test_unfinished_variant_is_not_skipped(tmp_path: Path):
    assert not ablations.run_is_finished(tmp_path, {"lr": 0.1})


def test_ablation_table_over_seeds():
    variants = ablations.select_variants("full,stage1_only", ablations.ablation_variants(12))
    scores = {
        ("full", 0): {"accuracy": 0.8, "map": 0.6},
        ("full", 1): {"accuracy": 0.6, "map": 0.6},
        ("stage1_only", 0): {"accuracy": 0.5, "map": 0.4},
    }
    table = ablations.ablation_table(scores, variants)
    assert table.index.tolist() == ["full", "stage1_only"]
    assert table.loc["full", "accuracy_mean"] == pytest.approx(0.7)
    assert table.loc["full", "accuracy_std"] == pytest.approx(0.1)
    assert table.loc["full", "map_std"] == 0.0
    assert table.loc["stage1_only", "n_seeds"] == 1


def test_random_init_matches_full_for_small_preset():
    assert ablations._starts_random({"model": "small"})
    assert not ablations._starts_random({"model": "vit-b-16"})
    assert ablations._starts_random({"model": "vit-b-16", "pretrained": None})


def test_train_notebook_found_in_repository():
    assert ablations.find_train_notebook().name == "train.ipynb"
    with pytest.raises(FileNotFoundError, match="pass train_notebook="):
        ablations.find_train_notebook("nowhere/train.ipynb")
