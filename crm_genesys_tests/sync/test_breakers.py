"""The mass-delete breaker: pure judgement of counts, a limit and a confirmation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_genesys.sync.breakers import BreakerTripped, judge_deletes


def judge(deletes: int, live: int, confirmed: int = 0, share: float = 0.05):
    return judge_deletes(
        "the mirror",
        deletes,
        live,
        max_share=share,
        confirmed=confirmed,
        samples=[f"AC-{i:07d}" for i in range(deletes)],
        config_key="confirm_deletes",
    )


@given(
    deletes=st.integers(0, 10_000),
    live=st.integers(0, 10_000),
    confirmed=st.integers(0, 10_000),
    share=st.floats(0, 1),
)
def test_deletes_pass_within_the_share_or_with_the_exact_count_confirmed(
    deletes: int, live: int, confirmed: int, share: float
) -> None:
    verdict = judge(deletes, live, confirmed, share)
    within = deletes == 0 or (live > 0 and deletes / live <= share)
    assert verdict.allowed == (within or confirmed == deletes)
    assert (verdict.refusal() == "") == verdict.allowed


def test_a_refusal_names_the_counts_samples_and_how_to_confirm() -> None:
    verdict = judge(30, 100)
    message = verdict.refusal()
    assert "would delete 30 of 100 live contacts (30.0%)" in message
    assert "more than the 5.0% allowed (CRM_GENESYS_MAX_DELETE_SHARE)" in message
    assert "`confirm_deletes: 30`" in message
    # Ten samples at most, their keys masked.
    assert "AC-0****09" in message and "AC-0****10" not in message
    assert "AC-0000009" not in message
    assert "Nothing was deleted" in message
    assert str(BreakerTripped(verdict)) == message


def test_a_confirmation_of_another_count_is_refused_and_says_so() -> None:
    message = judge(30, 100, confirmed=20).refusal()
    assert "confirmed 20, which is not this count" in message
    assert judge(30, 100, confirmed=30).allowed


def test_nonsense_is_an_error() -> None:
    with pytest.raises(ValueError):
        judge(-1, 10)
    with pytest.raises(ValueError):
        judge(1, 10, share=1.5)
