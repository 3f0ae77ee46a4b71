"""Command line: ``python -m galaxalign.train --run-dir DIR [--name value ...]``, also under torchrun.

Every :class:`TrainConfig` field is an option (``--epochs-stage1 2``). Booleans
take true or false, and optional values take none. Running the same command
again on an interrupted run directory resumes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from galaxalign.train.config import TrainConfig
from galaxalign.train.trainer import train

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    return parse


# Field annotations are strings (postponed evaluation); map each to a converter.
_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _boolean,
    "str | None": _optional(str),
    "bool | None": _optional(_boolean),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: ``--run-dir``, ``--overwrite`` and one option per training parameter."""
    parser = argparse.ArgumentParser(
        prog="python -m galaxalign.train",
        description="Train galaxalign into a run directory; an interrupted run resumes where it stopped.",
    )
    parser.add_argument("--run-dir", required=True, help="folder for everything the run writes")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete this run's earlier outputs in run-dir and start over"
    )
    for field in dataclasses.fields(TrainConfig):
        convert = _CONVERTERS[str(field.type)]
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=convert,
            default=field.default,
            help=f"default: {field.default}",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(build_parser().parse_args(argv))
    run_dir, overwrite = arguments.pop("run_dir"), arguments.pop("overwrite")
    rank = int(os.environ.get("RANK", "0"))
    # Under torchrun the other processes log warnings only, so the log reads as one run.
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("galaxalign").setLevel(level)
    metrics = train(TrainConfig(**arguments), run_dir=run_dir, overwrite=overwrite)
    if rank == 0:
        summary = ", ".join(
            f"{key} {metrics[key]:.3f}" for key in ("accuracy", "macro_f1", "map_at_5", "map")
        )
        logging.getLogger("galaxalign").info("finished: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
