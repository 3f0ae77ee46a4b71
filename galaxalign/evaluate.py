"""Evaluation from embeddings: the classification table and the similarity-search table of a run."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from galaxalign.classify import zero_shot_scores
from galaxalign.embed import EmbeddingSet
from galaxalign.metrics import (
    average_precision_at_k,
    classification_metrics,
    normalize_rows,
    retrieval_metrics,
)
from galaxalign.runs import SYMBOL_VARIANTS, FinishedRun, RunImages, embed_run, load_run, load_run_images
from galaxalign.search import NeighbourIndex, SearchResult
from galaxalign.viz import retrieval_gallery

logger = logging.getLogger(__name__)

TEXT, SYMBOL, COMBINED, LINEAR_PROBE, KNN = "text", "symbol", "text + symbol", "linear probe", "kNN"
CLASSIFIERS = (TEXT, SYMBOL, COMBINED, LINEAR_PROBE, KNN)
IMAGE_QUERY, SYMBOL_QUERY, TEXT_QUERY = "image → image", "symbol → image", "text → image"


@dataclass
class MethodResult:
    """The scores of one method with one seed, and for a classifier its predicted class indices."""

    method: str
    seed: int
    metrics: dict[str, Any]
    predictions: np.ndarray | None = field(default=None, repr=False)


def unit_images(embeddings: EmbeddingSet) -> np.ndarray:
    """Return the image embeddings scaled to unit length, naming the galaxy of a NaN, inf or zero vector."""
    try:
        return normalize_rows(np.asarray(embeddings.images), f"image embeddings in {embeddings.path}")
    except ValueError as error:
        row = re.search(r"row (\d+)", str(error))
        if row is None:
            raise
        object_id = embeddings.ids[int(row.group(1))]
        raise ValueError(
            f"{error} (object id {object_id}). If the image is fine, the embeddings are damaged: "
            f"delete {embeddings.path} and evaluate again to recompute them"
        ) from error


def check_same_classes(evaluation: EmbeddingSet, reference: EmbeddingSet) -> None:
    """Raise ``ValueError`` when two embedding sets label galaxies with different class lists."""
    if list(evaluation.class_names) != list(reference.class_names):
        raise ValueError(
            f"the embeddings in {evaluation.path} have the classes {evaluation.class_names} but those in "
            f"{reference.path} have {reference.class_names}; embed both with the same run and class schema"
        )


def classify(
    evaluation: EmbeddingSet,
    train: EmbeddingSet | None = None,
    seeds: Sequence[int] = (0,),
    symbol_draws: int = 8,
    knn_k: int = 10,
    probe_c: float = 1.0,
) -> list[MethodResult]:
    """Classify the galaxies of ``evaluation`` by every method and seed.

    - text: the class whose prompt embedding is most similar (zero-shot);
    - symbol: the class whose mean symbol embedding, over ``symbol_draws``
      drawings picked with the seed, is most similar;
    - text + symbol: the mean of the two cosine similarities;
    - linear probe: logistic regression (inverse regularisation ``probe_c``)
      on the standardised image embeddings of ``train``;
    - kNN: majority vote of the ``knn_k`` most similar ``train`` galaxies by
      cosine similarity, ties going to the lower class index.

    Only the symbol drawings depend on the seed: the other methods give the
    same result for every seed (the probe's L-BFGS fit is deterministic), so
    their spread is 0. The spread over
    training seeds comes from evaluating several runs. The probe and kNN are
    left out when ``train`` is None. Runs trained without symbols have no
    symbol methods.
    """
    seeds = parse_seeds(seeds)
    if train is not None:
        check_same_classes(evaluation, train)
    names = evaluation.class_names
    images = unit_images(evaluation)
    labels = evaluation.labels
    text_scores = zero_shot_scores(images, evaluation.text)

    # Only the symbol drawings depend on the seed, so the other classifiers run once.
    fixed = {TEXT: text_scores.argmax(axis=1)}
    if train is not None:
        train_images = unit_images(train)
        fixed[LINEAR_PROBE] = _linear_probe(train_images, train, images, seeds[0], probe_c)
        fixed[KNN] = _nearest_neighbours_vote(train_images, train, images, knn_k)
    fixed_metrics = {method: classification_metrics(labels, p, names) for method, p in fixed.items()}

    results = []
    for seed in seeds:
        by_seed = {}
        if evaluation.symbol_draws is not None:
            symbol_scores = zero_shot_scores(images, evaluation.symbols(symbol_draws, seed))
            by_seed[SYMBOL] = symbol_scores.argmax(axis=1)
            by_seed[COMBINED] = (text_scores + symbol_scores).argmax(axis=1)
        for method in CLASSIFIERS:
            if method in fixed:
                results.append(MethodResult(method, seed, fixed_metrics[method], fixed[method]))
            elif method in by_seed:
                metrics = classification_metrics(labels, by_seed[method], names)
                results.append(MethodResult(method, seed, metrics, by_seed[method]))
    return results


def _linear_probe(
    train_images: np.ndarray, train: EmbeddingSet, images: np.ndarray, seed: int, probe_c: float
) -> np.ndarray:
    if np.unique(train.labels).size < 2:
        raise ValueError(f"the linear probe needs two classes in {train.path}, found one")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=probe_c, max_iter=2000, random_state=seed))
    probe.fit(train_images, train.labels)
    return probe.predict(images)


def _nearest_neighbours_vote(
    train_images: np.ndarray, train: EmbeddingSet, images: np.ndarray, k: int
) -> np.ndarray:
    if not 1 <= k <= len(train):
        raise ValueError(f"knn_k must be between 1 and {len(train)} (the galaxies in {train.path}), got {k}")
    # On unit vectors, Euclidean distance ranks neighbours exactly as cosine similarity does.
    vote = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
    vote.fit(train_images, train.labels)
    return vote.predict(images)


def search(
    evaluation: EmbeddingSet, k: int = 5, seeds: Sequence[int] = (0,), symbol_draws: int = 8
) -> list[MethodResult]:
    """Score similarity search over the galaxies of ``evaluation`` by query kind.

    - image → image: each galaxy queries all the others (itself excluded),
      relevant means the same class; see :func:`galaxalign.metrics.retrieval_metrics`.
    - text → image and symbol → image: each class prompt or mean symbol
      queries all galaxies, relevant means that class, averaged over the
      classes present.

    Each result's ``metrics`` has ``map_at_{k}`` and ``map``. Only the symbol
    query depends on the seed (through the drawings picked).
    """
    seeds = parse_seeds(seeds)
    images = unit_images(evaluation)
    by_image = retrieval_metrics(images, evaluation.labels, k=k)
    by_text = class_query_metrics(images, evaluation.labels, evaluation.text, k)

    results = []
    for seed in seeds:
        results.append(MethodResult(IMAGE_QUERY, seed, _search_scores(by_image, k)))
        if evaluation.symbol_draws is not None:
            symbols = evaluation.symbols(symbol_draws, seed)
            by_symbol = class_query_metrics(images, evaluation.labels, symbols, k)
            results.append(MethodResult(SYMBOL_QUERY, seed, by_symbol))
        results.append(MethodResult(TEXT_QUERY, seed, by_text))
    return results


def _search_scores(metrics: dict[str, Any], k: int) -> dict[str, Any]:
    return {f"map_at_{k}": metrics[f"map_at_{k}"], "map": metrics["map"]}


def class_query_metrics(
    images: np.ndarray, labels: np.ndarray, class_embeddings: np.ndarray, k: int = 5
) -> dict[str, Any]:
    """Score one query per class against all galaxies: mean AP@k and mean AP over the classes present.

    ``class_embeddings`` is (C, D) in label order. Ties are ranked as in
    :func:`galaxalign.metrics.retrieval_metrics`: AP groups tied scores as
    scikit-learn does, and AP@k orders ties by the lower row index. Returns
    ``map_at_{k}``, ``map`` and ``per_class`` (AP of each class present).
    """
    scores = zero_shot_scores(images, class_embeddings)
    present = np.unique(labels)
    top = min(k, len(labels))
    ap_top, ap_full = {}, {}
    for label in present:
        relevant = labels == label
        column = scores[:, label]
        ranking = np.lexsort((np.arange(column.size), -column))[:top]
        ap_top[int(label)] = average_precision_at_k(relevant[ranking], k, int(relevant.sum()))
        ap_full[int(label)] = float(average_precision_score(relevant, column))
    return {
        f"map_at_{k}": float(np.mean(list(ap_top.values()))),
        "map": float(np.mean(list(ap_full.values()))),
        "per_class": ap_full,
    }


def summary_table(results: Sequence[MethodResult], columns: Sequence[str]) -> pd.DataFrame:
    """Average each metric in ``columns`` over seeds: one row per method, ``<metric>_mean`` and ``_std``.

    The standard deviation is the population one (ddof 0), 0 for a single seed.
    Methods keep the order in which they first appear in ``results``.
    """
    methods = list(dict.fromkeys(result.method for result in results))
    rows = []
    for method in methods:
        runs = [result.metrics for result in results if result.method == method]
        rows.append({"method": method, **seed_summary(runs, columns)})
    return pd.DataFrame(rows).set_index("method")


def seed_summary(runs: Sequence[Mapping[str, float]], columns: Sequence[str]) -> dict[str, float]:
    """Summarise the metrics of several seeds: ``<column>_mean`` and ``_std`` per column, and ``n_seeds``.

    The standard deviation is the population one (ddof 0), 0 for a single seed.
    """
    summary: dict[str, float] = {}
    for column in columns:
        values = np.array([run[column] for run in runs], dtype=np.float64)
        summary[f"{column}_mean"] = values.mean()
        summary[f"{column}_std"] = values.std()
    summary["n_seeds"] = len(runs)
    return summary


def classification_table(results: Sequence[MethodResult]) -> pd.DataFrame:
    """Build the classification table: accuracy and macro F1 per method, mean and std over seeds."""
    return summary_table(results, ("accuracy", "macro_f1"))


def search_table(results: Sequence[MethodResult], k: int = 5) -> pd.DataFrame:
    """Build the similarity-search table: mAP@k and mAP per query kind, mean and std over seeds."""
    return summary_table(results, (f"map_at_{k}", "map"))


def format_mean_std(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Turn ``<metric>_mean`` and ``<metric>_std`` column pairs into "mean (std)" text cells."""
    formatted = pd.DataFrame(index=table.index)
    for column in table.columns:
        if not column.endswith("_mean"):
            continue
        metric = column.removesuffix("_mean")
        means, stds = table[column], table[f"{metric}_std"]
        formatted[metric] = [f"{m:.{decimals}f} ({s:.{decimals}f})" for m, s in zip(means, stds, strict=True)]
    return formatted


def save_table(table: pd.DataFrame, path: str | Path, decimals: int = 3) -> tuple[Path, Path]:
    """Write ``table`` as CSV (full precision) and as a Markdown table of "mean (std)" cells.

    ``path`` is the file name without suffix; returns the two paths written.
    """
    stem = Path(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    markdown_path = stem.with_suffix(".md")
    table.to_csv(csv_path)
    markdown_path.write_text(format_mean_std(table, decimals).to_markdown() + "\n")
    return csv_path, markdown_path


def parse_seeds(seeds: Sequence[int] | int | str) -> list[int]:
    """Check a list of seeds and return it; an int or text such as "0,1,2" (papermill -p) also works."""
    if isinstance(seeds, str):
        text = seeds.strip().strip("[]()")
        try:
            seeds = [int(part) for part in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"seeds must be integers such as 0,1,2, got {seeds!r}") from None
    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)]
    checked = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seeds must be non-negative integers, got {seed!r} in {list(seeds)}")
        checked.append(int(seed))
    if not checked:
        raise ValueError("seeds is empty; pass at least one seed, for example [0]")
    return checked


