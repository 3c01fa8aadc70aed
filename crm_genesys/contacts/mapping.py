"""The mapping registry: which CRM column feeds which Genesys External Contact field.

One YAML file per CRM (see `crm_genesys/mappings/demo_crm.yaml`), validated on load by
`load_mapping(path) -> Mapping`. A mapping that names an unknown Genesys field, a custom field type
Genesys does not have, a limit above what Genesys accepts, or a denied (PII) column fails to load
with a `MappingError` that lists every problem with its place in the file.

Denied columns are refused twice: here, when the file is loaded, and again by `normalize`, which
never reads a raw column whose name is denied even if a mapping object somehow names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Genesys External Contact scalar fields this project writes, with the platform's length limits.
SCALAR_FIELD_LIMITS: dict[str, int] = {
    "salutation": 1000,
    "firstName": 1000,
    "middleName": 1000,
    "lastName": 1000,
    "title": 1000,
}
PHONE_SLOTS: tuple[str, ...] = ("workPhone", "cellPhone", "homePhone", "otherPhone")
EMAIL_SLOTS: tuple[str, ...] = ("workEmail", "personalEmail", "otherEmail")
EMAIL_MAX_LENGTH = 256
ADDRESS_FIELD_LIMITS: dict[str, int] = {
    "address1": 200,
    "address2": 200,
    "city": 100,
    "state": 50,
    "postalCode": 25,
    "countryCode": 25,
}

CustomFieldType = Literal[
    "text",
    "textarea",
    "identifier",
    "url",
    "integer",
    "number",
    "date",
    "datetime",
    "checkbox",
    "dropdown",
    "tag",
]
# Genesys keys a custom field by `<name>_<suffix>` and declares it with `#/definitions/<suffix>`.
TYPE_SUFFIX: dict[str, str] = {
    "text": "text",
    "textarea": "longtext",
    "identifier": "identifier",
    "url": "url",
    "integer": "integer",
    "number": "number",
    "date": "date",
    "datetime": "datetime",
    "checkbox": "checkbox",
    "dropdown": "enum",
    "tag": "tag",
}
# Character limits per type (for `tag`, per item). Types absent here have no length.
TYPE_MAX_LENGTH: dict[str, int] = {
    "text": 100,
    "textarea": 1000,
    "identifier": 100,
    "url": 200,
    "tag": 100,
    "dropdown": 100,
}
TAG_MAX_ITEMS = 10
DROPDOWN_MAX_OPTIONS = 50
# JavaScript's safe integer range: Genesys stores custom integers as JSON numbers.
INTEGER_MIN = -9_007_199_254_740_991
INTEGER_MAX = 9_007_199_254_740_991

# Column-name patterns that can never be mapped, whatever a registry says (defence in depth: a
# registry's own `denied.patterns` add to these, they cannot remove them).
BUILTIN_DENIED_PATTERNS: tuple[str, ...] = (
    r"(?i)(national|social|tax|fiscal|citizen)[_ \-]?(id|ident|identifier|number|no|num|security)",
    r"(?i)(^|[_ \-])(ssn|sin|nin|nino|tin|itin)($|[_ \-])",
    r"(?i)passport",
    r"(?i)birth|(^|[_ \-])dob($|[_ \-])",
    r"(?i)card[_ \-]?(number|no|num)|(credit|debit)[_ \-]?card",
    r"(?i)(^|[_ \-])(pan|cvv|cvc)($|[_ \-])",
    r"(?i)(^|[_ \-])iban($|[_ \-])",
)

_CUSTOM_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,49}")
_ISO2_RE = re.compile(r"[A-Z]{2}")


class MappingError(ValueError):
    """A mapping registry that cannot be used; the message lists every problem found."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the CRM rows come from and which columns carry identity, time and deletion."""

    table: str = Field(min_length=1)
    internal_id_column: str = Field(min_length=1)
    modified_column: str = Field(min_length=1)
    version_column: str = Field(min_length=1)
    deleted_column: str | None = None


class ExternalSourceSpec(_Strict):
    """The Genesys External Source the pipeline owns; the business key is its ExternalId."""

    name: str = Field(min_length=1, max_length=200)
    uri_template: str | None = Field(default=None, max_length=1000)


class BusinessKeySpec(_Strict):
    """Columns whose values, joined, identify a CRM record stably (never the internal id)."""

    columns: list[str] = Field(min_length=1)
    # Readable prefix of a key that had to be hashed because it was longer than 255 characters.
    prefix: str = Field(default="key", pattern=r"^[A-Za-z0-9_\-]{1,20}$")
    separator: str = Field(default="|", min_length=1, max_length=3)


