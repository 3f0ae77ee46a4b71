"""Class schemas: the morphology classes of a dataset, their prompts and symbols."""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A picture of {article} {description}"

# Words that start with a vowel letter but a consonant sound, so they take "a".
_CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "one", "eu")


def indefinite_article(phrase: str) -> str:
    """Return "a" or "an" for the first word of ``phrase`` (by its sound, for common cases)."""
    word = phrase.strip().lower()
    if not word:
        raise ValueError("cannot choose an article for an empty phrase")
    if word.startswith(_CONSONANT_SOUND_PREFIXES):
        return "a"
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class MorphologyClass:
    """One morphology class.

    ``name`` is the identifier used in catalogs (``class_name`` column),
    ``description`` the noun phrase that goes into the text prompt, and
    ``symbol`` either the name of a procedural symbol recipe in
    :mod:`galaxalign.symbols` or the path of a user's own symbol image.
    """

    name: str
    description: str
    symbol: str
    prompt: str = ""

    def __post_init__(self) -> None:
        if not self.prompt:
            article = indefinite_article(self.description)
            object.__setattr__(
                self, "prompt", PROMPT_TEMPLATE.format(article=article, description=self.description)
            )


@dataclass(frozen=True)
class ClassSchema:
    """The classes of a dataset, in label order, and how labels behave under a mirror flip.

    ``mirror`` holds, for each label, the label of the same galaxy seen in a
    mirror: the identity for classes without handedness, a swap for a
    clockwise/anticlockwise pair. ``mirror=None`` means a flip cannot be
    labelled correctly, so augmentation uses rotations only.
    """

    name: str
    classes: tuple[MorphologyClass, ...]
    mirror: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        if not names:
            raise ValueError(f"schema {self.name!r} has no classes")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"schema {self.name!r} repeats class names {duplicates}")
        if self.mirror is not None:
            mirror = tuple(int(m) for m in self.mirror)
            n = len(self.classes)
            if len(mirror) != n or sorted(mirror) != list(range(n)):
                raise ValueError(
                    f"schema {self.name!r}: mirror must be a permutation of 0..{n - 1}, got {mirror}"
                )
            if any(mirror[mirror[i]] != i for i in range(n)):
                raise ValueError(f"schema {self.name!r}: mirror must undo itself, got {mirror}")
            object.__setattr__(self, "mirror", mirror)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.classes]

    @property
    def symbols(self) -> list[str]:
        return [c.symbol for c in self.classes]

    @property
    def flips_allowed(self) -> bool:
        return self.mirror is not None

    def index(self, name: str) -> int:
        """Return the label of class ``name``; raise ``KeyError`` naming the known classes."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        raise KeyError(f"unknown class {name!r} in schema {self.name!r}; known classes: {self.names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": [
                {"name": c.name, "description": c.description, "symbol": c.symbol, "prompt": c.prompt}
                for c in self.classes
            ],
            "mirror": list(self.mirror) if self.mirror is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassSchema:
        classes = tuple(MorphologyClass(**c) for c in data["classes"])
        mirror = data.get("mirror")
        return cls(name=data["name"], classes=classes, mirror=tuple(mirror) if mirror is not None else None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ClassSchema:
        return cls.from_dict(json.loads(Path(path).read_text()))


_HANDEDNESS = re.compile(r"(anti|counter)?clockwise")


def normalize_class_name(name: str) -> str:
    """Return ``name`` in lower case with spaces and hyphens as underscores ("Edge-on" -> "edge_on")."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def guess_mirror(names: Sequence[str]) -> tuple[int, ...] | None:
    """Derive the mirror map from class names.

    A name containing "clockwise" is paired with the name that has
    "anticlockwise" (or "counterclockwise") in the same place, ignoring case,
    spaces and hyphens; a mirror flip swaps the pair. A handed class without a
    partner makes flips invalid, so the result is ``None``.
    """
    normalized = [normalize_class_name(n) for n in names]
    mirror = list(range(len(names)))
    lookup = {n: i for i, n in enumerate(normalized)}
    for i, n in enumerate(normalized):
        match = _HANDEDNESS.search(n)
        if match is None:
            continue
        if match.group(1):
            candidates = [n[: match.start()] + "clockwise" + n[match.end() :]]
        else:
            candidates = [
                n[: match.start()] + prefix + "clockwise" + n[match.end() :] for prefix in ("anti", "counter")
            ]
        partners = [lookup[c] for c in candidates if c in lookup]
        if not partners:
            warnings.warn(
                f"class {names[i]!r} has a handedness but no mirrored partner class; "
                "mirror flips are disabled for this schema (rotations still apply)",
                stacklevel=3,
            )
            return None
        mirror[i] = partners[0]
    return tuple(mirror)


