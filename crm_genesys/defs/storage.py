"""Where a window's intermediate frames wait between steps: Parquet, owner-only, not for long.

`FrameStore` is the location (a directory or any fsspec URL, e.g. `s3://bucket/prefix`, through
`universal_pathlib`, so runs on several machines share it) and the retention rules;
`FramesIOManager` is the IO manager of the sync assets. An output is a directory
`<base>/<asset>/<window>/` holding one Parquet file per frame and `meta.json` with the small
values beside them; nothing is pickled, and nothing but the three allowed types is rebuilt:
a DataFrame (`crm_contacts`), a `NormalizationResult` and a `ChangeSet`.

On a local filesystem directories are created 0700 and files 0600 (an object store's access is
its bucket policy). A window's frames are removed when its `genesys_sync` succeeds, unless
`CRM_GENESYS_FRAMES_RETENTION_HOURS` keeps them longer; frames of windows that never succeed are
removed after `CRM_GENESYS_FRAMES_MAX_AGE_HOURS` (or the retention, when one is set). Both run
at the end of each successful window (`FrameStore.after_success`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import infer_dtype
from upath import UPath

from crm_genesys import settings
from crm_genesys.contacts.diff import ChangeSet
from crm_genesys.contacts.normalize import NormalizationReport, NormalizationResult

# The assets whose outputs are stored (genesys_sync returns no value).
STORED_ASSETS = ("crm_contacts", "normalized_contacts", "contact_changes")
META = "meta.json"
# The only types rebuilt from storage: a stored name never imports anything else.
_TYPES: dict[str, type] = {
    "NormalizationResult": NormalizationResult,
    "ChangeSet": ChangeSet,
    "NormalizationReport": NormalizationReport,
}
# Object columns pyarrow stores as they are; any other mix is stored as JSON text.
_ARROW_SAFE = {"string", "empty", "integer", "floating", "boolean", "bytes", "mixed-integer-float"}


def _is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


class FrameStore(dg.ConfigurableResource):
    """The frames' location and retention (see the module docstring)."""

    base_url: str
    retention_hours: int = 0
    max_age_hours: int = 72

    @classmethod
    def from_env(cls) -> FrameStore:
        return cls(
            base_url=settings.frames_url(),
            retention_hours=int(settings.get("CRM_GENESYS_FRAMES_RETENTION_HOURS")),
            max_age_hours=int(settings.get("CRM_GENESYS_FRAMES_MAX_AGE_HOURS")),
        )

    @property
    def base(self) -> UPath:
        return UPath(self.base_url)

    def window_dirs(self, window: str) -> list[UPath]:
        return [self.base / asset / window for asset in STORED_ASSETS]

    def files(self) -> list[UPath]:
        """Every stored file (for reports and tests)."""
        if not self.base.exists():
            return []
        return sorted(p for p in self.base.rglob("*") if p.is_file())

    def discard(self, window: str) -> int:
        """Remove the window's frames; how many output directories were removed."""
        removed = 0
        for path in self.window_dirs(window):
            if path.exists():
                _remove_tree(path)
                removed += 1
        return removed

    def sweep(self, now: float | None = None) -> int:
        """Remove every output older than its limit: `retention_hours` when set, else
        `max_age_hours` (frames of windows that never succeeded); how many were removed."""
        moment = time.time() if now is None else now
        limit = (self.retention_hours or self.max_age_hours) * 3600
        removed = 0
        for asset in STORED_ASSETS:
            root = self.base / asset
            for path in root.iterdir() if root.exists() else []:
                written = _written_at(path)
                if written is not None and moment - written > limit:
                    _remove_tree(path)
                    removed += 1
        return removed

    def after_success(self, window: str, now: float | None = None) -> int:
        """What a successful window does: its frames go (unless retention keeps them), and so
        do outputs past their limit; how many outputs were removed."""
        removed = self.discard(window) if self.retention_hours == 0 else 0
        return removed + self.sweep(now)


class FramesIOManager(dg.ConfigurableIOManagerFactory):
    """The sync assets' IO manager: frames as Parquet in `store` (see the module docstring)."""

    store: FrameStore

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetFrames:
        return ParquetFrames(self.store.base)


class ParquetFrames(dg.UPathIOManager):
    """Each output a directory of Parquet files plus `meta.json`."""

    extension = ""

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if path.exists():
            _remove_tree(path)
        _make_dirs(path)
        files: dict[str, bytes] = {}
        meta = {"value": _encode(obj, "", files), "written_at": time.time()}
        for name, data in files.items():
            _write(path / name, data)
        _write(path / META, json.dumps(meta, sort_keys=True).encode())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        meta = json.loads((path / META).read_bytes())
        return _decode(meta["value"], path)