class CustomFieldSpec(_Strict):
    """One typed custom field of the Genesys contact schema and the CRM column that feeds it.

    `on_too_long` applies to text-like types: `truncate` (default for text and textarea),
    `reject` (drop the value, keep the contact; default for identifier, url, tag and dropdown) or
    `quarantine` (the whole row). `on_invalid` applies to values that cannot be coerced to the type
    (a date that is not a date, a dropdown value that is not an option): `reject` or `quarantine`.
    """

    column: str = Field(min_length=1)
    type: CustomFieldType
    title: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    options: list[str] | None = None
    max_length: int | None = Field(default=None, ge=1)
    max_items: int | None = Field(default=None, ge=1, le=TAG_MAX_ITEMS)
    minimum: float | None = None
    maximum: float | None = None
    on_too_long: Literal["truncate", "reject", "quarantine"] | None = None
    on_invalid: Literal["reject", "quarantine"] = "reject"
    strip_html: bool | None = None

    @model_validator(mode="after")
    def _check_type_rules(self) -> CustomFieldSpec:
        problems: list[str] = []
        if self.type == "dropdown":
            opts = self.options or []
            if not opts:
                problems.append("a dropdown needs `options` (1 to 50 values)")
            if len(opts) > DROPDOWN_MAX_OPTIONS:
                problems.append(f"a dropdown has at most {DROPDOWN_MAX_OPTIONS} options")
            if any(not o.strip() or len(o) > TYPE_MAX_LENGTH["dropdown"] for o in opts):
                problems.append("dropdown options must be non-blank and at most 100 characters")
            if len({o.casefold() for o in opts}) != len(opts):
                problems.append("dropdown options must be unique (case-insensitively)")
        elif self.options is not None:
            problems.append(f"`options` only applies to dropdown, not {self.type}")
        limit = TYPE_MAX_LENGTH.get(self.type)
        if self.max_length is not None and (limit is None or self.type == "dropdown"):
            problems.append(f"`max_length` does not apply to {self.type}")
        elif self.max_length is not None and limit is not None and self.max_length > limit:
            problems.append(
                f"`max_length` {self.max_length} exceeds Genesys' {limit} for {self.type}"
            )
        if self.max_items is not None and self.type != "tag":
            problems.append("`max_items` only applies to tag")
        if (self.minimum is not None or self.maximum is not None) and self.type not in (
            "integer",
            "number",
        ):
            problems.append("`minimum`/`maximum` only apply to integer and number")
        if self.strip_html is not None and self.type not in ("text", "textarea"):
            problems.append("`strip_html` only applies to text and textarea")
        if self.on_too_long is not None and limit is None:
            problems.append(f"`on_too_long` does not apply to {self.type}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def limit(self) -> int | None:
        """The effective character limit (per item for tags), or None for untyped lengths."""
        if self.type == "dropdown":
            return None
        base = TYPE_MAX_LENGTH.get(self.type)
        if base is None:
            return None
        return min(base, self.max_length) if self.max_length else base

    @property
    def too_long_rule(self) -> str:
        if self.on_too_long is not None:
            return self.on_too_long
        return "truncate" if self.type in ("text", "textarea") else "reject"

    @property
    def strips_html(self) -> bool:
        # HTML never belongs in a Genesys text field: stripping is the default for text types.
        return self.type in ("text", "textarea") and self.strip_html is not False


class CustomFieldsSpec(_Strict):
    """The Genesys contact schema (pushed by `crm-genesys schema push`) and its fields."""

    schema_name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    fields: dict[str, CustomFieldSpec] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _check_names(cls, value: dict[str, CustomFieldSpec]) -> dict[str, CustomFieldSpec]:
        bad = [n for n in value if not _CUSTOM_NAME_RE.fullmatch(n)]
        if bad:
            raise ValueError(
                f"custom field names must match [a-z][a-z0-9_]{{0,49}}: {', '.join(map(repr, bad))}"
            )
        return value


class DeniedSpec(_Strict):
    """Columns (exact names, case-insensitive) and name patterns that must never reach Genesys."""

    columns: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"denied pattern {pattern!r} is not a regular expression: {exc}"
                ) from None
        return value


@dataclass(frozen=True)
class ResolvedCustomField:
    """A custom field with the key Genesys knows it by (`<name>_<suffix>`)."""

    name: str
    key: str
    spec: CustomFieldSpec


