"""The big screen of a plain `double11 serve` (its own festival day, scale 1): a clock
of that day, not 24:00:00 or 79515:09:51, and no comparison with last year's
billions, which would read -100% all day."""

from __future__ import annotations

import re

import httpx
from festival_live import free_port, start_plain_server  # tests/festival/festival_live.py


def test_a_plain_servers_screen_shows_its_own_day(browser, tmp_path, serve_help_works):
    from double11.catalog.files import save_catalog
    from double11.catalog.generate import generate_catalog
    from double11.festival_cmd import stop_server

    catalog = tmp_path / "catalog"
    save_catalog(generate_catalog(merchants=50, skus=500, seed=3), catalog)
    port = free_port()
    server = start_plain_server(port, tmp_path / "data", catalog, tmp_path / "server.log", speedup=60.0)
    url = f"http://127.0.0.1:{port}"
    try:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('stats-at').dataset.value !== ''", timeout=15_000)
        clock = page.text_content("#festival-clock")
        # in the lead before its midnight, or in the first minutes of its day
        assert re.fullmatch(r"(starts in )?00:\d\d:\d\d", clock), clock
        assert page.is_hidden("#vs-previous")
        stats = httpx.get(url + "/v1/stats", timeout=10).json()
        at = int(page.get_attribute("#festival-clock", "data-value"))
        assert -20 * 60_000 <= at - stats["festival_start"] < 3_600_000  # its lead is 15 festival minutes at 60x
        page.close()
    finally:
        assert stop_server(server) == 0
