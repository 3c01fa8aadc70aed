"""Dry-run previews as Dagster metadata: the counts, and the masked samples as markdown."""

from __future__ import annotations

from typing import Any

import dagster as dg

from crm_genesys.sync.preview import Preview


def preview_metadata(preview: Preview, title: str) -> dict[str, Any]:
    return {**preview.as_metadata(), "preview": dg.MetadataValue.md(preview.markdown(title))}
