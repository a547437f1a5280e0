"""Path parameters the HTTP routes share."""

from typing import Annotated

from fastapi import Path

MAX_ID = 2**63 - 1  # the largest id the database's integer columns hold

# A record's id in a URL: out of range answers 422 (the database would raise on it).
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="the record's id")]
# A position (an audio part of a dictation job).
Position = Annotated[int, Path(ge=0, le=10_000, description="the part's position")]