@dataclass
class RunEvaluation:
    """Everything :func:`evaluate_run` computed for one run and split, and where its tables went.

    ``classification`` and ``search`` are the summary tables (see
    :func:`summary_table`); ``classifier_results`` and ``search_results`` hold
    every method and seed with per-class scores and confusion matrices.
    ``embeddings`` is the evaluated set, ``train_embeddings`` the run's
    training split, and ``images`` the decoded galaxies behind both.
    """

    run: FinishedRun
    split: str
    output_dir: Path
    classification: pd.DataFrame
    search: pd.DataFrame
    classifier_results: list[MethodResult]
    search_results: list[MethodResult]
    embeddings: EmbeddingSet
    train_embeddings: EmbeddingSet
    images: RunImages

    def confusions(self, seed: int | None = None) -> dict[str, list[list[int]]]:
        """Return each classifier's confusion matrix for ``seed`` (the first seed evaluated by default)."""
        seed = self.classifier_results[0].seed if seed is None else seed
        return {r.method: r.metrics["confusion"] for r in self.classifier_results if r.seed == seed}

    def per_class(self, method: str = TEXT) -> pd.DataFrame:
        """Return precision, recall, F1 and support per class of one classifier (first seed)."""
        for result in self.classifier_results:
            if result.method == method:
                return pd.DataFrame(result.metrics["per_class"]).T
        evaluated = sorted({r.method for r in self.classifier_results})
        raise KeyError(f"no classifier {method!r}; evaluated: {evaluated}")


