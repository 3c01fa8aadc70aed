"""What a window sync through the command line leaves on disk (`disk_scan.scan_deployment`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys_tests.cli_deployment import Deployment, start_deployment
from crm_genesys_tests.disk_scan import contact_values_of, genesys_values, scan_deployment

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOW = "2026-11-29-11:00"


@pytest.fixture
def deployment(tmp_path: Path):
    deployment = start_deployment(tmp_path)
    generate_demo_crm(
        deployment.crm_path, rows=300, seed=8, now=NOW, windows=2, window=timedelta(hours=1)
    )
    yield deployment
    deployment.stop()


def test_a_window_sync_leaves_no_secret_no_token_and_contact_data_only_at_home(
    deployment: Deployment,
) -> None:
    assert deployment.cli("schema", "push").returncode == 0
    assert deployment.sync(WINDOW) == 0, deployment.output()[-3000:]
    sent = genesys_values(deployment)
    assert sent, "nothing reached the emulator"

    report = scan_deployment(deployment, sent + contact_values_of(deployment.crm_path))
    assert report.files > 10
    assert "data/sync_state.sqlite" in report.contact_files or any(
        f.startswith("emulator/") for f in report.contact_files
    )
    assert not report.secrets, report.secrets
    assert not report.tokens, report.tokens
    assert not report.misplaced_contacts, report.misplaced_contacts
    assert not report.readable_by_others, report.readable_by_others

    # The scan sees what it must catch: a planted secret, contact value and wide file.
    planted = deployment.dagster_home / "storage" / "planted.log"
    planted.parent.mkdir(exist_ok=True)
    planted.write_text(f"secret={deployment.env()['GENESYS_CLIENT_SECRET']} {sent[0]}")
    planted.chmod(0o644)
    seen = scan_deployment(deployment, sent)
    assert seen.secrets == ["dagster_home/storage/planted.log"]
    assert seen.misplaced_contacts == ["dagster_home/storage/planted.log"]
