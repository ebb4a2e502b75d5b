"""A festival's configuration file: what it may set, and what it refuses."""

from __future__ import annotations

import pytest

from double11.config import FestivalConfig, load_config
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
