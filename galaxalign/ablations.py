"""The ablation study: train the method's variants through train.ipynb and tabulate their test scores."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import papermill
from matplotlib.figure import Figure

from galaxalign.evaluate import IMAGE_QUERY, TEXT, evaluate_run, parse_seeds, save_table, seed_summary
from galaxalign.models import resolve_model_name
from galaxalign.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table: train.ipynb parameters that differ from the full method."""

    name: str
    description: str
    overrides: Mapping[str, Any]


def ablation_variants(converged_epochs_stage1: int) -> dict[str, Variant]:
    """Return the variants in table order, the full method first.

    "stage 1 to convergence" trains stage 1 for ``converged_epochs_stage1``
    epochs instead of the short warm-up, then stage 2 as usual.
    """
    variants = [
        Variant("full", "full method: warm-up, then image, symbol and text towers together", {}),
        Variant("clip_no_symbols", "text–image CLIP without symbols", {"symbols": "none"}),
        Variant("stage1_only", "stage 1 only (warm-up)", {"stage": 1}),
        Variant("stage2_only", "stage 2 only (no warm-up)", {"epochs_stage1": 0}),
        Variant(
            "stage1_converged",
            f"stage 1 to convergence ({converged_epochs_stage1} epochs), then stage 2",
            {"epochs_stage1": converged_epochs_stage1},
        ),
        Variant("random_init", "both stages from random initialisation", {"pretrained": None}),
    ]
    return {variant.name: variant for variant in variants}


def select_variants(names: str | Sequence[str], variants: Mapping[str, Variant]) -> list[Variant]:
    """Pick variants by name: "all", a comma-separated string, or a list of names."""
    if isinstance(names, str):
        names = (
            list(variants) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
        )
    unknown = [name for name in names if name not in variants]
    if unknown or not names:
        raise ValueError(f"unknown variants {unknown}; choose from {list(variants)} or 'all'")
    return [variants[name] for name in names]


def find_train_notebook(path: str | Path | None = None) -> Path:
    """Locate train.ipynb: ``path`` when given, else beside the working folder or in the repository."""
    if path is not None:
        candidates = [Path(path)]
    else:
        repository = Path(__file__).resolve().parents[1]
        candidates = [
            Path("train.ipynb"),
            Path("notebooks/train.ipynb"),
            repository / "notebooks/train.ipynb",
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"train.ipynb not found (looked at {', '.join(str(c) for c in candidates)}); "
        "pass train_notebook='path/to/notebooks/train.ipynb'"
    )


def run_is_finished(run_dir: Path, parameters: Mapping[str, Any]) -> bool:
    """Return True when ``run_dir`` contains a finished run with these training parameters.

    A finished run with other parameters raises ``ValueError`` instead, so an
    old result is never reported under a new setting.
    """
    config_path = run_dir / "config.json"
    if not (run_dir / "metrics.json").is_file() or not config_path.is_file():
        return False
    stored = json.loads(config_path.read_text())["parameters"]
    requested = TrainConfig(**{k: v for k, v in parameters.items() if k in TrainConfig.__dataclass_fields__})
    differences = requested.differences(stored)
    if differences:
        listed = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in differences.items())
        raise ValueError(
            f"{run_dir} contains a finished run with other parameters ({listed}). "
            "Choose another parent_dir, or delete that folder to train the variant again"
        )
    return True


def run_variant(
    train_notebook: Path, run_dir: Path, parameters: Mapping[str, Any], kernel_name: str | None = None
) -> bool:
    """Train one variant by executing train.ipynb into ``run_dir``; return False when it was already done.

    The executed notebook is kept as ``run_dir/train.ipynb``.
    """
    if run_is_finished(run_dir, parameters):
        logger.info("skipping %s: it finished earlier", run_dir)
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    output = run_dir / "train.ipynb"
    if output.exists():
        # An interrupted attempt left its executed notebook; keep it beside the new one.
        output.replace(run_dir / "train.interrupted.ipynb")
    logger.info("training %s", run_dir)
    papermill.execute_notebook(
        str(train_notebook),
        str(output),
        parameters={**parameters, "run_dir": str(run_dir)},
        kernel_name=kernel_name,
        progress_bar=False,
    )
    return True


