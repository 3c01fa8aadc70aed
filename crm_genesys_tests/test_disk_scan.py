"""The disk scan's needle search (`disk_scan.Needles`) finds exactly what a plain substring
search finds, whatever the bytes around a value, so that a scan of a large deployment (50,000
contacts, hundreds of MB of files) ends in seconds without missing anything."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from crm_genesys_tests.disk_scan import Needles

# Bytes close to the values' own, so that near-misses and values glued to other text are common.
_BYTES = st.binary(max_size=40) | st.lists(
    st.sampled_from([b"@", b"+", b"a", b"1", b".", b"x@y", b"+1", b"\x00", b"com"]), max_size=12
).map(b"".join)
_VALUES = st.lists(
    st.one_of(
        st.from_regex(rb"\A[a-z.]{0,6}@[a-z]{0,4}(\.[a-z]{1,3})?\Z"),
        st.from_regex(rb"\A\+[0-9]{0,6}\Z"),
        st.binary(min_size=1, max_size=6),  # no anchor byte: searched one by one
        _BYTES,
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(values=_VALUES, parts=st.lists(_BYTES, max_size=6), glue=st.data())
@example(values=[b"john@example.com"], parts=[b"Smithjohn@example.com.au"], glue=None)
@example(values=[b"+12015550194"], parts=[b"tel+120155501945"], glue=None)
@example(values=[b"a@b"], parts=[b"@b", b"a@"], glue=None)
@example(values=[b"+1"], parts=[b"+", b"1"], glue=None)
@example(values=[b"@b"], parts=[b"a@@b"], glue=None)  # anchors side by side
@example(values=[b"ab@c"], parts=[b"b@c"], glue=None)  # too near the start
def test_needles_find_what_a_substring_search_finds(
    values: list[bytes], parts: list[bytes], glue: st.DataObject | None
) -> None:
    data = bytearray()
    for part in parts:
        data += part
        if glue is not None and values and glue.draw(st.booleans()):
            data += glue.draw(st.sampled_from(values))  # a value glued between other bytes
    expected = any(v in bytes(data) for v in values if v)
    assert Needles(values).found_in(bytes(data)) is expected


def test_a_value_at_either_end_of_the_data_is_found() -> None:
    needles = Needles([b"ann@example.org", b"+441632960123"])
    assert needles.found_in(b"ann@example.org")
    assert needles.found_in(b"\x00\x01+441632960123")
    assert not needles.found_in(b"nn@example.org +44163296012")
