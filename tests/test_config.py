"""A festival's configuration file: what it may set, and what it refuses."""

from __future__ import annotations

import pytest

from double11.config import IMITATED_DAY_START_MS, OWN_DAY_LEAD_REAL_S, FestivalConfig, load_config, own_day
from double11.errors import Double11Error, Result


def test_a_toml_file_sets_what_it_names_and_keeps_the_rest(tmp_path):
    path = tmp_path / "festival.toml"
    path.write_text('commission_bps = 500\npayment_timeout_ms = 60000\n[previous]\nyear = 2017\n'
                    'gmv_fen = 16820000000000\n')
    config = load_config(str(path), expected_checkouts=1000)
    assert (config.commission_bps, config.payment_timeout_ms, config.expected_checkouts) == (500, 60000, 1000)
    assert (config.previous.year, config.previous.gmv_fen) == (2017, 16820000000000)
    assert config.cny_per_usd_num == FestivalConfig().cny_per_usd_num
    assert sum(config.previous.hourly_permille) == 1000


@pytest.mark.parametrize("text,words", [
    ('commission_bps = "lots"', "commission_bps"),
    ("commission_bps = 20000", "commission_bps"),
    ("[previous]\nhourly_permille = [1000]", "hourly_permille"),
    ("not toml at all [", "not valid"),
])
def test_a_bad_file_is_refused_with_the_field_named(tmp_path, text, words):
    path = tmp_path / "festival.toml"
    path.write_text(text)
    with pytest.raises(Double11Error) as refused:
        load_config(str(path))
    assert refused.value.code == Result.invalid_request and words in str(refused.value)


def test_the_festival_start_may_be_set_in_a_file_and_is_otherwise_left_open(tmp_path):
    path = tmp_path / "festival.toml"
    path.write_text("festival_start_ms = 1700000000000\n")
    assert load_config(str(path)).festival_start_ms == 1_700_000_000_000
    assert load_config(None).start_ms is None
    assert FestivalConfig().festival_start_ms == IMITATED_DAY_START_MS  # an engine made directly replays 2017


def test_a_plain_server_runs_its_own_day_from_midnight_after_a_short_lead():
    now = 1_762_000_000_000 + 12_345  # some afternoon
    config, clock_start = own_day(FestivalConfig(), None, now, speedup=60.0)
    start = config.festival_start_ms
    assert (start + 8 * 3_600_000) % 86_400_000 == 0  # a midnight, UTC+8: the day's hours are the festival's
    assert 0 <= now - start < 86_400_000  # the day its first start falls on, not one years ago
    # the clock reaches that midnight OWN_DAY_LEAD_REAL_S real seconds after the start
    assert start - clock_start == OWN_DAY_LEAD_REAL_S * 1000 * 60


def test_a_given_clock_start_or_festival_start_is_kept():
    given = FestivalConfig(start_ms=1_700_000_000_000)
    assert own_day(given, None, 1_762_000_000_000, 1.0) == (given, None)
    assert own_day(FestivalConfig(), 5, 1_762_000_000_000, 1.0) == (FestivalConfig(), 5)
    assert own_day(FestivalConfig(), 5, 1_762_000_000_000, 1.0)[0].festival_start_ms == IMITATED_DAY_START_MS
