"""Validation of request bodies the way the platform does it, and the server-computed fields.

`ContactValidator.validate(body)` returns the contact as it will be stored (read-only fields
dropped, nulls dropped, phones given their `e164`/`countryCode`/`userInput`) or raises
`EntityError` with every problem named by its field path. Schemas (`validate_schema_document`)
declare typed custom fields; `validate_custom_fields` checks a contact's values against one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from typing import Any, NamedTuple

import phonenumbers

from crm_genesys.emulator.config import SchemaLimits
from crm_genesys.emulator.errors import FieldProblem, invalid

MAX_EXTERNAL_IDS = 10
# `ContactIdentifier.type` values of the SDK model.
IDENTIFIER_TYPES = (
    "SocialLine",
    "SocialFacebook",
    "SocialTwitter",
    "SocialWhatsapp",
    "SocialInstagram",
    "SocialWhatsappBsuid",
    "AppleOpaqueId",
    "Email",
    "Phone",
    "Cookie",
    "ExternalId",
    "SocialInstagramHandle",
)
MAX_IDENTIFIER_VALUE = 255

_STRING_LIMITS: dict[str, int] = {
    "firstName": 1000,
    "middleName": 1000,
    "lastName": 1000,
    "salutation": 1000,
    "title": 1000,
    "externalSystemUrl": 1000,
}
_EMAIL_FIELDS = ("workEmail", "personalEmail", "otherEmail")
PHONE_FIELDS = ("workPhone", "cellPhone", "homePhone", "otherPhone")
_ADDRESS_LIMITS = {
    "address1": 200,
    "address2": 200,
    "city": 100,
    "state": 50,
    "postalCode": 25,
    "countryCode": 25,
}
# Accepted as given and stored without further checks: the sync never sends them.
_PASSTHROUGH = (
    "twitterId",
    "lineId",
    "whatsAppId",
    "facebookId",
    "instagramId",
    "appleOpaqueIds",
    "externalOrganization",
    "division",
)
# Server-owned: ignored on write, like the platform does.
_READ_ONLY = (
    "id",
    "type",
    "modifyDate",
    "createDate",
    "selfUri",
    "externalDataSources",
    "canonicalContact",
    "mergeSet",
    "mergedFrom",
    "mergedTo",
    "mergeOperation",
)
_KNOWN = {
    *_STRING_LIMITS,
    *_EMAIL_FIELDS,
    *PHONE_FIELDS,
    *_PASSTHROUGH,
    *_READ_ONLY,
    "address",
    "externalIds",
    "identifiers",
    "surveyOptOut",
    "schema",
    "customFields",
}
# Pragmatic address check: one @, no whitespace, a dot in the domain, sane characters.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_URL_RE = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ParsedPhone(NamedTuple):
    e164: str
    region: str  # ISO region of the number, e.g. `US`
    international: str | None  # e.g. `+1 3172222222` (when asked for), the reformatted display


@lru_cache(maxsize=131_072)
def parse_phone(display: str, region: str, international: bool = False) -> ParsedPhone | None:
    """`display` read with `region` as the default country, or None when the platform could not
    read it as E.164; with `international`, also the number in the international format.
    Cached: benchmarks send the same numbers many times and parsing is the most expensive part
    of validation."""
    try:
        number = phonenumbers.parse(display, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return ParsedPhone(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        phonenumbers.region_code_for_number(number) or region,
        # Country code and national number apart (E.123 style): libphonenumber's grouped
        # INTERNATIONAL format costs as much as the parse itself.
        f"+{number.country_code} {phonenumbers.national_significant_number(number)}"
        if international
        else None,
    )


def claim_key(identifier: Mapping[str, Any]) -> str:
    """The index key of a stored (normalized) `ContactIdentifier`: type, External Source (for
    ExternalId) and value; e-mails compare without case."""
    kind = identifier["type"]
    value = identifier["value"]
    source = (identifier.get("externalSource") or {}).get("id", "")
    return f"{kind}\x1f{source}\x1f{value.lower() if kind == 'Email' else value}"


def normalize_identifier(
    body: Any, where: str, source_exists: Callable[[str], bool]
) -> tuple[dict[str, Any] | None, list[FieldProblem]]:
    """A `ContactIdentifier` as stored (Phone values in E.164), or the problems with it."""
    if not isinstance(body, dict):
        return None, [FieldProblem(where, "must be a ContactIdentifier object")]
    problems: list[FieldProblem] = []
    kind, value = body.get("type"), body.get("value")
    for extra in set(body) - {"type", "value", "externalSource", "division", "dateCreated"}:
        problems.append(FieldProblem(f"{where}.{extra}", "unrecognized field"))
    if kind not in IDENTIFIER_TYPES:
        problems.append(FieldProblem(f"{where}.type", f"one of {', '.join(IDENTIFIER_TYPES)}"))
    if not _is_str(value) or not value:
        problems.append(FieldProblem(f"{where}.value", "is required"))
    elif len(value) > MAX_IDENTIFIER_VALUE:
        problems.append(
            FieldProblem(f"{where}.value", f"longer than {MAX_IDENTIFIER_VALUE} characters")
        )
    out: dict[str, Any] = {"type": kind, "value": value}
    if kind == "ExternalId":
        source = body.get("externalSource")
        source_id = source.get("id") if isinstance(source, dict) else None
        if not _is_str(source_id) or not source_id:
            problems.append(
                FieldProblem(f"{where}.externalSource.id", "is required for ExternalId")
            )
        elif not source_exists(source_id):
            problems.append(
                FieldProblem(f"{where}.externalSource.id", "no such external source", source_id)
            )
        else:
            out["externalSource"] = {"id": source_id}
    if problems:
        return None, problems
    assert isinstance(value, str)
    if kind == "Phone":
        parsed = parse_phone(value, "US") if value.startswith("+") else None
        if parsed is None:
            return None, [FieldProblem(f"{where}.value", "a phone with + and the country code")]
        out["value"] = parsed.e164
    elif kind == "Email" and not _EMAIL_RE.match(value):
        return None, [FieldProblem(f"{where}.value", "not a valid e-mail address", value)]
    if isinstance(body.get("division"), dict):
        out["division"] = body["division"]
    return out, []


def parse_identifier(body: Any, source_exists: Callable[[str], bool]) -> dict[str, Any]:
    """The normalized `identifier` of a claim request, or `EntityError` (400)."""
    identifier, problems = normalize_identifier(body, "identifier", source_exists)
    if identifier is None:
        raise invalid(problems)
    return identifier


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ContactValidator:
    """Validates contact bodies against the org's external sources and contact schemas.

    `source_exists(id)` and `schema_version(id, version)` (the jsonSchema of that version, or
    None) are supplied by the store so validation stays free of SQL.
    """

    def __init__(
        self,
        source_exists: Callable[[str], bool],
        schema_version: Callable[[str, int], Mapping[str, Any] | None],
    ) -> None:
        self._source_exists = source_exists
        self._schema_version = schema_version
        # Store phone `display` in the international format (the realism profile says).
        self.reformat_phone_display = False

    def for_one_request(self) -> ContactValidator:
        """This validator asking the store about each source and schema version at most once:
        for the entities of one request, whatever their number."""
        memo = ContactValidator(cache(self._source_exists), cache(self._schema_version))
        memo.reformat_phone_display = self.reformat_phone_display
        return memo

    def validate(self, body: Any) -> dict[str, Any]:
        """The stored form of `body` (without id and dates), or `EntityError` (400)."""
        if not isinstance(body, dict):
            raise invalid([FieldProblem("body", "a contact must be a JSON object")])
        problems: list[FieldProblem] = []
        out: dict[str, Any] = {}
        for key, value in body.items():
            if value is None or key in _READ_ONLY:
                continue
            if key not in _KNOWN:
                problems.append(FieldProblem(key, "unrecognized field"))
            elif key in _STRING_LIMITS:
                self._string(key, value, _STRING_LIMITS[key], problems, out)
            elif key in _EMAIL_FIELDS:
                if self._string(key, value, 256, problems, out) and not _EMAIL_RE.match(value):
                    problems.append(FieldProblem(key, "not a valid e-mail address", value))
                    out.pop(key, None)
            elif key in PHONE_FIELDS:
                phone = self._phone(key, value, problems)
                if phone is not None:
                    out[key] = phone
            elif key == "address":
                self._address(value, problems, out)
            elif key == "externalIds":
                self._external_ids(value, problems, out)
            elif key == "identifiers":
                self._identifiers(value, problems, out)
            elif key == "surveyOptOut":
                if isinstance(value, bool):
                    out[key] = value
                else:
                    problems.append(FieldProblem(key, "must be a boolean"))
            elif key in ("schema", "customFields"):
                pass  # checked together below
            else:
                out[key] = value
        self._custom_fields(body, problems, out)
        if problems:
            raise invalid(problems)
        return out

    @staticmethod
    def _string(
        key: str, value: Any, limit: int, problems: list[FieldProblem], out: dict[str, Any]
    ) -> bool:
        if not _is_str(value):
            problems.append(FieldProblem(key, "must be a string"))
            return False
        if len(value) > limit:
            problems.append(FieldProblem(key, f"longer than {limit} characters"))
            return False
        out[key] = value
        return True

    def _phone(self, key: str, value: Any, problems: list[FieldProblem]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            problems.append(FieldProblem(key, "must be a PhoneNumber object"))
            return None
        display = value.get("display")
        n_before = len(problems)
        if display is None:
            problems.append(FieldProblem(f"{key}.display", "is required"))
        elif not _is_str(display):
            problems.append(FieldProblem(f"{key}.display", "must be a string"))
        elif len(display) > 512:
            problems.append(FieldProblem(f"{key}.display", "longer than 512 characters"))
        extension = value.get("extension")
        if extension is not None and not _is_int(extension):
            problems.append(FieldProblem(f"{key}.extension", "must be an integer"))
        sms = value.get("acceptsSMS")
        if sms is not None and not isinstance(sms, bool):
            problems.append(FieldProblem(f"{key}.acceptsSMS", "must be a boolean"))
        region = value.get("normalizationCountryCode")
        if region is not None and (
            not _is_str(region)
            or (region.upper() not in phonenumbers.SUPPORTED_REGIONS and region.upper() != "001")
        ):
            problems.append(
                FieldProblem(
                    f"{key}.normalizationCountryCode",
                    "must be an ISO 3166-1 alpha-2 country code",
                    str(region),
                )
            )
        for extra in set(value) - {
            "display",
            "extension",
            "acceptsSMS",
            "normalizationCountryCode",
            "userInput",
            "e164",
            "countryCode",
        }:
            problems.append(FieldProblem(f"{key}.{extra}", "unrecognized field"))
        if len(problems) > n_before:
            return None
        out: dict[str, Any] = {"display": display}
        if extension is not None:
            out["extension"] = extension
        if sms is not None:
            out["acceptsSMS"] = sms
        if region is not None:
            out["normalizationCountryCode"] = region
        out["userInput"] = display
        # The platform assumes +1 (North America) when no normalization country is given.
        reformat = self.reformat_phone_display
        parsed = parse_phone(display, region.upper() if region else "US", reformat)
        if parsed is not None:
            out["e164"], out["countryCode"] = parsed.e164, parsed.region
            if parsed.international is not None:
                out["display"] = parsed.international
        return out

    @staticmethod
    def _address(value: Any, problems: list[FieldProblem], out: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            problems.append(FieldProblem("address", "must be a ContactAddress object"))
            return
        address: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                continue
            limit = _ADDRESS_LIMITS.get(key)
            if limit is None:
                problems.append(FieldProblem(f"address.{key}", "unrecognized field"))
            elif not _is_str(item):
                problems.append(FieldProblem(f"address.{key}", "must be a string"))
            elif len(item) > limit:
                problems.append(FieldProblem(f"address.{key}", f"longer than {limit} characters"))
            else:
                address[key] = item
        out["address"] = address

    def _external_ids(self, value: Any, problems: list[FieldProblem], out: dict[str, Any]) -> None:
        if not isinstance(value, list):
            problems.append(FieldProblem("externalIds", "must be a list"))
            return
        if len(value) > MAX_EXTERNAL_IDS:
            problems.append(
                FieldProblem("externalIds", f"at most {MAX_EXTERNAL_IDS} external ids per contact")
            )
            return
        ids: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            where = f"externalIds[{i}]"
            source = item.get("externalSource") if isinstance(item, dict) else None
            source_id = source.get("id") if isinstance(source, dict) else None
            ext_value = item.get("value") if isinstance(item, dict) else None
            if not _is_str(source_id) or not source_id:
                problems.append(FieldProblem(f"{where}.externalSource.id", "is required"))
            elif not self._source_exists(source_id):
                problems.append(
                    FieldProblem(f"{where}.externalSource.id", "no such external source", source_id)
                )
            if not _is_str(ext_value) or not ext_value:
                problems.append(FieldProblem(f"{where}.value", "is required"))
            elif len(ext_value) > 255:
                problems.append(FieldProblem(f"{where}.value", "longer than 255 characters"))
            if _is_str(source_id) and _is_str(ext_value):
                ids.append({"externalSource": {"id": source_id}, "value": ext_value})
        out["externalIds"] = ids

    def _identifiers(self, value: Any, problems: list[FieldProblem], out: dict[str, Any]) -> None:
        if not isinstance(value, list):
            problems.append(FieldProblem("identifiers", "must be a list"))
            return
        identifiers: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            identifier, found = normalize_identifier(item, f"identifiers[{i}]", self._source_exists)
            problems.extend(found)
            if identifier is not None and claim_key(identifier) not in seen:
                seen.add(claim_key(identifier))
                identifiers.append(identifier)
        out["identifiers"] = identifiers

    def _custom_fields(
        self, body: dict[str, Any], problems: list[FieldProblem], out: dict[str, Any]
    ) -> None:
        schema_ref = body.get("schema")
        fields = body.get("customFields")
        if schema_ref is None:
            if fields:
                problems.append(FieldProblem("schema", "customFields need a schema {id, version}"))
            return
        schema_id = schema_ref.get("id") if isinstance(schema_ref, dict) else None
        version = schema_ref.get("version") if isinstance(schema_ref, dict) else None
        if not isinstance(schema_id, str) or not _is_int(version):
            problems.append(FieldProblem("schema", "must be {id: string, version: integer}"))
            return
        assert isinstance(version, int)
        document = self._schema_version(schema_id, version)
        if document is None:
            problems.append(
                FieldProblem("schema", f"no schema {schema_id} with version {version}", schema_id)
            )
            return
        out["schema"] = {"id": schema_id, "version": version}
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            problems.append(FieldProblem("customFields", "must be an object"))
            return
        n_before = len(problems)
        validate_custom_fields(fields, document, problems)
        if len(problems) == n_before and fields:
            out["customFields"] = {k: v for k, v in fields.items() if v is not None}


# --- contact schemas -----------------------------------------------------------------------

# Core types and the platform's limits on their values (maxLength where it applies).
CORE_TYPES: dict[str, int | None] = {
    "checkbox": None,
    "date": None,
    "datetime": None,
    "integer": None,
    "number": None,
    "enum": 100,  # "dropdown" in the admin UI
    "identifier": 100,
    "text": 100,
    "longtext": 1000,  # "text area" in the admin UI
    "tag": 100,
    "url": 200,
}
MAX_DROPDOWN_OPTIONS = 50
MAX_TAGS = 10


def field_type(name: str, definition: Mapping[str, Any]) -> str | None:
    """The core type of a schema property: from `allOf: [{$ref: "#/definitions/<type>"}]` as
    the platform writes it, else from the `_<type>` suffix of the field name."""
    for part in definition.get("allOf", []) or []:
        ref = part.get("$ref") if isinstance(part, dict) else None
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            return ref.rsplit("/", 1)[1]
    suffix = name.rsplit("_", 1)[-1]
    return suffix if "_" in name and suffix in CORE_TYPES else None


def validate_schema_document(document: Any) -> list[FieldProblem]:
    """Problems with a `jsonSchema` document (unknown types, too many dropdown options, limits
    above the type's maximum); empty when it is acceptable."""
    if not isinstance(document, dict):
        return [FieldProblem("jsonSchema", "must be an object")]
    properties = document.get("properties", {})
    if not isinstance(properties, dict):
        return [FieldProblem("jsonSchema.properties", "must be an object")]
    problems: list[FieldProblem] = []
    for name, definition in properties.items():
        where = f"jsonSchema.properties.{name}"
        if not isinstance(definition, dict):
            problems.append(FieldProblem(where, "must be an object"))
            continue
        kind = field_type(name, definition)
        if kind not in CORE_TYPES:
            problems.append(FieldProblem(where, f"unknown core type {kind!r}"))
            continue
        limit = CORE_TYPES[kind]
        max_length = definition.get("maxLength")
        if max_length is not None and (
            not _is_int(max_length) or (limit is not None and max_length > limit)
        ):
            problems.append(FieldProblem(f"{where}.maxLength", f"at most {limit} for {kind}"))
        if kind == "enum":
            options = definition.get("enum")
            if not isinstance(options, list) or not options:
                problems.append(FieldProblem(f"{where}.enum", "an enum (dropdown) needs options"))
            elif len(options) > MAX_DROPDOWN_OPTIONS:
                problems.append(
                    FieldProblem(f"{where}.enum", f"at most {MAX_DROPDOWN_OPTIONS} options")
                )
            elif any(not _is_str(o) or len(o) > 100 for o in options):
                problems.append(FieldProblem(f"{where}.enum", "options are strings <= 100"))
    required = document.get("required", [])
    if not isinstance(required, list) or any(r not in properties for r in required):
        problems.append(FieldProblem("jsonSchema.required", "names fields not in properties"))
    return problems


def _length_problem(where: str, value: Any, low: int, high: int) -> FieldProblem | None:
    text = value if _is_str(value) else ""
    if value is not None and not _is_str(value):
        return FieldProblem(where, "must be a string")
    if not low <= len(text) <= high:
        return FieldProblem(where, f"must have {low} to {high} characters")
    return None


def schema_limit_problems(
    name: Any, document: Mapping[str, Any], limits: SchemaLimits, fields_elsewhere: int
) -> list[FieldProblem]:
    """Where a schema exceeds the org's `SchemaQuantityLimits`: its name and description, its
    fields' number (with `fields_elsewhere`, the fields of the org's other schemas) and their
    names, titles and descriptions."""
    found = [
        _length_problem(
            "name", name, limits.min_schema_name_characters, limits.max_schema_name_characters
        ),
        _length_problem(
            "jsonSchema.description",
            document.get("description", ""),
            limits.min_schema_description_characters,
            limits.max_schema_description_characters,
        ),
    ]
    properties: Mapping[str, Any] = document.get("properties", {}) or {}
    if len(properties) > limits.max_number_of_fields_per_schema:
        found.append(
            FieldProblem(
                "jsonSchema.properties",
                f"at most {limits.max_number_of_fields_per_schema} fields per schema",
            )
        )
    if len(properties) + fields_elsewhere > limits.max_number_of_fields_per_org:
        found.append(
            FieldProblem(
                "jsonSchema.properties",
                f"at most {limits.max_number_of_fields_per_org} fields in the org's schemas",
            )
        )
    for field_name, definition in properties.items():
        where = f"jsonSchema.properties.{field_name}"
        found.append(
            _length_problem(
                where,
                field_name,
                limits.min_field_name_characters,
                limits.max_field_name_characters,
            )
        )
        found.append(
            _length_problem(
                f"{where}.title",
                definition.get("title", field_name),
                limits.min_field_title_characters,
                limits.max_field_title_characters,
            )
        )
        found.append(
            _length_problem(
                f"{where}.description",
                definition.get("description", ""),
                limits.min_field_description_characters,
                limits.max_field_description_characters,
            )
        )
    return [p for p in found if p is not None]


def type_change_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldProblem]:
    """Fields whose core type differs between two versions of a schema's `jsonSchema`."""
    before: Mapping[str, Any] = old.get("properties", {}) or {}
    after: Mapping[str, Any] = new.get("properties", {}) or {}
    problems = []
    for name in sorted(set(before) & set(after)):
        was, now = field_type(name, before[name]), field_type(name, after[name])
        if was != now:
            problems.append(
                FieldProblem(
                    f"jsonSchema.properties.{name}",
                    f"a field's type cannot change (it is {was}, the update makes it {now})",
                )
            )
    return problems