def evaluate_run(
    run_dir: str | Path | FinishedRun,
    split: str = "test",
    seeds: Sequence[int] = (0,),
    k: int = 5,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    knn_k: int = 10,
    symbol_draws: int = 8,
    device: str = "auto",
) -> RunEvaluation:
    """Embed a finished run's galaxies, then build and save its classification and search tables.

    ``split`` is "test", "val", "train" or "all" of the run's own split. With
    ``dataset`` (and ``data_dir``) set, the run is evaluated on all galaxies
    of that other catalog, which must have the run's classes. The linear
    probe and kNN always learn from the run's own training split. Tables go
    to ``<run_dir>/evaluation/<split>/`` as ``classification.csv`` / ``.md``
    and ``search.csv`` / ``.md``. The CSV files contain means and standard
    deviations at full precision, and the Markdown files "mean (std)" cells.
    """
    run = run_dir if isinstance(run_dir, FinishedRun) else load_run(run_dir, device=device)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer (the rank cut-off of mAP@k), got {k!r}")
    seeds = parse_seeds(seeds)
    if isinstance(symbol_draws, bool) or not isinstance(symbol_draws, (int, np.integer)):
        raise ValueError(f"symbol_draws must be an integer, got {symbol_draws!r}")
    if run.config.uses_symbols and not 1 <= symbol_draws <= SYMBOL_VARIANTS:
        raise ValueError(
            f"symbol_draws must be between 1 and {SYMBOL_VARIANTS} (the drawings embedded per class), "
            f"got {symbol_draws}"
        )
    own_images = load_run_images(run)
    n_train = len(own_images.positions("train"))
    if isinstance(knn_k, bool) or not isinstance(knn_k, (int, np.integer)) or not 1 <= knn_k <= n_train:
        raise ValueError(f"knn_k must be between 1 and {n_train} (the training galaxies), got {knn_k!r}")
    if dataset is None and split in ("train", "all"):
        logger.warning(
            "split %r contains the training galaxies that the linear probe and kNN learn from, "
            "so their scores are optimistic; evaluate 'test' for a fair comparison",
            split,
        )
    train_embeddings = embed_run(run, own_images, "train")
    if dataset is None:
        images = own_images
        embeddings = embed_run(run, images, split)
    else:
        if split != "all":
            logger.info("evaluating on every galaxy of the catalog %s (split 'all')", dataset)
        split = "all"
        images = load_run_images(run, dataset, data_dir)
        embeddings = embed_run(run, images, split)

    if k > len(embeddings) - 1:
        raise ValueError(
            f"k={k} is larger than the {len(embeddings) - 1} other galaxies each of the {len(embeddings)} "
            f"galaxies of split {split!r} can retrieve; pass a smaller k"
        )
    classifier_results = classify(embeddings, train_embeddings, seeds, symbol_draws, knn_k)
    search_results = search(embeddings, k, seeds, symbol_draws)
    output_dir = run.run.path / "evaluation" / embeddings.path.name
    classification = classification_table(classifier_results)
    search_summary = search_table(search_results, k)
    save_table(classification, output_dir / "classification")
    save_table(search_summary, output_dir / "search")
    logger.info(
        "wrote the classification and search tables of %d galaxies to %s", len(embeddings), output_dir
    )
    return RunEvaluation(
        run=run,
        split=split,
        output_dir=output_dir,
        classification=classification,
        search=search_summary,
        classifier_results=classifier_results,
        search_results=search_results,
        embeddings=embeddings,
        train_embeddings=train_embeddings,
        images=images,
    )