def variant_scores(run_dir: Path, split: str = "test", k: int = 5) -> dict[str, float]:
    """Evaluate one finished variant: zero-shot text classification and image → image search scores."""
    evaluation = evaluate_run(run_dir, split=split, k=k, device="cpu")
    text = evaluation.classification.loc[TEXT]
    image = evaluation.search.loc[IMAGE_QUERY]
    return {
        "accuracy": float(text["accuracy_mean"]),
        "macro_f1": float(text["macro_f1_mean"]),
        f"map_at_{k}": float(image[f"map_at_{k}_mean"]),
        "map": float(image["map_mean"]),
    }


def ablation_table(
    scores: Mapping[tuple[str, int], Mapping[str, float]], variants: Sequence[Variant]
) -> pd.DataFrame:
    """Average the scores of each variant over its training seeds: ``<metric>_mean``, ``_std`` columns.

    ``scores`` maps (variant name, seed) to that run's scores. The standard
    deviation is over training seeds (ddof 0).
    """
    rows = []
    for variant in variants:
        runs = [values for (name, _), values in scores.items() if name == variant.name]
        if not runs:
            continue
        row = {"variant": variant.name, "description": variant.description}
        rows.append({**row, **seed_summary(runs, list(runs[0]))})
    return pd.DataFrame(rows).set_index("variant")


def ablation_bar_chart(table: pd.DataFrame) -> Figure:
    """Draw grouped bars: one group per metric, one bar per variant, error bars the std over seeds."""
    metrics = [column.removesuffix("_mean") for column in table.columns if column.endswith("_mean")]
    positions = np.arange(len(metrics))
    width = 0.8 / max(len(table), 1)
    figure, axis = plt.subplots(figsize=(1.8 * len(metrics) + 3, 4))
    for i, (variant, row) in enumerate(table.iterrows()):
        means = [row[f"{m}_mean"] for m in metrics]
        stds = [row[f"{m}_std"] for m in metrics]
        axis.bar(positions + i * width, means, width, yerr=stds, capsize=2, label=variant)
    axis.set_xticks(positions + width * (len(table) - 1) / 2, [m.replace("_", " ") for m in metrics])
    axis.set_ylim(0, 1)
    axis.set_ylabel("score on the test split")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    plt.close(figure)
    return figure


def run_ablations(
    parent_dir: str | Path,
    base_parameters: Mapping[str, Any],
    variants: str | Sequence[str] = "all",
    seeds: Sequence[int] | str | int = (0,),
    converged_epochs_stage1: int = 24,
    train_notebook: str | Path | None = None,
    split: str = "test",
    k: int = 5,
) -> pd.DataFrame:
    """Train every variant and seed into ``parent_dir/<variant>-seed<seed>``, evaluate, and return the table.

    ``base_parameters`` are train.ipynb parameters shared by all variants
    (budget, dataset, model); each variant overrides a few of them. Variants
    that finished earlier with the same parameters are not trained again.
    The table is also written to ``parent_dir/ablations.csv`` and ``.md``.
    """
    parent = Path(parent_dir)
    notebook = find_train_notebook(train_notebook)
    chosen = select_variants(variants, ablation_variants(converged_epochs_stage1))
    seed_list = parse_seeds(seeds)
    if any(v.name == "random_init" for v in chosen) and _starts_random(base_parameters):
        logger.warning(
            "random_init trains exactly like full here, because model %r with pretrained=%r starts from "
            "random weights anyway",
            base_parameters.get("model", "small"),
            base_parameters.get("pretrained", "default"),
        )
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for variant in chosen:
        for seed in seed_list:
            run_dir = parent / f"{variant.name}-seed{seed}"
            parameters = {**base_parameters, **variant.overrides, "seed": seed}
            run_variant(notebook, run_dir, parameters)
            scores[(variant.name, seed)] = variant_scores(run_dir, split, k)
            logger.info("%s seed %d: %s", variant.name, seed, scores[(variant.name, seed)])
    table = ablation_table(scores, chosen)
    save_table(table.drop(columns="description"), parent / "ablations")
    return table


def _starts_random(parameters: Mapping[str, Any]) -> bool:
    pretrained = parameters.get("pretrained", "default")
    if pretrained == "default":
        pretrained = resolve_model_name(parameters.get("model", "small"))[1]
    return pretrained in (None, "", "none", "random")
