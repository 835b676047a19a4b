"""Typed TOML: turns a parsed TOML table into a tree of dataclasses, or into *all* the problems at once.

Every field carries its help text and its accepted values (`opt(...)`), so one declaration gives the
defaults, the validation, the error messages and the generated reference (`docs/config.md`).
Problems name the file, the line of the key (found by a light scan of the TOML text, since tomllib
keeps no positions), the dotted key, the value and what is accepted; unknown keys get a did-you-mean.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, get_args, get_origin


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based; 0: the key came from a --set override
    key: str
    message: str
    col: int | None = None  # 1-based, for TOML syntax errors

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (f"{self.file} (--set)" if self.line == 0 else self.file)
        if self.line and self.col:
            where += f":{self.col}"
        if not self.key:
            return f"{where}: {self.message}"
        sep = " " if self.message.startswith("= ") else ": "
        return f"{where}: {self.key}{sep}{self.message}"


class ConfigError(Exception):
    """One or more problems in a TOML file; `str()` lists them all, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def opt(default: Any = MISSING, *, help: str, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, gt: float | None = None, factory: Any = MISSING) -> Any:
    """A documented, validated dataclass field. `min`/`max` are inclusive, `gt` exclusive."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "gt": gt}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# Reading TOML with key positions

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.\s]+?)\s*=")


def _split_key(text: str) -> list[str]:
    parts = []
    for raw in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text):
        parts.append(raw.strip().strip("\"'"))
    return [p for p in parts if p]


def _key_positions(text: str):
    """(dotted key, 1-based line) for every table header and key, in file order.

    Array-of-tables entries are indexed: the second `[[sample.prompts]]` is `sample.prompts.1`.
    Good enough for pointing at a key; tomllib checks the syntax.
    """
    table: list[str] = []
    aot_count: dict[str, int] = {}
    in_multiline = False
    for n, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = False
            continue
        m = _HEADER.match(line)
        if m and not _KEY.match(line):
            name = _split_key(m.group(1))
            if line.lstrip().startswith("[["):
                base = ".".join(name)
                idx = aot_count.get(base, 0)
                aot_count[base] = idx + 1
                table = name + [str(idx)]
            else:
                table = name
            yield ".".join(table), n
            continue
        m = _KEY.match(line)
        if m:
            yield ".".join(table + _split_key(m.group(1))), n
            rest = line[m.end():]
            if rest.count('"""') % 2 == 1 or rest.count("'''") % 2 == 1:
                in_multiline = True


def key_lines(text: str) -> dict[str, int]:
    """Map dotted keys (and table headers) to the 1-based line where each first appears."""
    lines: dict[str, int] = {}
    for key, n in _key_positions(text):
        lines.setdefault(key, n)
    return lines


def override_key(item: str) -> str:
    """The key of a `--set key=value` item."""
    return item.split("=", 1)[0].strip()


def key_line(source: str, key: str, overrides: Iterable[str] = ()) -> int | None:
    """Where a problem with `key` points: 0 when `--set` gave the key, else the key's line in
    `source` (or its table's header, where the key is a default), else None."""
    if key in {override_key(o) for o in overrides}:
        return 0
    lines = key_lines(source)
    return lines.get(key, lines.get(key.split(".")[0]))


def load_toml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a TOML file. Syntax errors become a ConfigError with file:line:col and the parser's words."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(str(path), None, "", "is a directory, not a TOML file")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([Problem(str(path), line, "", f"not valid UTF-8 (byte {e.start})")]) from None
    return parse_toml(text, str(path))


