"""galaxalign: fine-tune CLIP so galaxy images, morphology symbols and text share one space.

The names most users need are re-exported here, so one import is enough::

    import galaxalign as ga
    metrics = ga.train(dataset="demo", run_dir="runs/first")
"""

__version__ = "0.1.0"

from galaxalign.classify import zero_shot_predict, zero_shot_scores
from galaxalign.data import (
    GalaxyDataset,
    Split,
    cache_images,
    load_demo,
    read_catalog,
    read_dataset,
    read_galaxy10,
    read_galaxymnist,
    stratified_split,
)
from galaxalign.embed import EmbeddingSet, load_embeddings, read_embedding_set
from galaxalign.evaluate import RunEvaluation, evaluate_run
from galaxalign.explore import Exploration, load_exploration
from galaxalign.metrics import classification_metrics, retrieval_metrics
from galaxalign.models import PRESETS, TriModalCLIP, build_model
from galaxalign.query import QueryEncoder
from galaxalign.runs import FinishedRun, embed_run, load_run, load_run_images
from galaxalign.schema import (
    GALAXY10_DECALS,
    GALAXY_MNIST,
    GZ1,
    ClassSchema,
    MorphologyClass,
    get_schema,
    schema_from_names,
)
from galaxalign.search import NeighbourIndex, SearchResult
from galaxalign.symbols import SymbolBank, draw_symbol, save_symbol_sheet
from galaxalign.train import RunDirectory, TrainConfig, Trainer, train

__all__ = [
    "GALAXY10_DECALS",
    "GALAXY_MNIST",
    "GZ1",
    "PRESETS",
    "ClassSchema",
    "EmbeddingSet",
    "Exploration",
    "FinishedRun",
    "GalaxyDataset",
    "MorphologyClass",
    "NeighbourIndex",
    "QueryEncoder",
    "RunDirectory",
    "RunEvaluation",
    "SearchResult",
    "Split",
    "SymbolBank",
    "TrainConfig",
    "Trainer",
    "TriModalCLIP",
    "build_model",
    "cache_images",
    "classification_metrics",
    "draw_symbol",
    "embed_run",
    "evaluate_run",
    "get_schema",
    "load_demo",
    "load_embeddings",
    "load_exploration",
    "load_run",
    "load_run_images",
    "read_catalog",
    "read_dataset",
    "read_embedding_set",
    "read_galaxy10",
    "read_galaxymnist",
    "retrieval_metrics",
    "save_symbol_sheet",
    "schema_from_names",
    "stratified_split",
    "train",
    "zero_shot_predict",
    "zero_shot_scores",
]