def _valid_datetime(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _valid_date(value: str) -> bool:
    if not _DATE_RE.match(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _check_value(kind: str, value: Any, definition: Mapping[str, Any]) -> str | None:
    """Why `value` is not a valid `kind`, or None."""
    limit = definition.get("maxLength", CORE_TYPES.get(kind))
    if kind == "checkbox":
        return None if isinstance(value, bool) else "must be a boolean"
    if kind == "integer":
        if not _is_int(value):
            return "must be an integer"
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
    elif kind == "date":
        return None if _is_str(value) and _valid_date(value) else "must be a date YYYY-MM-DD"
    elif kind == "datetime":
        return None if _is_str(value) and _valid_datetime(value) else "must be an ISO-8601 datetime"
    elif kind == "tag":
        if not isinstance(value, list) or len(value) > MAX_TAGS:
            return f"must be a list of at most {MAX_TAGS} tags"
        if any(not _is_str(t) or len(t) > 100 for t in value):
            return "tags are strings of at most 100 characters"
        return None
    elif kind in ("enum", "identifier", "text", "longtext", "url"):
        if not _is_str(value):
            return "must be a string"
        if limit is not None and len(value) > limit:
            return f"longer than {limit} characters"
        min_length = definition.get("minLength")
        if isinstance(min_length, int) and len(value) < min_length:
            return f"shorter than {min_length} characters"
        if kind == "enum" and value not in (definition.get("enum") or []):
            return "not one of the dropdown's options"
        if kind == "url" and not _URL_RE.match(value):
            return "not a valid URL"
        return None
    # integer / number bounds
    low, high = definition.get("minimum"), definition.get("maximum")
    if low is not None and value < low:
        return f"less than {low}"
    if high is not None and value > high:
        return f"more than {high}"
    return None


def validate_custom_fields(
    fields: Mapping[str, Any], document: Mapping[str, Any], problems: list[FieldProblem]
) -> None:
    """Append a problem for every custom field value the schema `document` does not allow."""
    properties: Mapping[str, Any] = document.get("properties", {}) or {}
    for name, value in fields.items():
        where = f"customFields.{name}"
        definition = properties.get(name)
        if definition is None:
            problems.append(FieldProblem(where, "not a field of the contact's schema"))
            continue
        if value is None:
            continue
        kind = field_type(name, definition) or ""
        why = _check_value(kind, value, definition)
        if why is not None:
            problems.append(FieldProblem(where, why, str(value)[:100]))
    for name in document.get("required", []) or []:
        if fields.get(name) is None:
            problems.append(FieldProblem(f"customFields.{name}", "is required"))