def schema_from_names(
    name: str,
    class_names: Sequence[str],
    descriptions: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    mirror: Sequence[int] | None | str = "auto",
) -> ClassSchema:
    """Build a schema for a user's catalog.

    Without ``descriptions`` the prompt uses the class name with underscores
    read as spaces and "galaxy" appended where the name lacks it. Without
    ``symbols`` each class gets the built-in symbol recipe of the same name,
    or "dont_know" where no recipe matches (a warning names those classes).
    ``mirror="auto"`` pairs clockwise/anticlockwise names (see
    :func:`guess_mirror`).
    """
    from galaxalign.symbols import SYMBOL_RECIPES

    class_names = [str(n) for n in class_names]
    if descriptions is None:
        descriptions = [_description_from_name(n) for n in class_names]
    if symbols is None:
        found = [_symbol_for_name(n, SYMBOL_RECIPES) for n in class_names]
        symbols = [recipe or "dont_know" for recipe in found]
        missing = [n for n, recipe in zip(class_names, found, strict=True) if recipe is None]
        if missing:
            warnings.warn(
                f"no built-in symbol recipe is named like classes {missing}; they get the "
                f"'dont_know' symbol. Pass symbols= with recipes from {sorted(SYMBOL_RECIPES)} "
                "or paths to your own symbol images.",
                stacklevel=2,
            )
    if len(descriptions) != len(class_names) or len(symbols) != len(class_names):
        raise ValueError(
            f"schema {name!r}: got {len(class_names)} classes, {len(descriptions)} descriptions "
            f"and {len(symbols)} symbols; pass one of each per class"
        )
    if isinstance(mirror, str):
        if mirror != "auto":
            raise ValueError(f"mirror must be 'auto', None or a sequence of labels, got {mirror!r}")
        mirror_map = guess_mirror(class_names)
    else:
        mirror_map = tuple(mirror) if mirror is not None else None
    classes = tuple(
        MorphologyClass(name=n, description=d, symbol=s)
        for n, d, s in zip(class_names, descriptions, symbols, strict=True)
    )
    return ClassSchema(name=name, classes=classes, mirror=mirror_map)


def _builtin_class(key: str) -> MorphologyClass | None:
    """Return the class of a built-in schema whose name is ``key`` (already normalised), if any."""
    for schema in BUILTIN_SCHEMAS.values():
        for c in schema.classes:
            if c.name == key:
                return c
    return None


def _symbol_for_name(name: str, recipes: Mapping[str, object]) -> str | None:
    """Return the symbol recipe for a class name: a recipe of that name, or the symbol a
    built-in schema gives a class of that name ("elliptical" -> "smooth_round")."""
    key = normalize_class_name(name)
    if key in recipes:
        return key
    builtin = _builtin_class(key)
    if builtin is not None:
        return builtin.symbol
    return _SYMBOL_SYNONYMS.get(key)


# Common class names in other catalogs that have no built-in schema of their own.
_SYMBOL_SYNONYMS = {
    "smooth": "smooth_round",
    "round": "smooth_round",
    "lenticular": "edge_on_bulge",
    "irregular": "disturbed",
    "star": "dont_know",
    "artifact": "dont_know",
    "artefact": "dont_know",
    "unknown": "dont_know",
}


def _description_from_name(name: str) -> str:
    """Return the prompt phrase for a class name, reusing a built-in schema's phrase where one fits."""
    key = normalize_class_name(name)
    builtin = _builtin_class(key)
    if builtin is not None:
        return builtin.description
    text = key.replace("_", " ").replace("edge on", "edge-on")
    return text if "galax" in text else f"{text} galaxy"


GALAXY10_DECALS = ClassSchema(
    name="galaxy10_decals",
    classes=(
        MorphologyClass("disturbed", "disturbed galaxy", "disturbed"),
        MorphologyClass("merging", "merging galaxy", "merger"),
        MorphologyClass("round_smooth", "round smooth galaxy", "smooth_round"),
        MorphologyClass("in_between_round_smooth", "in-between round smooth galaxy", "in_between_round"),
        MorphologyClass("cigar_shaped_smooth", "cigar-shaped smooth galaxy", "cigar"),
        MorphologyClass("barred_spiral", "barred spiral galaxy", "barred_spiral"),
        MorphologyClass("unbarred_tight_spiral", "unbarred tight spiral galaxy", "tight_spiral"),
        MorphologyClass("unbarred_loose_spiral", "unbarred loose spiral galaxy", "loose_spiral"),
        MorphologyClass("edge_on_without_bulge", "edge-on galaxy without a bulge", "edge_on_no_bulge"),
        MorphologyClass("edge_on_with_bulge", "edge-on galaxy with a bulge", "edge_on_bulge"),
    ),
    mirror=tuple(range(10)),
)

GALAXY_MNIST = ClassSchema(
    name="galaxy_mnist",
    classes=(
        MorphologyClass("smooth_round", "smooth round galaxy", "smooth_round"),
        MorphologyClass("smooth_cigar", "smooth cigar-shaped galaxy", "cigar"),
        MorphologyClass("edge_on_disk", "edge-on disk galaxy", "edge_on_no_bulge"),
        MorphologyClass("unbarred_spiral", "unbarred spiral galaxy", "spiral"),
    ),
    mirror=tuple(range(4)),
)

# Galaxy Zoo 1 leaves. Clockwise and anticlockwise spirals swap under a mirror flip.
GZ1 = ClassSchema(
    name="gz1",
    classes=(
        MorphologyClass("elliptical", "elliptical galaxy", "smooth_round"),
        MorphologyClass("spiral_clockwise", "spiral galaxy with clockwise arms", "spiral_clockwise"),
        MorphologyClass(
            "spiral_anticlockwise", "spiral galaxy with anticlockwise arms", "spiral_anticlockwise"
        ),
        MorphologyClass("edge_on", "edge-on disk galaxy", "edge_on_bulge"),
        MorphologyClass("dont_know", "star or unclassifiable object", "dont_know"),
        MorphologyClass("merger", "merger of galaxies", "merger"),
    ),
    mirror=(0, 2, 1, 3, 4, 5),
)

BUILTIN_SCHEMAS: dict[str, ClassSchema] = {s.name: s for s in (GALAXY10_DECALS, GALAXY_MNIST, GZ1)}


def get_schema(name: str) -> ClassSchema:
    """Return a built-in schema by name: "galaxy10_decals", "galaxy_mnist" or "gz1"."""
    try:
        return BUILTIN_SCHEMAS[name]
    except KeyError:
        raise KeyError(f"no built-in schema {name!r}; choose from {sorted(BUILTIN_SCHEMAS)}") from None