class Mapping(_Strict):
    """A validated mapping registry. Build it with `load_mapping` (or `Mapping.model_validate`)."""

    source: SourceSpec
    external_source: ExternalSourceSpec
    business_key: BusinessKeySpec
    default_country: str
    country_column: str | None = None
    # Extra spellings of countries seen in the CRM (`Deutschland: DE`), on top of the built-ins.
    country_aliases: dict[str, str] = Field(default_factory=dict)
    fields: dict[Literal["salutation", "firstName", "middleName", "lastName", "title"], str] = (
        Field(default_factory=dict)
    )
    phones: dict[Literal["workPhone", "cellPhone", "homePhone", "otherPhone"], str] = Field(
        default_factory=dict
    )
    emails: dict[Literal["workEmail", "personalEmail", "otherEmail"], str] = Field(
        default_factory=dict
    )
    address: dict[
        Literal["address1", "address2", "city", "state", "postalCode", "countryCode"], str
    ] = Field(default_factory=dict)
    custom_fields: CustomFieldsSpec | None = None
    denied: DeniedSpec = Field(default_factory=DeniedSpec)
    # `fields`: the sync owns the fields named here (updates merge them into the contact as
    # Genesys holds it); `contact`: the CRM owns whole contacts (updates replace them).
    ownership: Literal["fields", "contact"] = "fields"
    # The Genesys division contacts are created in (its id); the org's home division when
    # absent. Fixed at creation: the platform cannot move a contact to another division.
    division: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("default_country")
    @classmethod
    def _check_default_country(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 region known to phonenumbers")
        return code

    @field_validator("country_aliases")
    @classmethod
    def _check_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v.upper() not in phonenumbers.SUPPORTED_REGIONS}
        if bad:
            raise ValueError(f"aliases must point to ISO 3166 alpha-2 regions: {bad}")
        return {k: v.upper() for k, v in value.items()}

    @model_validator(mode="after")
    def _check_columns(self) -> Mapping:
        problems = []
        for column, uses in self.column_uses().items():
            why = self.denial_reason(column)
            if why:
                problems.append(f"column {column!r} ({', '.join(uses)}) is denied: {why}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- column bookkeeping -------------------------------------------------------------------

    def column_uses(self) -> dict[str, list[str]]:
        """Every CRM column the mapping names, with where (`phones.workPhone`, ...)."""
        uses: dict[str, list[str]] = {}

        def add(column: str | None, where: str) -> None:
            if column:
                uses.setdefault(column, []).append(where)

        add(self.source.internal_id_column, "source.internal_id_column")
        add(self.source.modified_column, "source.modified_column")
        add(self.source.version_column, "source.version_column")
        add(self.source.deleted_column, "source.deleted_column")
        for col in self.business_key.columns:
            add(col, "business_key.columns")
        add(self.country_column, "country_column")
        for section, entries in (
            ("fields", self.fields),
            ("phones", self.phones),
            ("emails", self.emails),
            ("address", self.address),
        ):
            for target, col in entries.items():
                add(col, f"{section}.{target}")
        for name, spec in self.custom_fields.fields.items() if self.custom_fields else ():
            add(spec.column, f"custom_fields.{name}")
        return uses

    def source_columns(self) -> list[str]:
        """The columns an extractor needs to read, in a stable order; never a denied one."""
        return [c for c in self.column_uses() if self.denial_reason(c) is None]

    @cached_property
    def _denied_names(self) -> frozenset[str]:
        return frozenset(c.casefold() for c in self.denied.columns)

    @cached_property
    def _denied_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in (*BUILTIN_DENIED_PATTERNS, *self.denied.patterns))

    def denial_reason(self, column: object) -> str | None:
        """Why `column` may never be read or sent, or None when it may."""
        name = str(column)
        if name.casefold() in self._denied_names:
            return "listed in denied.columns"
        for pattern in self._denied_patterns:
            if pattern.search(name):
                return f"name matches denied pattern {pattern.pattern!r}"
        return None

    def custom_field_list(self) -> list[ResolvedCustomField]:
        """Custom fields in declaration order, with their Genesys keys."""
        if not self.custom_fields:
            return []
        out = []
        for name, spec in self.custom_fields.fields.items():
            suffix = TYPE_SUFFIX[spec.type]
            key = name if name.endswith("_" + suffix) else f"{name}_{suffix}"
            out.append(ResolvedCustomField(name=name, key=key, spec=spec))
        return out

    def iter_targets(self) -> Iterator[tuple[str, str]]:
        """(Genesys target, column) for every mapped value, for reports."""
        for section, entries in (
            ("", self.fields),
            ("", self.phones),
            ("", self.emails),
            ("address.", self.address),
        ):
            for target, col in entries.items():
                yield section + target, col
        for f in self.custom_field_list():
            yield f"customFields.{f.key}", f.spec.column


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "[key]"]
        where = ".".join(loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "literal_error" and loc and loc[-1] != "type":
            msg = f"unknown Genesys field {err.get('input', loc[-1])!r}: {msg}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the mapping registry format)"
        elif err["type"] == "literal_error":
            msg = f"unknown custom field type {err.get('input')!r}: {msg}"
        lines.append(f"  - {where}: {msg.removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_mapping(data: Any, origin: str = "<mapping>") -> Mapping:
    """Validate an already-parsed registry document; raise `MappingError` listing every problem."""
    if not isinstance(data, AbcMapping):
        raise MappingError(f"{origin}: a mapping registry must be a YAML mapping at the top level")
    try:
        return Mapping.model_validate(dict(data))
    except ValidationError as exc:
        raise MappingError(
            f"{origin}: invalid mapping registry\n{_format_validation_error(exc)}"
        ) from None


def load_mapping(path: str | Path) -> Mapping:
    """Load and validate a mapping registry YAML file.

    Raises `MappingError` (a `ValueError`) with a readable list of problems: unreadable file,
    YAML syntax, unknown Genesys field, bad custom field type or limit, denied column mapped.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{p}: cannot read mapping registry: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{p}: not valid YAML: {exc}") from None
    return parse_mapping(data, origin=str(p))


def is_region(code: str) -> bool:
    """True for an ISO 3166 alpha-2 code phonenumbers has a numbering plan for."""
    return bool(_ISO2_RE.fullmatch(code)) and code in phonenumbers.SUPPORTED_REGIONS
