"""Dead letters that drain: a change Genesys rejected permanently is retried when it is due.

A dead letter (`dead_letters` in the sync state) keeps the change's key, CRM version, operation,
the platform's status, code and reason, its window and the hash of the mapping it was built with
(`CrmResource.mapping_hash`).
It is due again when
- the CRM row changed: its new version lands in a later window, which sends it like any change;
- the mapping changed (`mapping_hash` differs from the current mapping's): the drain re-runs the
  letter's window, which rebuilds the change with the new mapping;
- a person asks: `dead_letters_job` with run config (`keys`, `codes`, `windows`, or all) marks
  the letters, and the drain re-runs their windows.
A re-run of a window re-sends exactly what state does not hold yet (its dead-lettered changes
among them) and nothing else. Every `genesys_sync` run then deletes the letters whose change has
taken effect (`SyncStateStore.clear_resolved_dead_letters`) and stamps the window's remaining
letters with the mapping they were tried with. The `dead_letters` check on `genesys_sync` shows
them grouped by reason with counts, for the window and for all windows.
"""

import dagster as dg
from pydantic import Field

from crm_genesys.defs.automation import RetryPolicy, decide, sync_job, window_history
from crm_genesys.defs.resources import CrmResource, SyncStateResource
from crm_genesys.defs.review import frame_table

DRAIN_TAG = "crm_genesys/dead_letter_drain"


class DeadLetterRetryConfig(dg.Config):
    """Which dead letters to retry; with nothing given, every one (`all: true` says so)."""

    all: bool = Field(default=False, description="retry every dead letter")
    keys: list[str] = Field(default_factory=list, description="business keys to retry")
    codes: list[str] = Field(
        default_factory=list, description="the platform's error codes to retry, e.g. invalid.value"
    )
    windows: list[str] = Field(default_factory=list, description="windows whose letters to retry")


@dg.op(description="Mark dead letters for a retry; the drain sensor re-runs their windows.")
def request_dead_letter_retry(
    context: dg.OpExecutionContext, config: DeadLetterRetryConfig, state: SyncStateResource
) -> dg.Output[int]:
    if not (config.all or config.keys or config.codes or config.windows):
        raise dg.Failure(
            description=(
                "say which dead letters to retry: keys, codes or windows in run config, or "
                "all: true for every one"
            ),
            allow_retries=False,
        )
    with state.store() as store:
        marked = store.request_dead_letter_retry(
            keys=config.keys or None, codes=config.codes or None, windows=config.windows or None
        )
        summary = store.dead_letter_summary()
    context.log.info(f"{marked} dead letter(s) marked for a retry")
    return dg.Output(
        marked,
        metadata={"marked": marked, "open_dead_letters": frame_table(summary.astype(str))},
    )


@dg.job(description="Ask for a retry of dead letters (by key, error code or window, or all).")
def dead_letters_job() -> None:
    request_dead_letter_retry()


@dg.sensor(
    job=sync_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def drain_dead_letters(
    context: dg.SensorEvaluationContext, crm: CrmResource, state: SyncStateResource
) -> dg.SensorResult:
    """Re-runs the windows whose dead letters are due (the mapping changed, or a person asked);
    never a window with a run in progress."""
    current = crm.mapping_hash()
    with state.store() as store:
        due = store.due_dead_letters(current)
    policy = RetryPolicy.from_settings()
    requests = []
    for window, reasons in due.items():
        if decide(window_history(context.instance, window, policy), policy, 0).action == "busy":
            continue
        why = ",".join(reasons)
        context.log.info(f"window {window}: dead letters due ({why}); re-running it")
        requests.append(
            dg.RunRequest(
                partition_key=window,
                run_key=f"drain:{window}:{current[:12]}:{why}",
                tags={DRAIN_TAG: why},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else "no dead letter is due",
    )
