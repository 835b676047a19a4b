"""Per-image metadata for templated captions: `metadata.csv` or `metadata.jsonl` with a `file_name` column.

The layout is Hugging Face's imagefolder convention: `file_name` is the image's path relative to the
folder holding the metadata file. A row whose `file_name` is only a base name also matches an image in
a subfolder, as long as that base name is unique. Values are strings (JSON numbers are written as
text, `null` as an empty string); an empty value counts as present, a missing column does not.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")


class MetadataError(Exception):
    """A metadata file that cannot be read; `str()` is `file:line: reason`."""

    def __init__(self, path: Path, line: int | None, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


@dataclass
class Metadata:
    """The rows of one metadata file, looked up by image path."""

    path: Path
    rows: dict[str, dict[str, str]] = field(default_factory=dict)  # posix file_name -> fields
    columns: list[str] = field(default_factory=list)
    _by_base: dict[str, str | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for key in self.rows:
            base = key.rsplit("/", 1)[-1]
            self._by_base[base] = None if base in self._by_base else key  # None: ambiguous

    def fields_for(self, image: str | os.PathLike) -> dict[str, str] | None:
        """The row for an image (an absolute path, or relative to the metadata file's folder)."""
        image = Path(image)
        try:
            rel = image.relative_to(self.path.parent).as_posix() if image.is_absolute() else image.as_posix()
        except ValueError:
            rel = image.name
        row = self.rows.get(rel)
        if row is None:
            key = self._by_base.get(image.name)
            row = self.rows.get(key) if key else None
        return row


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def load_metadata(path: str | os.PathLike) -> Metadata:
    """Read a metadata.csv / metadata.jsonl. Raises MetadataError naming the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MetadataError(path, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MetadataError(path, line, "not valid UTF-8") from None
    rows: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetadataError(path, n, f"invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise MetadataError(path, n, "each line must be a JSON object")
            if "file_name" not in obj:
                raise MetadataError(path, n, "no \"file_name\" in this row")
            for k in obj:
                if k not in columns:
                    columns.append(k)
            rows[_norm(obj["file_name"])] = {k: _text(v) for k, v in obj.items()}
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = list(reader.fieldnames or [])
        if "file_name" not in columns:
            raise MetadataError(path, 1, f"no \"file_name\" column (columns: {', '.join(columns) or 'none'})")
        for row in reader:
            name = row.get("file_name") or ""
            if not name.strip():
                continue
            rows[_norm(name)] = {k: (v or "") for k, v in row.items() if k is not None}
    return Metadata(path=path, rows=rows, columns=columns)


def _norm(name: object) -> str:
    s = str(name).strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def find_metadata(project_dir: str | os.PathLike, concept_folder: str = "") -> Path | None:
    """The default metadata file for a concept: one in the concept folder, else one in the project root."""
    project_dir = Path(project_dir)
    for base in ([project_dir / concept_folder] if concept_folder not in ("", ".") else []) + [project_dir]:
        for name in METADATA_NAMES:
            if (base / name).is_file():
                return base / name
    return None
