"""Settings of the emulator: the org it serves (`EmulatorConfig`), how strictly it behaves like
the platform (`RealismConfig`, with the named profiles `basic` and `realistic`), the faults it
injects (`FaultConfig`, with the named profiles `none`, `flaky` and `hostile`) and the org's
contact-schema limits (`SchemaLimits`).

The same dataclasses drive the in-process app and the HTTP server; the server's admin endpoints
read and write them as JSON: `/__emulator/faults` (`FaultConfig.to_dict()` / `from_dict()`) and
`/__emulator/settings` (`{"realism": RealismConfig.to_dict(), "schema_limits": ...}`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

from crm_genesys.emulator.clock import Clock, SystemClock

DEFAULT_CLIENT_ID = "demo-client"
DEFAULT_CLIENT_SECRET = "demo-secret"
# The admin endpoints' bearer token (a demo credential like the client's; override it).
DEFAULT_ADMIN_TOKEN = "demo-admin-token"
# Platform limit `request.bytes.max`.
MAX_REQUEST_BYTES = 512_000


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


T = TypeVar("T")


def _profile(profiles: dict[str, T], what: str, name: str) -> T:
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(sorted(profiles))
        raise ValueError(f"unknown {what} profile {name!r} (known: {known})") from None


def _from_dict(cls: Any, data: dict[str, Any], default_profile: str | None) -> Any:
    """`cls` from JSON: knobs by name (types checked), on top of a `profile` when it has them."""
    data = dict(data)
    profile = data.pop("profile", default_profile)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    hints = get_type_hints(cls)
    for name, value in data.items():
        _check_type(name, value, hints[name])
    if profile is None:
        return cls(**data)
    return cls.profile(str(profile), **data)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """JSON values must have the knob's type (an int is a float; a bool is neither)."""
    kinds = get_args(hint) or (hint,)
    allowed = tuple(k for k in kinds if isinstance(k, type)) + ((int,) if float in kinds else ())
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, allowed):
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