def gallery_queries(labels: np.ndarray, n_queries: int, seed: int = 0) -> np.ndarray:
    """Pick ``n_queries`` rows for a retrieval gallery, one per class in label order before any repeats.

    Each class contributes a random member (seeded) in turn, so rare classes
    appear in the gallery too; classes run out in order of their size.
    """
    generator = np.random.default_rng(seed)
    shuffled = {
        int(label): list(generator.permutation(np.flatnonzero(labels == label)))
        for label in np.unique(labels)
    }
    picked: list[int] = []
    while len(picked) < n_queries and any(shuffled.values()):
        for members in shuffled.values():
            if members and len(picked) < n_queries:
                picked.append(int(members.pop()))
    return np.array(picked, dtype=np.int64)


def gallery_figure(evaluation: RunEvaluation, n_queries: int = 6, k: int = 5, seed: int = 0) -> Figure:
    """Draw query galaxies (one per class first) above their ``k`` nearest neighbours in the evaluated set.

    Neighbours come from a :class:`~galaxalign.search.NeighbourIndex` over the
    evaluated image embeddings, each query excluding itself. Captions give
    the class of each query, and the cosine similarity and class of each
    neighbour, with a check mark when the classes match.
    """
    embeddings = evaluation.embeddings
    index = NeighbourIndex.from_embedding_set(embeddings)
    rows = gallery_queries(embeddings.labels, n_queries, seed)
    result = index.query_ids(embeddings.ids[rows], k=k)

    def thumbnails(rows: np.ndarray) -> np.ndarray:
        return evaluation.images.thumbnails([str(i) for i in embeddings.ids[rows]])

    title = f"nearest neighbours among {len(embeddings)} galaxies ({evaluation.split} split)"
    return neighbour_gallery(
        rows, result, embeddings.ids, embeddings.labels, embeddings.class_names, thumbnails, title
    )


