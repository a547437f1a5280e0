"""The voicemails table: ids of another client are not found; new/old counts for MWI."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from heimbuero.store.db import Store
from heimbuero.store.voicemail import add_voicemail, counts, get_voicemail, list_voicemails


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


def test_voicemails_of_another_client_are_not_found(store: Store) -> None:
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    a = add_voicemail(store, "mueller", "mueller", "+4930123", "c1", "voicemail/a.wav", 3.5, at)
    b = add_voicemail(store, "schmidt", "schmidt", "+4930999", "c2", "voicemail/b.wav", 1.0, at)
    assert get_voicemail(store, "mueller", a) is not None
    assert get_voicemail(store, "mueller", b) is None  # another client's id: not found
    assert get_voicemail(store, "mueller", 9999) is None
    assert [v.id for v in list_voicemails(store, "mueller")] == [a]
    assert counts(store, "mueller") == (1, 0)
    assert counts(store, "nobody") == (0, 0)
