"""Guards on destructive changes: pure functions that judge a batch of destructive changes before
anything is sent, and say in words a person can act on why it was stopped and how to let it go.

A guard never guesses: it is given the counts, the configured limit and what a person confirmed
(in run config), and returns a verdict. Callers raise `BreakerTripped` with the verdict's
`refusal()` when it is not allowed; nothing has been sent at that point.

- `judge_deletes` — the mass-delete breaker: deleting more than `max_share` of the live contacts
  (`CRM_GENESYS_MAX_DELETE_SHARE`, default 5 %) needs the exact count confirmed in run config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SAMPLES = 10


class BreakerTripped(RuntimeError):
    """A guard refused a destructive change; the message names the counts, samples and the run
    config key that confirms it. Nothing was sent."""

    def __init__(self, verdict: MassDelete) -> None:
        self.verdict = verdict
        super().__init__(verdict.refusal())


@dataclass(frozen=True)
class MassDelete:
    """The mass-delete breaker's verdict on deleting `deletes` of `live` contacts.

    `confirmed` is the count a person confirmed (0: none); a confirmation holds only for exactly
    the count it names, so a run that would delete more than was reviewed is stopped again.
    `samples` are already masked. `what` says which deletes these are (for the message) and
    `config_key` where the confirmation goes.
    """

    what: str
    deletes: int
    live: int
    max_share: float
    confirmed: int
    samples: tuple[str, ...]
    config_key: str

    @property
    def share(self) -> float:
        return self.deletes / self.live if self.live else (1.0 if self.deletes else 0.0)

    @property
    def over_limit(self) -> bool:
        return self.deletes > 0 and self.share > self.max_share

    @property
    def allowed(self) -> bool:
        return not self.over_limit or self.confirmed == self.deletes

    def refusal(self) -> str:
        """Why the deletes were refused and how to confirm them ('' when allowed)."""
        if self.allowed:
            return ""
        shown = ", ".join(self.samples[:SAMPLES]) or "none"
        wrong = (
            f" (the run config confirmed {self.confirmed}, which is not this count)"
            if self.confirmed
            else ""
        )
        return (
            f"mass-delete breaker: {self.what} would delete {self.deletes} of {self.live} live "
            f"contacts ({self.share:.1%}), more than the {self.max_share:.1%} allowed "
            f"(CRM_GENESYS_MAX_DELETE_SHARE){wrong}. Nothing was deleted. Samples: {shown}. "
            f"If these deletes are intended, re-run with `{self.config_key}: {self.deletes}` in "
            "the run config."
        )

    def as_metadata(self) -> dict[str, float | int | bool]:
        return {
            "deletes": self.deletes,
            "live": self.live,
            "share": round(self.share, 6),
            "max_share": self.max_share,
            "confirmed": self.confirmed,
            "allowed": self.allowed,
        }


def judge_deletes(
    what: str,
    deletes: int,
    live: int,
    *,
    max_share: float,
    confirmed: int,
    samples: Sequence[str],
    config_key: str,
) -> MassDelete:
    """The mass-delete breaker (see `MassDelete`): `deletes` of the `live` contacts the state
    holds may go when they are at most `max_share` of them, or when `confirmed == deletes`."""
    if deletes < 0 or live < 0 or confirmed < 0:
        raise ValueError("counts must not be negative")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError("max_share must be between 0 and 1")
    return MassDelete(
        what=what,
        deletes=deletes,
        live=live,
        max_share=max_share,
        confirmed=confirmed,
        samples=tuple(samples[:SAMPLES]),
        config_key=config_key,
    )
