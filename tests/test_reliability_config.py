"""Config fuzzing: TOML documents over every key of the run config and of project.toml, mixing valid
values, wrong types, out-of-range numbers and unknown keys. Loading gives a valid object or a
ConfigError whose every problem names the file and the key — never another exception."""
from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import RunConfig, load_run_config
from engine.project import ProjectFile, load_project_file
from engine.schema import ConfigError

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

key_text = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_-. 0123456789\"'é"), min_size=1, max_size=12)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.just(""),
    st.dates(),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1)),
    st.times(),
)
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(key_text, inner, max_size=3)),
                        max_leaves=6)


def valid_for(tp: Any, meta: dict) -> st.SearchStrategy:
    """Values the schema should accept for a field of type `tp` (range limits from its metadata)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return table_for(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([valid_for(a, meta) for a in get_args(tp) if a is not type(None)])
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1] or (Any,)
        if dataclasses.is_dataclass(item) and hasattr(item, "from_string"):
            return st.lists(st.one_of(st.text(max_size=10), table_for(item)), max_size=2)
        return st.lists(valid_for(item, {}), max_size=3)
    lo = meta.get("min")
    hi = meta.get("max")
    gt = meta.get("gt")
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=int(lo) if lo is not None else -1000, max_value=int(hi) if hi is not None else 1000)
    if tp is float:
        low = gt if gt is not None else lo
        return st.floats(min_value=low if low is not None else -1e6, max_value=hi if hi is not None else 1e6,
                         exclude_min=gt is not None, allow_nan=False, allow_infinity=False)
    if tp is str:
        choices = meta.get("choices")
        return st.sampled_from(choices) if choices else st.text(max_size=20)
    return scalars


def field_value(f: dataclasses.Field, tp: Any) -> st.SearchStrategy:
    """Mostly valid values, sometimes anything at all (wrong types, out of range, NaN, dates, tables)."""
    return st.one_of(valid_for(tp, dict(f.metadata)), valid_for(tp, dict(f.metadata)), anything)


def table_for(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    optional = {f.name: field_value(f, hints[f.name]) for f in fields}
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    known = st.fixed_dictionaries({n: optional[n] for n in required},
                                  optional={n: s for n, s in optional.items() if n not in required})
    # Now and then a required key goes missing or an unknown key appears.
    return st.tuples(known, st.dictionaries(key_text, anything, max_size=2),
                     st.lists(st.sampled_from(required or ["-"]), max_size=1)).map(
        lambda t: {**{k: v for k, v in t[0].items() if k not in t[2]}, **t[1]})


def documents(cls: type) -> st.SearchStrategy:
    return st.one_of(table_for(cls), st.dictionaries(key_text, anything, max_size=4))


def check_outcome(load, path: Path, cls: type) -> None:
    try:
        obj = load()
    except ConfigError as e:
        assert e.problems, "a ConfigError with no problem"
        for p in e.problems:
            assert p.file == str(path) or p.file.startswith(f"{path}:"), p  # syntax errors: file:line:col
            assert str(p).startswith(str(path)), p
            # Problems about a key name it; only a file-level problem (syntax) has none.
            assert p.key or p.message.startswith(("invalid TOML", "not valid UTF-8")), p
            if p.key:
                assert p.key in str(p), p
    else:
        assert isinstance(obj, cls)


@FUZZ
@given(doc=documents(RunConfig))
def test_any_run_config_document_loads_or_names_file_and_key(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "fuzz.toml"
    try:
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    except (TypeError, ValueError):
        return  # not representable as TOML (tomli_w refuses): not a document a user can write
    check_outcome(lambda: load_run_config(path), path, RunConfig)


@FUZZ
@given(doc=documents(ProjectFile))
def test_any_project_file_loads_or_names_file_and_key(tmp_path_factory, doc):
    project = tmp_path_factory.mktemp("proj")
    path = project / "project.toml"
    try:
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    except (TypeError, ValueError):
        return
    check_outcome(lambda: load_project_file(project), path, ProjectFile)


@FUZZ
@given(text=st.text(st.sampled_from('[]="\'=.,\n#abc1 {}'), max_size=60))
def test_malformed_toml_text_is_a_config_error_with_the_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("raw") / "raw.toml"
    path.write_text(text, encoding="utf-8")
    check_outcome(lambda: load_run_config(path), path, RunConfig)


def test_a_non_table_where_a_table_with_required_keys_belongs_is_a_problem_not_a_crash(tmp_path):
    """Found by the fuzzer: `sample.prompts = [5]` and `concepts = [1]` raised TypeError."""
    path = tmp_path / "x.toml"
    path.write_text("[sample]\nprompts = [5]\n")
    with pytest.raises(ConfigError, match=r"x.toml:2: sample.prompts.0 = 5: must be a string or a table, got a whole number"):
        load_run_config(path)
    (tmp_path / "project.toml").write_text("concepts = [1]\n")
    with pytest.raises(ConfigError, match=r"project.toml:1: concepts.0: must be a table"):
        load_project_file(tmp_path)


@FUZZ
@given(doc=documents(RunConfig),
       overrides=st.lists(st.tuples(st.sampled_from(["train.epochs", "train", "model.base", "x.y.z", "sample.prompts",
                                                     "launch.num_machines", "", "train..epochs", "budget.max_hours"]),
                                    st.sampled_from(["3", "-1", "nan", "[1, 2]", "{a = 1}", "bare word", "", "\"s\"",
                                                     "true", "1e999", "="])).map(lambda kv: "=".join(kv)) |
                         st.text(max_size=15), max_size=3))
def test_set_overrides_on_any_config_load_or_name_the_key(tmp_path_factory, doc, overrides):
    path = tmp_path_factory.mktemp("set") / "set.toml"
    try:
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    except (TypeError, ValueError):
        return
    try:
        cfg = load_run_config(path, overrides)
    except ConfigError as e:
        for p in e.problems:
            assert p.file in (str(path), "--set") or p.file.startswith(f"{path}:"), p
            assert p.key or p.message, p
    else:
        assert isinstance(cfg, RunConfig)