@dataclass(frozen=True)
class FaultConfig:
    """What goes wrong, and how often. Probabilities are per API request (token and admin
    endpoints are never faulted), drawn from a generator seeded by `(seed, request number)`, so a
    run with the same seed and the same request order meets the same faults.

    Exactly one request-level fault is chosen per request, in this order of precedence:
    drop, drop-after-write, 429, 500, 502, 503, 504 (their probabilities add up). `p_slow`,
    `latency_ms` and `p_item_failure` combine with any of them.
    """

    seed: int = 0
    p_429: float = 0.0
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_504: float = 0.0
    # Close the connection without answering, before the request is processed.
    p_drop: float = 0.0
    # Process the request (the write is applied), then close the connection without answering.
    p_drop_after_write: float = 0.0
    # Extra latency on a share of requests, uniform in [slow_ms_min, slow_ms_max].
    p_slow: float = 0.0
    slow_ms_min: float = 50.0
    slow_ms_max: float = 500.0
    # Latency added to every API request.
    latency_ms: float = 0.0
    # Per-item transient failures inside bulk add/update/remove (item not applied, retryable 503).
    p_item_failure: float = 0.0
    # Tokens stop working this many seconds after they were issued (None: never).
    revoke_tokens_after_s: float | None = None
    # Retry-After sent with injected 429 and 503 responses.
    retry_after_s: int = 1
    # Every API request whose path ends with this is refused as a whole with `refuse_status`
    # (403 missing.permissions, 400 bad.request, 404, 409 conflict...): a misconfigured org.
    refuse_path: str | None = None
    refuse_status: int = 403

    def __post_init__(self) -> None:
        if not 400 <= self.refuse_status < 500 or self.refuse_status in (401, 429):
            raise ValueError("refuse_status must be a 4xx other than 401 and 429")
        for f in dataclasses.fields(self):
            if f.name.startswith("p_"):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be within [0, 1], got {value}")
        if self.request_fault_probability() > 1.0:
            raise ValueError("the request-level fault probabilities add up to more than 1")
        if self.slow_ms_min < 0 or self.slow_ms_max < self.slow_ms_min:
            raise ValueError("need 0 <= slow_ms_min <= slow_ms_max")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def request_fault_probability(self) -> float:
        """The chance that a request meets one of the exclusive request-level faults."""
        return (
            self.p_drop
            + self.p_drop_after_write
            + self.p_429
            + self.p_500
            + self.p_502
            + self.p_503
            + self.p_504
        )

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> FaultConfig:
        """The named profile (`none`, `flaky`, `hostile`) with individual knobs overridden."""
        return dataclasses.replace(_profile(FAULT_PROFILES, "fault", name), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a JSON object: an optional `profile` name plus individual knobs."""
        result: FaultConfig = _from_dict(cls, data, "none")
        return result


FAULT_PROFILES: dict[str, FaultConfig] = {
    "none": FaultConfig(),
    # A bad day on a real org: occasional throttling, gateway errors and resets.
    "flaky": FaultConfig(
        p_429=0.02,
        p_500=0.005,
        p_502=0.005,
        p_503=0.01,
        p_504=0.005,
        p_drop=0.005,
        p_drop_after_write=0.005,
        p_slow=0.05,
        slow_ms_min=20.0,
        slow_ms_max=200.0,
        p_item_failure=0.01,
    ),
    # Everything at once, often: what a sync must survive without losing or duplicating anything.
    "hostile": FaultConfig(
        p_429=0.06,
        p_500=0.03,
        p_502=0.03,
        p_503=0.04,
        p_504=0.03,
        p_drop=0.03,
        p_drop_after_write=0.03,
        p_slow=0.1,
        slow_ms_min=50.0,
        slow_ms_max=500.0,
        p_item_failure=0.05,
        revoke_tokens_after_s=300.0,
    ),
}


LAG_DISTRIBUTIONS = ("uniform", "exponential")
MERGED_READS = ("not_found", "canonical")
DUPLICATE_ORDERS = ("oldest", "newest", "random")
RATE_LIMIT_SCOPES = ("token", "client")


@dataclass(frozen=True)
class RealismConfig:
    """How strictly the emulator behaves like the platform where the platform's documentation
    leaves room (docs/emulator.md has every knob with its source). `basic` is the emulator as it
    always was; `realistic` picks the harsher plausible behaviour everywhere.

    Index lag: identifier lookups, reverse-whitepages lookups, searches and scans read an index
    that sees each write `lag` seconds after it happened (drawn per write from `lag_distribution`
    between `lag_min_s` and `lag_max_s`; `exponential` has mean `lag_mean_s`, truncated to the
    bounds). Reads by id are immediate.
    """

    # Seeds the index lags, the order of duplicate lookup hits and the interaction contacts.
    seed: int = 0
    lag_distribution: str = "uniform"
    lag_min_s: float = 0.0
    lag_max_s: float = 0.0
    lag_mean_s: float = 1.0
    # A lagging index hit on a contact merged away since: drop it (False) or answer with the
    # contact it was merged into (True).
    stale_hits_follow_merges: bool = False
    # GET /contacts/{id} and /bulk/contacts of a merged-away id: 404 or the canonical contact.
    merged_read: str = "not_found"
    # Which contact a lookup returns when several carry the identifier.
    duplicate_lookup_order: str = "oldest"
    # Unknown division ids are 400s and an update cannot change a contact's division.
    strict_divisions: bool = False
    # An identifier (ContactIdentifier) is claimed by one contact at most; a second claim is 409.
    exclusive_identifier_claims: bool = False
    # The request budget is counted per token or per OAuth client (all its tokens together).
    rate_limit_scope: str = "token"
    # Another consumer of the same OAuth client spends this share of the budget, steadily: one
    # request per period, placed at random within `background_jitter` of it.
    background_share: float = 0.0
    background_jitter: float = 1.0
    # Contact-schema limits (`SchemaLimits`) and immutable field types are enforced.
    enforce_schema_limits: bool = False
    # Phone `display` is stored in the international format (`userInput` keeps what was sent).
    reformat_phone_display: bool = False
    # Ephemeral and Identified contacts (made by interactions, not by the sync) in a new org.
    interaction_contacts: int = 0

    def __post_init__(self) -> None:
        _choice("lag_distribution", self.lag_distribution, LAG_DISTRIBUTIONS)
        _choice("merged_read", self.merged_read, MERGED_READS)
        _choice("duplicate_lookup_order", self.duplicate_lookup_order, DUPLICATE_ORDERS)
        _choice("rate_limit_scope", self.rate_limit_scope, RATE_LIMIT_SCOPES)
        if not 0.0 <= self.lag_min_s <= self.lag_max_s:
            raise ValueError("need 0 <= lag_min_s <= lag_max_s")
        if self.lag_mean_s <= 0:
            raise ValueError("lag_mean_s must be > 0")
        if not 0.0 <= self.background_share < 1.0:
            raise ValueError("background_share must be within [0, 1)")
        if not 0.0 <= self.background_jitter <= 1.0:
            raise ValueError("background_jitter must be within [0, 1]")
        if self.background_share > 0 and self.rate_limit_scope != "client":
            raise ValueError("background traffic shares a client's budget: needs scope 'client'")
        if self.interaction_contacts < 0:
            raise ValueError("interaction_contacts must be >= 0")

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> RealismConfig:
        """The named profile (`basic`, `realistic`) with individual knobs overridden."""
        return dataclasses.replace(_profile(REALISM_PROFILES, "realism", name), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RealismConfig:
        """Build from a JSON object: an optional `profile` name plus individual knobs."""
        result: RealismConfig = _from_dict(cls, data, "basic")
        return result


REALISM_PROFILES: dict[str, RealismConfig] = {
    "basic": RealismConfig(),
    "realistic": RealismConfig(
        lag_distribution="uniform",
        lag_min_s=0.0,
        lag_max_s=5.0,
        stale_hits_follow_merges=False,
        merged_read="not_found",
        duplicate_lookup_order="random",
        strict_divisions=True,
        exclusive_identifier_claims=True,
        rate_limit_scope="client",
        enforce_schema_limits=True,
        reformat_phone_display=True,
        interaction_contacts=25,
    ),
}


@dataclass(frozen=True)
class Division:
    """A division of the org (`Division` in the SDK: id, name, selfUri)."""

    id: str
    name: str

    def ref(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "selfUri": f"/api/v2/authorization/divisions/{self.id}",
        }


HOME_DIVISION = Division("2b4a7c4e-1f0d-4c1e-9a8e-0d3c6e5f7a10", "Home")
DEFAULT_DIVISIONS = (
    HOME_DIVISION,
    Division("6f1c2d3e-4b5a-4c7d-8e9f-a0b1c2d3e4f5", "Sales"),
    Division("0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d", "Support"),
)


@dataclass(frozen=True)
class SchemaLimits:
    """`SchemaQuantityLimits` of the org (SDK field names, snake case); enforced when
    `RealismConfig.enforce_schema_limits` is on. The values are assumptions: the platform
    publishes the model, not its numbers."""

    min_field_name_characters: int = 1
    max_field_name_characters: int = 100
    min_field_title_characters: int = 1
    max_field_title_characters: int = 100
    min_field_description_characters: int = 0
    max_field_description_characters: int = 1000
    min_schema_name_characters: int = 1
    max_schema_name_characters: int = 100
    min_schema_description_characters: int = 0
    max_schema_description_characters: int = 1000
    max_number_of_schemas_per_org: int = 20
    max_number_of_fields_per_schema: int = 100
    max_number_of_fields_per_org: int = 500

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchemaLimits:
        result: SchemaLimits = _from_dict(cls, data, None)
        return result

    def body(self) -> dict[str, Any]:
        """The `SchemaQuantityLimits` JSON (camel case, as the SDK reads it)."""
        out: dict[str, Any] = {"id": "contacts", "name": "External contact schema limits"}
        for f in dataclasses.fields(self):
            head, *rest = f.name.split("_")
            out[head + "".join(p.capitalize() for p in rest)] = getattr(self, f.name)
        out["selfUri"] = "/api/v2/externalcontacts/contacts/schemas/limits"
        return out


@dataclass
class EmulatorConfig:
    """The emulated org.

    `db_path`: the SQLite file holding the org (None: in memory, private to this app). Several
    processes (or apps) pointed at the same file see the same contacts, sources, schemas, tokens
    and org id; rate-limit windows, the request log and counters are per process.
    `org_id`: the org's id; None (the default) uses the GUID generated once per org and kept in
    its database, so two data directories are two orgs and one file is one org across restarts.
    `admin_token`: the bearer token the `/__emulator/...` admin endpoints require.
    `divisions`: the org's divisions, the home division first.
    """

    db_path: Path | None = None
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = field(default=DEFAULT_CLIENT_SECRET, repr=False)
    token_ttl_s: int = 86_400
    rate_limit_per_minute: int = 300
    max_bulk_entities: int = 200
    max_request_bytes: int = MAX_REQUEST_BYTES
    faults: FaultConfig = field(default_factory=FaultConfig)
    realism: RealismConfig = field(default_factory=RealismConfig)
    schema_limits: SchemaLimits = field(default_factory=SchemaLimits)
    # Seeds the order of bulk results (and nothing about faults: those use `faults.seed`).
    seed: int = 0
    # The request log keeps this many most recent entries; counters count everything.
    request_log_size: int = 100_000
    clock: Clock = field(default_factory=SystemClock, repr=False)
    org_id: str | None = None
    org_name: str = "crm-genesys emulator"
    admin_token: str = field(default=DEFAULT_ADMIN_TOKEN, repr=False)
    divisions: tuple[Division, ...] = DEFAULT_DIVISIONS

    def __post_init__(self) -> None:
        if self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be >= 1")
        if self.max_bulk_entities < 1:
            raise ValueError("max_bulk_entities must be >= 1")
        if self.token_ttl_s < 1:
            raise ValueError("token_ttl_s must be >= 1")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be >= 1")
        if not self.admin_token:
            raise ValueError("admin_token must not be empty")
        if not self.divisions or len({d.id for d in self.divisions}) != len(self.divisions):
            raise ValueError("divisions: at least the home division, ids unique")
