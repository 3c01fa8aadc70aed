"""Result matching and batch planning, property-tested: results in any order, failures placed
by key or errorIndexes, never by position."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.genesys.bulk import encode_body, entities_body, match_bulk_results, plan_batches

SRC = "src"


def add_entity(key: str) -> dict[str, Any]:
    return {"lastName": key, "externalIds": [{"externalSource": {"id": SRC}, "value": key}]}


@st.composite
def add_scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any], list[bool]]:
    n = draw(st.integers(min_value=1, max_value=40))
    keys = draw(st.lists(st.text(min_size=1, max_size=8), min_size=n, max_size=n, unique=True))
    fails = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    echo = draw(st.booleans())  # does the failure echo the entity?
    entities = [add_entity(k) for k in keys]
    results = []
    for i, (entity, failed) in enumerate(zip(entities, fails, strict=True)):
        if failed:
            error: dict[str, Any] = {"code": f"bad.{i}", "status": 400, "message": "no"}
            if echo:
                error["entity"] = entity
            results.append({"success": False, "status": 400, "error": error})
        else:
            results.append(
                {
                    "id": f"id-{i}",
                    "success": True,
                    "status": 200,
                    "entity": {**entity, "id": f"id-{i}"},
                }
            )
    seed = draw(st.integers(min_value=0, max_value=2**16))
    random.Random(seed).shuffle(results)
    body = {
        "results": results,
        "errorCount": sum(fails),
        "errorIndexes": [i for i, f in enumerate(fails) if f],
    }
    return entities, body, fails


@given(add_scenarios())
@settings(max_examples=200, deadline=None)
def test_add_results_land_on_their_entities_whatever_the_order(
    scenario: tuple[list[dict[str, Any]], dict[str, Any], list[bool]],
) -> None:
    entities, body, fails = scenario
    results = match_bulk_results("add", entities, body)
    assert len(results) == len(entities)
    for i, (result, failed) in enumerate(zip(results, fails, strict=True)):
        assert result.success is not failed
        if failed:
            assert result.status == 400 and not result.retryable and not result.outcome_unknown
            # Failures echoing their entity carry their own code; the others are placed by
            # errorIndexes and all look alike, so any assignment among them is equivalent.
            assert result.error_code is not None and result.error_code.startswith("bad.")
            if any("entity" in r.get("error", {}) for r in body["results"]):
                assert result.error_code == f"bad.{i}"
        else:
            assert result.contact_id == f"id-{i}"


@given(
    st.lists(st.uuids().map(str), min_size=1, max_size=30, unique=True),
    st.randoms(use_true_random=False),
)
def test_remove_404_is_success_and_update_404_is_failure(ids: list[str], rng: Any) -> None:
    gone = {i for i in ids if rng.random() < 0.3}
    results = [
        {"id": i, "success": False, "status": 404, "error": {"code": "not.found", "status": 404}}
        if i in gone
        else {"id": i, "success": True, "status": 200}
        for i in ids
    ]
    rng.shuffle(results)
    entities = [{"id": i} for i in ids]
    removed = match_bulk_results("remove", entities, {"results": results})
    assert [r.contact_id for r in removed] == ids
    assert all(r.success for r in removed)
    assert [r.status for r in removed] == [404 if i in gone else 200 for i in ids]
    updated = match_bulk_results("update", entities, {"results": results})
    assert [r.success for r in updated] == [i not in gone for i in ids]
    assert all(r.status == 404 and not r.retryable for r in updated if not r.success)


def test_missing_results_are_unknown_for_add_and_retryable_for_update() -> None:
    entities = [add_entity("a"), add_entity("b")]
    body = {"results": [{"id": "x", "success": True, "entity": entities[1]}]}
    added = match_bulk_results("add", entities, body)
    assert not added[0].success and added[0].outcome_unknown and added[0].retryable
    assert added[1].success and added[1].contact_id == "x"
    updated = match_bulk_results("update", [{"id": "1"}, {"id": "2"}], {"results": []})
    assert all(r.retryable and not r.outcome_unknown and r.error_code == "result.missing"
               for r in updated)  # fmt: skip


def test_item_level_5xx_on_add_is_outcome_unknown() -> None:
    entities = [add_entity("a")]
    body = {"results": [{"success": False, "status": 500, "error": {"entity": entities[0]}}]}
    [result] = match_bulk_results("add", entities, body)
    assert result.outcome_unknown and result.retryable


def test_duplicate_ids_in_one_request_each_get_a_result() -> None:
    entities = [{"id": "same"}, {"id": "same"}]
    body = {"results": [{"id": "same", "success": True}, {"id": "same", "success": True}]}
    assert all(r.success for r in match_bulk_results("update", entities, body))


@given(
    st.lists(st.text(max_size=300), min_size=0, max_size=120),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1024, max_value=20_000),
)
@settings(max_examples=100, deadline=None)
def test_plan_batches_keeps_order_count_and_byte_limits(
    titles: list[str], batch_size: int, max_bytes: int
) -> None:
    entities = [{"title": t, "id": str(i)} for i, t in enumerate(titles)]
    batches = plan_batches(entities, batch_size=batch_size, max_bytes=max_bytes)
    encoded = [encode_body(e) for e in entities]
    sized = [len(e) for e in encoded]
    assert plan_batches(entities, batch_size=batch_size, max_bytes=max_bytes, sizes=sized) == (
        batches
    )
    assert [i for b in batches for i in b] == list(range(len(entities)))
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        body = encode_body({"entities": [entities[i] for i in batch]})
        # The client joins the entities it encoded once: the same bytes as encoding the whole.
        assert entities_body([encoded[i] for i in batch]) == body
        assert len(body) <= max_bytes or len(batch) == 1
