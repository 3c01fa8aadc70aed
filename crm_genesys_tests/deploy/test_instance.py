"""The Dagster instance of the deployment: deploy/dagster.yaml, pools on either storage, and the
supervisor's sweep of runs left behind by a dead deployment."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.test_utils import create_run_for_test
from dagster._utils.tags import TagConcurrencyLimitsCounter

from crm_genesys_tests.conftest import InstanceFactory, PostgresServer
from deploy.supervise import INSTANCE_CONFIG, REPO, dagster_url, fail_orphaned_runs

POOL = "genesys_api"
windows = dg.HourlyPartitionsDefinition(start_date="2026-11-29-00:00")


@dg.asset(partitions_def=windows, pool=POOL)
def window_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Reports who holds the pool's slots while it runs."""
    info = context.instance.event_log_storage.get_concurrency_info(POOL)
    return dg.MaterializeResult(
        metadata={
            "claimed_by": dg.MetadataValue.json([s.run_id for s in info.claimed_slots]),
            "limit": info.limit if info.limit is not None else -1,
        }
    )


probe_job = dg.define_asset_job("probe_job", selection=[window_probe])
probe_defs = dg.Definitions(assets=[window_probe], jobs=[probe_job])


def test_a_partitioned_pool_job_runs_through_the_instance(
    make_instance: InstanceFactory, db_backend: str
) -> None:
    """Storage, pool slots and partition status all go through the instance's storage."""
    expected_storage = {"sqlite": "SqliteRunStorage", "postgresql": "PostgresRunStorage"}
    with make_instance({"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        assert type(instance.run_storage).__name__ == expected_storage[db_backend]
        assert instance.event_log_storage.supports_global_concurrency_limits
        key = "2026-11-29-10:00"
        result = probe_defs.resolve_job_def("probe_job").execute_in_process(
            partition_key=key, instance=instance
        )
        assert result.success
        [materialization] = result.asset_materializations_for_node("window_probe")
        assert materialization.partition == key
        # The step held the pool's only slot while it ran, and gave it back.
        assert materialization.metadata["claimed_by"].value == [result.run_id]
        assert materialization.metadata["limit"].value == 1
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        status = instance.get_status_by_partition(
            dg.AssetKey("window_probe"), [key, "2026-11-29-11:00"], windows
        )
        assert status == {key: dg.AssetPartitionStatus.MATERIALIZED, "2026-11-29-11:00": None}
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags["dagster/partition"] == key


@pytest.fixture
def deploy_home(tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch):
    """A DAGSTER_HOME holding deploy/dagster.yaml, its DAGSTER_PG_URL a fresh database."""
    with postgres_server.database() as name:
        monkeypatch.setenv("DAGSTER_PG_URL", dagster_url(postgres_server.database_url(name)))
        shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
        yield tmp_path


def test_deploy_instance_config_loads_and_means_what_docs_say(deploy_home: Path) -> None:
    with dg.DagsterInstance.from_config(str(deploy_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert "MONITORING" in instance.get_required_daemon_types()
        assert_one_run_per_window_and_one_genesys_slot(instance)


def test_dev_instance_config_keeps_the_same_limits(tmp_path: Path) -> None:
    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert_one_run_per_window_and_one_genesys_slot(instance)


def assert_one_run_per_window_and_one_genesys_slot(instance: dg.DagsterInstance) -> None:
    config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    queue = config.run_queue_config
    assert queue is not None
    # The next live run's process starts while the pool's slot is still held.
    assert queue.op_concurrency_slot_buffer == 1

    # One window never runs twice at once; other windows are not held back by it.
    def run(partition: str) -> dg.DagsterRun:
        return create_run_for_test(
            instance, job_name="sync_job", tags={"dagster/partition": partition}
        )

    in_progress = run("2026-11-29-10:00")
    counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, [in_progress])
    assert counter.is_blocked(run("2026-11-29-10:00"))
    assert not counter.is_blocked(run("2026-11-29-11:00"))


def test_the_sweep_fails_runs_whose_code_server_is_gone(postgres_instance: dg.DagsterInstance):
    instance = postgres_instance
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    dead_server = json.dumps({"host": "localhost", "socket": "/nonexistent/dagster-grpc.sock"})
    orphan = create_run_for_test(
        instance, status=DagsterRunStatus.STARTED, tags={GRPC_INFO_TAG: dead_server}
    )
    instance.event_log_storage.claim_concurrency_slot(POOL, orphan.run_id, "genesys_sync")
    in_process = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    assert [s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots]

    assert fail_orphaned_runs(instance) == [orphan.run_id]

    def status(run: dg.DagsterRun) -> DagsterRunStatus:
        found = instance.get_run_by_id(run.run_id)
        assert found is not None
        return found.status

    assert status(orphan) == DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
    # A run executed in process carries no code server address: not the sweep's to judge.
    assert status(in_process) == DagsterRunStatus.STARTED
    assert fail_orphaned_runs(instance) == []


def test_dagster_url_forces_psycopg2() -> None:
    assert dagster_url("postgresql://u:p@h:5/d") == "postgresql+psycopg2://u:p@h:5/d"
    assert dagster_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg2://u@h/d"
