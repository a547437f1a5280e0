"""[dictation] phone_code and phone_max_minutes: defaults, accepted values, and a clear
message for each bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimbuero.config import ConfigError, DictationSettings, _dictation

PATH = Path("config.toml")


def test_defaults_and_values() -> None:
    default = _dictation(PATH, {})
    assert default == DictationSettings()
    assert (default.phone_code, default.phone_max_minutes) == ("*88", 30)
    for code in ("*88", "#1", "*1234", ""):
        assert _dictation(PATH, {"phone_code": code}).phone_code == code
    assert _dictation(PATH, {"phone_max_minutes": 120}).phone_max_minutes == 120
    assert _dictation(PATH, {"phone_max_minutes": 1}).phone_max_minutes == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"phone_code": "88"}, r"phone_code must be \* or # and 1-4 digits"),
        ({"phone_code": "*12345"}, r"phone_code must be \* or # and 1-4 digits"),
        ({"phone_code": "*8a"}, r"phone_code must be \* or # and 1-4 digits"),
        ({"phone_code": 88}, r"phone_code must be \* or # and 1-4 digits"),
        ({"phone_code": "*21"}, r"not \*21, \*22: forwarding"),
        ({"phone_code": "*22"}, r"not \*21, \*22: forwarding"),
        ({"phone_code": "*8"}, r"nor \*8: call pickup"),
        ({"phone_max_minutes": 0}, "phone_max_minutes must be a positive integer"),
        ({"phone_max_minutes": True}, "phone_max_minutes must be a positive integer"),
        ({"phone_max_minutes": 2.5}, "phone_max_minutes must be a positive integer"),
        ({"phone_max_minutes": 121}, "phone_max_minutes must be at most 120"),
    ],
)
def test_bad_values_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _dictation(PATH, table)


def test_voicemail_phone_code_and_its_clash_with_dictation(tmp_path: Path) -> None:
    from heimbuero.config import MediaAppSettings, _mediaapp, load

    assert (MediaAppSettings().listen_code, MediaAppSettings().listen_max_minutes) == ("*86", 15)
    vm = _mediaapp(PATH, {"voicemail": {"phone_code": "#86", "phone_max_minutes": 120}})
    assert (vm.listen_code, vm.listen_max_minutes) == ("#86", 120)
    assert _mediaapp(PATH, {"voicemail": {"phone_code": ""}}).listen_code == ""
    assert _mediaapp(PATH, {"voicemail": {"sender": "Zentrale"}}).voicemail_sender == "zentrale"
    assert MediaAppSettings().voicemail_sender == ""  # a note to self
    for bad, message in (
        ({"sender": "zen trale"}, r"\[voicemail\] sender must be a user name"),
        ({"sender": 7}, r"\[voicemail\] sender must be a user name"),
        ({"phone_code": "*21"}, r"\[voicemail\] phone_code must be \* or #"),
        ({"phone_code": "*8"}, r"\[voicemail\] phone_code .* nor \*8: call pickup"),
        ({"phone_code": "86"}, r"\[voicemail\] phone_code must be \* or #"),
        ({"phone_max_minutes": 0}, r"phone_max_minutes must be 1..120"),
        ({"phone_max_minutes": 121}, r"phone_max_minutes must be 1..120"),
    ):
        with pytest.raises(ConfigError, match=message):
            _mediaapp(PATH, {"voicemail": bad})
    config = tmp_path / "config.toml"
    config.write_text(
        '[server]\ndomain = "x.test"\n[voicemail]\nphone_code = "*88"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"both \*88"):
        load(tmp_path)
