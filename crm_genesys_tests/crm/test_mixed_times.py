"""The demo CRM and its activity simulator with `mixed_times`: the same instants written every
which way, and the extract still windows them exactly."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from crm_genesys.contacts.keys import crm_versions
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.contacts.normalize import normalize
from crm_genesys.crm.demo import DemoMeta, generate_demo_crm
from crm_genesys.crm.instants import parse_instants
from crm_genesys.crm.simulate import simulate_activity
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.settings import DEMO_MAPPING
from crm_genesys_tests.oracle import expected_keys

from .conftest import NOW, rows_of

ROWS = 3_000
# The demo's mapping says its times carry no offset; mixed ones do (up to +05:30).
MAPPING = load_mapping(DEMO_MAPPING)
MAPPING = MAPPING.model_copy(
    update={"source": MAPPING.source.model_copy(update={"max_offset_hours": 14})}
)
SHAPES = {
    "demo": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}",
    "iso": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}",
    "zulu": r".*Z",
    "whole_seconds": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
    "plus_two": r".*\+02:00",
    "minus_five": r".*-0500",
    "plus_five_thirty": r".*\+05:30",
}


def shape(text: str) -> str:
    return next(name for name, pattern in SHAPES.items() if re.fullmatch(pattern, text))


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, DemoMeta]]:
    """The same demo CRM twice: in the demo's own time format, and in mixed ones."""
    folder = tmp_path_factory.mktemp("mixed")
    plain, mixed = folder / "plain.sqlite", folder / "mixed.sqlite"
    meta = generate_demo_crm(plain, rows=ROWS, seed=11, now=NOW, windows=6)
    assert generate_demo_crm(mixed, rows=ROWS, seed=11, now=NOW, windows=6, mixed_times=True) == (
        DemoMeta(**{**meta.__dict__, "mixed_times": True})
    )
    yield plain, mixed, meta


def test_mixed_times_hold_the_same_instants_in_every_style(
    twins: tuple[Path, Path, DemoMeta],
) -> None:
    plain, mixed = rows_of(twins[0]), rows_of(twins[1])
    styles = Counter(shape(r["modified_at"]) for r in mixed)
    assert set(styles) == set(SHAPES) and min(styles.values()) > ROWS // 20
    was = parse_instants([r["modified_at"] for r in plain]).tolist()
    now = parse_instants([r["modified_at"] for r in mixed]).tolist()
    for row, twin, was_us, now_us in zip(plain, mixed, was, now, strict=True):
        assert {k: v for k, v in row.items() if k != "modified_at"} == {
            k: v for k, v in twin.items() if k != "modified_at"
        }
        # Only rows written in whole seconds lose their microseconds.
        whole = shape(twin["modified_at"]) == "whole_seconds"
        assert now_us == (was_us - was_us % 1_000_000 if whole else was_us)


def test_the_extract_windows_mixed_times_exactly(twins: tuple[Path, Path, DemoMeta]) -> None:
    plain_path, mixed_path, meta = twins
    mapping = MAPPING
    plain = SqlCrmSource.from_mapping(f"sqlite:///{plain_path}", mapping)
    mixed = SqlCrmSource.from_mapping(f"sqlite:///{mixed_path}", mapping)
    seen = 0
    for start, end in meta.generated_windows():
        a = plain.extract(start, end, mapping.source_columns())
        b = mixed.extract(start, end, mapping.source_columns())
        assert sorted(a["id"]) == sorted(b["id"])
        versions = crm_versions(b["modified_at"]).tolist()
        assert versions == sorted(versions)
        # The pipeline keeps the same contacts, and the oracle agrees on both.
        keys_a = set(normalize(a, mapping, workers=1).contacts["business_key"])
        keys_b = set(normalize(b, mapping, workers=1).contacts["business_key"])
        assert keys_a == keys_b
        assert expected_keys(plain_path, start, end) == expected_keys(mixed_path, start, end)
        seen += len(b)
    assert seen == ROWS
    assert mixed.time_report(meta.first_window_start, NOW).ok
    plain.dispose()
    mixed.dispose()


def test_the_simulator_writes_mixed_times_that_move_versions_forward(
    twins: tuple[Path, Path, DemoMeta], tmp_path: Path
) -> None:
    path = tmp_path / "crm.sqlite"
    path.write_bytes(twins[1].read_bytes())
    now = NOW + timedelta(hours=1)
    summary = simulate_activity(
        path, now=now, seed=3, updates=60, deletes=10, reindex=30, creates=30
    )
    source = SqlCrmSource(f"sqlite:///{path}", "contacts", "modified_at", "is_deleted", "id")
    frame = source.extract(summary.window_start, summary.window_end)
    assert len(frame) == summary.rows_touched
    assert len({shape(t) for t in frame["modified_at"]}) >= 5
    # Every touched key's new version is its latest: the window's row wins in normalize.
    mapping = MAPPING
    everything = rows_of(path)
    result = normalize(
        source.extract(summary.window_start - timedelta(days=1), summary.window_end),
        mapping,
        workers=1,
    )
    latest = result.contacts.set_index("business_key")["crm_version"]
    window_us = parse_instants([r["modified_at"] for r in everything]).tolist()
    by_key: dict[str, int] = {}
    for row, us in zip(everything, window_us, strict=True):
        key = (row["account_number"] or "").strip()
        if key:
            by_key[key] = max(by_key.get(key, us), us)
    for key in summary.updated_keys:
        assert latest[key] == by_key[key]
        assert summary.window_start.timestamp() * 1e6 <= latest[key]
    source.dispose()
