"""The typed config schema (recbole_promptmm.schema): a declaration checks values by type, bounds and choices; every
yaml default under properties/ is declared and fits its declaration, and every declared key has a default there (the
yaml files and the declarations cannot drift apart)."""

from __future__ import annotations

import math

import pytest

from recbole_promptmm.config import load_yaml
from recbole_promptmm.model.promptmm import PromptMM
from recbole_promptmm.paths import properties_dir
from recbole_promptmm.registry import our_models
from recbole_promptmm.schema import DATASET_KEYS, Key, declare, declared_keys, own_keys
from recbole_promptmm.validate import _recbole_index, our_declarations

TINY = declare(
    size=Key("int", low=1),
    rate=Key("float", low=0, low_open=True, optional=True),
    share=Key("float", low=0, high=1, high_open=True),
    mode=Key("str", choices=("fast", "slow")),
    on=Key("bool"),
    weights=Key("list", optional=True),
)


@pytest.mark.parametrize("key, value", [
    ("size", 1), ("size", 10**9), ("rate", 1e-9), ("rate", 3), ("rate", None), ("share", 0), ("share", 0.999),
    ("mode", "fast"), ("on", False), ("weights", [0.1, 0.9]), ("weights", None),
])
def test_a_tiny_schema_accepts(key, value):
    assert TINY[key].fits(value)


@pytest.mark.parametrize("key, value, expected", [
    ("size", 0, "an integer >= 1"),
    ("size", 2.0, "an integer >= 1"),  # a float is no integer
    ("size", True, "an integer >= 1"),  # nor is a bool
    ("size", None, "an integer >= 1"),  # not optional
    ("rate", 0, "a number > 0"),
    ("rate", math.inf, "a number > 0"),
    ("rate", math.nan, "a number > 0"),
    ("rate", "1e-3", "a number > 0"),
    ("share", 1, "a number in [0, 1)"),
    ("share", -0.5, "a number in [0, 1)"),
    ("mode", "medium", "one of fast, slow"),
    ("mode", 1, "one of fast, slow"),
    ("on", 1, "True or False"),
    ("weights", "0.1,0.9", "a list"),
])
def test_a_tiny_schema_refuses_and_says_what_it_expects(key, value, expected):
    assert not TINY[key].fits(value)
    assert TINY[key].expected() == expected


def test_a_declaration_is_consistent_in_itself():
    with pytest.raises(ValueError, match="choices"):
        Key("int", choices=("a",))
    with pytest.raises(ValueError, match="bounds"):
        Key("str", low=0)
    with pytest.raises(ValueError, match="type"):
        Key("integer")
    with pytest.raises(TypeError, match="not a Key"):
        declare(size=int)


def test_a_subclass_inherits_and_overrides_declarations():
    class Base:
        config_keys = declare(size=Key("int", low=1), mode=Key("str", choices=("a", "b")))

    class Child(Base):
        config_keys = declare(mode=Key("str", choices=("a", "b", "c")), extra=Key("bool"))

    keys = own_keys(Child)
    assert set(keys) == {"size", "mode", "extra"} and keys["mode"].choices == ("a", "b", "c")


def _yaml_files(model_class: type) -> list[str]:
    """properties/model/*.yaml files a standalone run of ``model_class`` layers, lowest first (PromptMM: with its
    default teacher)."""
    names = PromptMM.defaults_from({}) if model_class is PromptMM else model_class.__dict__.get(
        "inherits_defaults_from", getattr(model_class, "inherits_defaults_from", ()))
    return [name for name in (*names, model_class.__name__)
            if (properties_dir() / "model" / f"{name}.yaml").is_file()]


@pytest.mark.parametrize("name", list(our_models()))
def test_every_yaml_default_of_a_model_is_declared_and_fits(name):
    model_class = our_models()[name]
    declared = declared_keys(model_class)
    defaults: dict = {}
    for file in _yaml_files(model_class):
        defaults.update(load_yaml(properties_dir() / "model" / f"{file}.yaml"))
    undeclared = sorted(set(defaults) - set(declared))
    assert not undeclared, f"{name}: keys in its yaml files without a declaration: {undeclared}"
    bad = {k: v for k, v in defaults.items() if not declared[k].fits(v)}
    assert not bad, f"{name}: defaults that do not fit their declarations: " + \
        ", ".join(f"{k}={v!r} (expected {declared[k].expected()})" for k, v in bad.items())
    without_default = sorted(set(own_keys(model_class)) - set(defaults))
    assert not without_default, f"{name}: declared keys without a yaml default: {without_default}"


def test_every_yaml_file_of_a_model_belongs_to_a_model():
    used = {file for cls in our_models().values() for file in _yaml_files(cls)}
    assert {p.stem for p in (properties_dir() / "model").glob("*.yaml")} == used


@pytest.mark.parametrize("file", ["overall.yaml", *(f"dataset/{p.name}" for p in
                                                    sorted((properties_dir() / "dataset").glob("*.yaml")))])
def test_dataset_level_defaults_are_declared_or_recboles_and_fit(file):
    values = load_yaml(properties_dir() / file)
    for key, value in values.items():
        if key in DATASET_KEYS:
            assert DATASET_KEYS[key].fits(value), (file, key, value)
        elif key in our_declarations():  # a model key set per dataset (ml-100k's teacher_learning_rate)
            assert any(k.fits(value) for k in our_declarations()[key]), (file, key, value)
        else:
            assert key in _recbole_index()[1], f"{file}: {key} is declared nowhere (schema.DATASET_KEYS?)"


def test_every_dataset_key_has_a_default_somewhere():
    files = [properties_dir() / "overall.yaml", *(properties_dir() / "dataset").glob("*.yaml")]
    given = {key for path in files for key in load_yaml(path)}
    assert set(DATASET_KEYS) <= given, sorted(set(DATASET_KEYS) - given)