def parse_toml(text: str, file: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([syntax_problem(text, file, e)]) from None
    return data, key_lines(text)


def syntax_problem(text: str, file: str, e: tomllib.TOMLDecodeError) -> Problem:
    """A TOML syntax error as file:line:col, the parser's words, and a hint where the mistake is a common one.

    tomllib says "at end of document" for a duplicate last key or a bracket/string never closed; the
    line is then found by parsing ever longer prefixes (the file is small, and this runs only on error).
    """
    msg = str(e)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
    lines = text.splitlines()
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        msg = msg[: m.start()] + msg[m.end():]
    else:
        msg = re.sub(r"\s*\(at end of document\)", "", msg)
        line, col = _first_bad_line(lines), None
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    hint = _syntax_hint(msg, source, lines[: line - 1])
    if msg.startswith(("Unclosed", "Unterminated")):
        opened = _first_bad_line(lines)
        what = "string" if msg.startswith("Unterminated") else msg.split(" ", 1)[1].strip()  # array, inline table
        hint = f"the {what} opened on line {opened} is never closed" if opened and opened != line else \
            f"the {what} opened here is never closed"
    return Problem(file, line or None, "", f"invalid TOML: {msg.strip()}" + (f" ({hint})" if hint else ""), col)


def _first_bad_line(lines: list[str]) -> int:
    good = 0
    for k in range(1, len(lines) + 1):
        try:
            tomllib.loads("\n".join(lines[:k]))
            good = k
        except tomllib.TOMLDecodeError:
            pass
    return min(good + 1, len(lines)) if lines else 0


_BARE_VALUE = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=\s*([A-Za-z_][\w\-./+]*)\s*(#.*)?$")


def _syntax_hint(msg: str, source: str, before: list[str]) -> str:
    if msg.startswith("Invalid value"):
        if re.search(r"=\s*(True|False|TRUE|FALSE)\s*(#.*)?$", source):
            return "true and false are lower case in TOML"
        m = _BARE_VALUE.match(source)
        if m:
            return f'text needs quotes: {m.group(1)} = "{m.group(2)}"'

    if msg.startswith("Illegal character '\\n'") and (source.count('"') % 2 or source.count("'") % 2):
        return "a string on this line has no closing quote"
    if msg.startswith(("Cannot overwrite a value", "Cannot declare")):
        positions = list(_key_positions("\n".join(before + [source])))
        if positions:
            key, _ = positions[-1]
            earlier = [n for k, n in positions[:-1] if k == key]
            if earlier:
                return f"{key} is already on line {earlier[0]}"
        return "a key or table is set twice"
    return ""


# ---------------------------------------------------------------------------------------------
# Building dataclasses


class _Builder:
    def __init__(self, file: str, lines: dict[str, int], root: type | None = None):
        self.file = file
        self.lines = lines
        self.root = root
        self.problems: list[Problem] = []

    def elsewhere(self, key: str, prefix: str) -> str | None:
        """Where a key unknown under `prefix` does exist: `learning_rate` at the top → `train.learning_rate`."""
        if self.root is None:
            return None
        hints = typing.get_type_hints(self.root)
        homes = [f.name for f in dataclasses.fields(self.root)
                 if dataclasses.is_dataclass(hints[f.name]) and f.name != prefix
                 and key in {g.name for g in dataclasses.fields(hints[f.name])}]
        if not prefix and key in {f.name for f in dataclasses.fields(self.root)}:
            return None
        if prefix and "." not in prefix and key in {f.name for f in dataclasses.fields(self.root)}:
            return key  # a top-level key written inside a section
        return f"{homes[0]}.{key}" if len(homes) == 1 else None

    def problem(self, key: str, message: str) -> None:
        probe = re.sub(r"\[\d+\]$", "", key)
        line = self.lines.get(probe)
        while line is None and "." in probe and "[" not in probe:  # fall back to the enclosing table's line
            probe = probe.rsplit(".", 1)[0]
            line = self.lines.get(probe)
        self.problems.append(Problem(self.file, line, key, message))

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        if not isinstance(data, dict):
            self.problem(prefix, f"must be a table, got {_describe(data)}")
            try:
                return cls()
            except TypeError:  # a table with required keys (a concept, a sample prompt) has no default
                return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else key
            f = fields.get(key)
            if f is None:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                home = None if close or "." in prefix else self.elsewhere(key, prefix)
                if home:
                    where = f"in [{home.split('.')[0]}]" if "." in home else "at the top of the file, before any [section]"
                    hint = f"; it belongs {where}: {home}"
                else:
                    hint = f"; did you mean '{close[0]}'?" if close else f"; accepted keys: {', '.join(sorted(fields))}"
                self.problem(dotted, f"unknown key{hint}")
                continue
            ok, converted = self.convert(hints[key], value, dotted, f.metadata)
            if ok or (dataclasses.is_dataclass(hints[key]) and converted is not None):
                # A section with problems still carries its good values, so cross-field checks
                # (`check()`) see what the user wrote and every problem is reported in one pass.
                kwargs[key] = converted
        for name, f in fields.items():
            if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
                if name not in data:
                    self.problem(f"{prefix}.{name}" if prefix else name, "is required")
        try:
            obj = cls(**kwargs)
        except TypeError:
            return None
        check = getattr(obj, "check", None)
        if check is not None:
            for key, message in check():
                self.problem(f"{prefix}.{key}" if prefix else key, message)
        return obj

    def convert(self, tp: Any, value: Any, key: str, meta: Any) -> tuple[bool, Any]:
        origin = get_origin(tp)
        shown = _show(value)
        if dataclasses.is_dataclass(tp):
            if hasattr(tp, "from_string"):
                if isinstance(value, str):
                    return True, tp.from_string(value)
                if not isinstance(value, dict):
                    self.problem(key, f"= {shown}: must be a string or a table, got {_describe(value)}")
                    return False, None
            before = len(self.problems)
            obj = self.build(tp, value, key)
            return len(self.problems) == before, obj
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if value is None and len(args) < len(get_args(tp)):
                return True, None
            for a in args:  # first arm that accepts the value without problems
                trial = _Builder(self.file, self.lines, self.root)
                ok, conv = trial.convert(a, value, key, meta)
                if ok and not trial.problems:
                    return True, conv
            return self.convert(args[0], value, key, meta)
        if origin is Literal:
            choices = get_args(tp)
            if value not in choices:
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(key, f"= {shown}: must be one of {', '.join(repr(c) for c in choices)}{hint}")
                return False, None
            return True, value
        if origin in (list, tuple):
            if not isinstance(value, list):
                self.problem(key, f"= {shown}: must be a list, got {_describe(value)}")
                return False, None
            (item_tp, *_) = get_args(tp) or (Any,)
            out, ok = [], True
            for i, item in enumerate(value):
                good, conv = self.convert(item_tp, item, f"{key}.{i}" if dataclasses.is_dataclass(item_tp) else f"{key}[{i}]", meta)
                ok &= good
                out.append(conv)
            return ok, out
        if origin is dict:
            if not isinstance(value, dict):
                self.problem(key, f"= {shown}: must be a table, got {_describe(value)}")
                return False, None
            _, val_tp = get_args(tp)
            out, ok = {}, True
            for k, v in value.items():
                good, conv = self.convert(val_tp, v, f"{key}.{k}", meta)
                ok &= good
                out[k] = conv
            return ok, out
        if tp is Any:
            return True, value
        if tp is bool:
            if not isinstance(value, bool):
                self.problem(key, f"= {shown}: must be true or false")
                return False, None
            return True, value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    self.problem(key, f"= {shown}: must be a whole number")
                    return False, None
            return self.check_range(key, value, meta)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.problem(key, f"= {shown}: must be a number")
                return False, None
            if not math.isfinite(value):
                self.problem(key, f"= {shown}: must be a finite number")
                return False, None
            ok, _ = self.check_range(key, value, meta)
            return ok, float(value)
        if tp is str:
            if not isinstance(value, str):
                self.problem(key, f"= {shown}: must be a string, got {_describe(value)}")
                return False, None
            choices = meta.get("choices") if meta else None
            if choices and value not in choices:
                self.problem(key, f"= {shown}: must be one of {', '.join(map(repr, choices))}")
                return False, None
            return True, value
        return True, value

    def check_range(self, key: str, value: float, meta: Any) -> tuple[bool, Any]:
        meta = meta or {}
        lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
        if gt is not None and not value > gt:
            self.problem(key, f"= {_show(value)}: must be > {gt:g}")
            return False, None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                self.problem(key, f"= {_show(value)}: must be between {lo:g} and {hi:g}")
            elif lo is not None:
                self.problem(key, f"= {_show(value)}: must be >= {lo:g}")
            else:
                self.problem(key, f"= {_show(value)}: must be <= {hi:g}" + (f" and > {gt:g}" if gt is not None else ""))
            return False, None
        return True, value


def from_dict(cls: type, data: dict[str, Any], *, file: str, lines: dict[str, int] | None = None) -> Any:
    """Build `cls` from parsed TOML, raising ConfigError with every problem found."""
    b = _Builder(file, lines or {}, cls)
    obj = b.build(cls, data, "")
    if b.problems:  # in file order: --set overrides (line 0) first, problems with no line last
        raise ConfigError(sorted(b.problems, key=lambda p: (p.line is None, p.line or 0)))
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree → plain TOML-writable data (None values dropped: TOML has no null)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = to_dict(getattr(obj, f.name))
            if v is not None:
                out[f.name] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) < 60 else repr(value[:57] + "...")
    if isinstance(value, (dict, list)):
        return _describe(value)
    return f"{value}"


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Reference docs


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a).replace("'", '"') for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "string or table" if hasattr(tp, "from_string") else "table"  # a bare string is its short form
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def default_repr(f: dataclasses.Field) -> str:
    import tomli_w

    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    if value is None:
        return "(unset)"
    value = to_dict(value)
    if isinstance(value, list):  # inline: tomli_w puts one item a line, which breaks the Markdown table row
        return "[" + ", ".join(tomli_w.dumps({"x": v}).split("=", 1)[1].strip() for v in value) + "]"
    return tomli_w.dumps({"x": value}).split("=", 1)[1].strip()


