"""`text.plain_text`: what a person reads holds no markup, entity or invisible character."""

from __future__ import annotations

import html
import re
import sys
import unicodedata

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.contacts.text import FORMAT_CHARACTERS, plain_text

_TAG = re.compile(r"(?i)<!--|<\s*/?\s*(?:b|i|script|svg|img|div|p|span)(?=[\s/>])[^<>]*>")


def test_format_characters_are_every_unicode_format_character() -> None:
    allowed = re.compile(f"[{FORMAT_CHARACTERS}]")
    every = [chr(c) for c in range(sys.maxunicode + 1)]
    assert {c for c in every if unicodedata.category(c) == "Cf"} == {
        c for c in every if allowed.match(c)
    }


def test_markup_revealed_by_decoding_is_removed_too() -> None:
    values = pd.Series(
        [
            "&lt;script&gt;alert(1)&lt;/script&gt;Diaz",
            "&l\u200bt;b&g\u200bt;Boss",
            "&amp;lt;b&amp;gt;ACME",
            "<<b>b>Paris",
            "Ana\u2066\u00ad",
            "Prefers e-mail &lt;not phone&gt;",
            "Smith &amp; Sons",
            "AT&T",
            None,
            "&amp;" * 2 + "amp;" * 20 + "lt;b>",
        ]
    )
    assert plain_text(values).tolist() == [
        "alert(1)Diaz",
        "Boss",
        "ACME",
        "Paris",
        "Ana",
        "Prefers e-mail <not phone>",
        "Smith & Sons",
        "AT&T",
        None,
        "amp;" * 14 + "lt;b",  # nested deeper than the passes: the markup characters go
    ]


_pieces = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["<b>", "</b>", "&lt;", "&gt;", "&amp;", "&#x202e;", "&#60;", "<!--", "\u2067"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_pieces, max_size=8).map("".join), min_size=1, max_size=20))
def test_plain_text_leaves_nothing_a_browser_or_a_bidi_algorithm_acts_on(
    texts: list[str],
) -> None:
    for keep_newlines in (False, True):
        out = plain_text(pd.Series(texts, dtype=object), keep_newlines=keep_newlines)
        for value in out.dropna():
            assert not _TAG.search(value), value
            assert html.unescape(value) == value, value
            assert not [
                c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs") and c != "\n"
            ], value