def neighbour_gallery(
    query_rows: np.ndarray,
    result: SearchResult,
    ids: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    thumbnails: Callable[[np.ndarray], np.ndarray],
    title: str,
) -> Figure:
    """Draw galaxies ``query_rows`` above their neighbours in ``result``, captioned with class and similarity.

    ``ids`` and ``labels`` are indexed by row, as are ``result.rows``, and
    ``thumbnails(rows)`` returns the (len(rows), S, S, 3) uint8 images of rows.
    """
    n_queries, k = result.rows.shape
    query_images = thumbnails(query_rows)
    neighbour_images = thumbnails(result.rows.reshape(-1)).reshape(n_queries, k, *query_images.shape[1:])
    query_labels = labels[query_rows]
    neighbour_labels = labels[result.rows]
    query_captions = [
        f"{class_names[label]}\n{object_id}"
        for label, object_id in zip(query_labels, ids[query_rows], strict=True)
    ]
    neighbour_captions = [
        [
            f"{score:.3f} {class_names[label]}{' ✓' if label == query_label else ''}"
            for score, label in zip(scores, row_labels, strict=True)
        ]
        for scores, row_labels, query_label in zip(result.scores, neighbour_labels, query_labels, strict=True)
    ]
    return retrieval_gallery(query_images, neighbour_images, query_captions, neighbour_captions, title)
