"""The short chaos run (`crm_genesys_tests.chaos`): a few windows of CRM change through
`crm-genesys sync` processes against the realistic, hostile emulator server, with sync processes
SIGKILLed and re-run, a window of the first load synced after a newer one and foreign writers
between windows. Genesys must then match the independent reading of the CRM exactly."""

from __future__ import annotations

from pathlib import Path

from crm_genesys_tests.chaos import ChaosConfig, run_chaos


def test_a_short_chaos_run_ends_with_genesys_exactly_as_the_crm_says(tmp_path: Path) -> None:
    result = run_chaos(
        tmp_path, ChaosConfig(seed=1, contacts=150, windows=2, kills=3, foreign_edits=40)
    )
    table = result.table() + "\n" + "\n".join(result.problems[:20])
    assert result.windows == 4, table
    assert result.kills >= 2, table
    assert sum(result.faults.values()) > 0, table
    assert result.contacts > 100, table
    for name in result.ZEROS:
        assert getattr(result, name) == 0, table
    assert result.disk is not None and result.disk.clean, table