# ---------------------------------------------------------------- encoding


def _encode(value: Any, name: str, files: dict[str, bytes]) -> Any:
    """JSON for `value`; each DataFrame inside it becomes a Parquet file in `files`."""
    if isinstance(value, pd.DataFrame):
        filename = f"{name or 'frame'}.parquet"
        files[filename], layout = _frame_bytes(value)
        return {"__frame__": filename, **layout}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = type(value).__name__
        if _TYPES.get(kind) is not type(value):
            raise TypeError(f"the frames IO manager does not store {type(value)!r}")
        fields = {
            f.name: _encode(getattr(value, f.name), f"{name}.{f.name}".strip("."), files)
            for f in dataclasses.fields(value)
        }
        return {"__type__": kind, "fields": fields}
    if isinstance(value, dict):
        return {"__dict__": [[k, _encode(v, name, files)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v, name, files) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"the frames IO manager cannot store a {type(value).__name__}")


def _decode(data: Any, path: UPath) -> Any:
    if isinstance(data, list):
        return [_decode(v, path) for v in data]
    if not isinstance(data, dict):
        return data
    if "__frame__" in data:
        return _frame_from(pq.read_table(io.BytesIO((path / data["__frame__"]).read_bytes())), data)
    if "__dict__" in data:
        return {k: _decode(v, path) for k, v in data["__dict__"]}
    cls = _TYPES[data["__type__"]]
    return cls(**{k: _decode(v, path) for k, v in data["fields"].items()})


def _frame_bytes(frame: pd.DataFrame) -> tuple[bytes, dict[str, Any]]:
    """Parquet of `frame` with positional column names (any names, duplicates too) and what
    rebuilds it exactly: names, dtypes, the columns stored as JSON, a non-default index."""
    arrays, json_columns = [], []
    for pos in range(frame.shape[1]):
        column = frame.iloc[:, pos]
        if column.dtype == object and infer_dtype(column, skipna=True) not in _ARROW_SAFE:
            json_columns.append(pos)
            values = [None if _missing(v) else json.dumps(v, default=str) for v in column]
            arrays.append(pa.array(values, type=pa.string()))
        else:
            arrays.append(pa.Array.from_pandas(column))
    index = frame.index
    default_index = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    names = [f"c{pos}" for pos in range(frame.shape[1])]
    if not default_index:
        arrays.append(pa.Array.from_pandas(index.to_series(index=None)))
        names.append("index")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), buffer)
    layout = {
        "columns": [c if isinstance(c, str | int) else str(c) for c in frame.columns],
        "dtypes": [str(t) for t in frame.dtypes],
        "json_columns": json_columns,
        "index": not default_index,
    }
    return buffer.getvalue(), layout


def _frame_from(table: pa.Table, layout: dict[str, Any]) -> pd.DataFrame:
    json_columns = set(layout["json_columns"])
    series = []
    for pos, dtype in enumerate(layout["dtypes"]):
        column = table.column(f"c{pos}")
        if pos in json_columns:
            values = [None if v is None else json.loads(v) for v in column.to_pylist()]
            series.append(pd.Series(values, dtype=object))
        elif dtype == "object":
            # Python values as they were (an int column with nulls stays ints, not floats).
            series.append(pd.Series(column.to_pylist(), dtype=object))
        else:
            series.append(column.to_pandas().astype(dtype))
    frame = pd.concat(series, axis=1) if series else pd.DataFrame(index=range(table.num_rows))
    frame.columns = pd.Index(layout["columns"], dtype=object)
    if layout["index"]:
        frame.index = pd.Index(table.column("index").to_pandas())
    return frame


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


# ---------------------------------------------------------------- files


def _make_dirs(path: UPath) -> None:
    if not _is_local(path):
        path.mkdir(parents=True, exist_ok=True)
        return
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        os.mkdir(directory.path, 0o700)
        os.chmod(directory.path, 0o700)  # whatever the umask


def _write(path: UPath, data: bytes) -> None:
    if not _is_local(path):
        path.write_bytes(data)
        return
    fd = os.open(path.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps no wider mode
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _written_at(path: UPath) -> float | None:
    meta = path / META
    try:
        return float(json.loads(meta.read_bytes())["written_at"])
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return None


def _remove_tree(path: UPath) -> None:
    path.fs.rm(path.path, recursive=True)
