import warnings
from pathlib import Path

import pytest

from galaxalign.schema import (
    GALAXY10_DECALS,
    GALAXY_MNIST,
    GZ1,
    ClassSchema,
    MorphologyClass,
    get_schema,
    guess_mirror,
    indefinite_article,
    schema_from_names,
)
from galaxalign.symbols import SYMBOL_RECIPES


@pytest.mark.parametrize(
    ("phrase", "article"),
    [
        ("barred spiral galaxy", "a"),
        ("edge-on galaxy with a bulge", "an"),
        ("in-between round smooth galaxy", "an"),
        ("unbarred tight spiral galaxy", "an"),
        ("elliptical galaxy", "an"),
        ("uniform disk", "a"),
        ("merger of galaxies", "a"),
    ],
)
def test_indefinite_article(phrase: str, article: str):
    assert indefinite_article(phrase) == article


def test_builtin_prompts():
    assert GALAXY10_DECALS.prompts[5] == "A picture of a barred spiral galaxy"
    assert GALAXY10_DECALS.prompts[8] == "A picture of an edge-on galaxy without a bulge"
    assert GZ1.prompts[0] == "A picture of an elliptical galaxy"
    assert len(GALAXY10_DECALS) == 10
    assert len(GALAXY_MNIST) == 4
    assert len(GZ1) == 6


def test_builtin_symbols_exist():
    for schema in (GALAXY10_DECALS, GALAXY_MNIST, GZ1):
        for c in schema.classes:
            assert c.symbol in SYMBOL_RECIPES, (schema.name, c.name)


def test_gz1_mirror_swaps_handedness():
    assert GZ1.mirror == (0, 2, 1, 3, 4, 5)
    assert GZ1.flips_allowed
    assert GALAXY10_DECALS.mirror == tuple(range(10))


def test_mirror_must_be_an_involution():
    classes = tuple(MorphologyClass(n, f"{n} galaxy", "smooth_round") for n in "abc")
    with pytest.raises(ValueError, match="must be a permutation"):
        ClassSchema("x", classes, mirror=(0, 0, 1))
    with pytest.raises(ValueError, match="must undo itself"):
        ClassSchema("x", classes, mirror=(1, 2, 0))


def test_duplicate_class_names_rejected():
    c = MorphologyClass("a", "a galaxy", "smooth_round")
    with pytest.raises(ValueError, match=r"repeats class names \['a'\]"):
        ClassSchema("x", (c, c))


def test_index_names_known_classes():
    assert GZ1.index("merger") == 5
    with pytest.raises(KeyError, match="unknown class 'spiral'.*elliptical"):
        GZ1.index("spiral")


def test_save_and_load_round_trip(tmp_path: Path):
    GZ1.save(tmp_path / "schema.json")
    assert ClassSchema.load(tmp_path / "schema.json") == GZ1


def test_get_schema_lists_choices():
    assert get_schema("gz1") is GZ1
    with pytest.raises(KeyError, match="choose from"):
        get_schema("gz2")


def test_guess_mirror_pairs_handedness_ignoring_case():
    assert guess_mirror(["Elliptical", "Spiral Clockwise", "spiral-anticlockwise"]) == (0, 2, 1)
    assert guess_mirror(["cw_clockwise", "cw_counterclockwise"]) == (1, 0)


def test_guess_mirror_without_partner_disables_flips():
    with pytest.warns(UserWarning, match="no mirrored partner"):
        assert guess_mirror(["smooth", "spiral_clockwise"]) is None


def test_schema_from_names_reuses_builtin_symbols_and_prompts():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = schema_from_names("mine", ["Elliptical", "Edge-on", "merger", "barred_spiral"])
    assert schema.symbols == ["smooth_round", "edge_on_bulge", "merger", "barred_spiral"]
    assert schema.prompts[0] == "A picture of an elliptical galaxy"
    assert schema.prompts[1] == "A picture of an edge-on disk galaxy"
    assert schema.mirror == (0, 1, 2, 3)


def test_schema_from_names_warns_for_unknown_symbol():
    with pytest.warns(UserWarning, match=r"classes \['blob'\]"):
        schema = schema_from_names("mine", ["blob", "smooth_round"])
    assert schema.symbols == ["dont_know", "smooth_round"]
    assert schema.prompts[0] == "A picture of a blob galaxy"