def render_reference(cls: type, title: str, intro: str) -> str:
    """Markdown reference of a dataclass tree: one table per TOML section."""
    out = [f"# {title}", "", intro, ""]

    def section(c: type, prefix: str) -> None:
        hints = typing.get_type_hints(c)
        rows, subs = [], []
        for f in dataclasses.fields(c):
            tp = hints[f.name]
            item = get_args(tp)[0] if get_origin(tp) in (list, tuple) and get_args(tp) else None
            if dataclasses.is_dataclass(tp):
                subs.append((tp, f"{prefix}{f.name}", f.metadata.get("help", ""), False))
                continue
            if item is not None and dataclasses.is_dataclass(item):
                subs.append((item, f"{prefix}{f.name}", f.metadata.get("help", ""), True))
            meta = f.metadata
            accepted = []
            if meta.get("choices"):
                accepted.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
            if meta.get("gt") is not None:
                accepted.append(f"> {meta['gt']:g}")
            if meta.get("min") is not None:
                accepted.append(f">= {meta['min']:g}")
            if meta.get("max") is not None:
                accepted.append(f"<= {meta['max']:g}")
            help_text = meta.get("help", "").replace("|", "\\|").replace("\n", " ")
            acc = f" ({'; '.join(accepted)})" if accepted else ""
            shown_type = type_name(tp).replace("|", "\\|")
            rows.append(f"| `{f.name}` | {shown_type} | `{default_repr(f)}` | {help_text}{acc} |")
        if rows:
            out.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for sub, name, help_text, is_array in subs:
            header = f"[[{name}]]" if is_array else f"[{name}]"
            out.extend([f"## `{header}`", "", help_text, ""] if help_text else [f"## `{header}`", ""])
            section(sub, f"{name}.")

    out.extend(["## top level", ""])
    section(cls, "")
    return "\n".join(out).rstrip() + "\n"
