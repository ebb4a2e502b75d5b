"""The front page stays a front page, its links resolve, and code comments carry
no dated measurements (those belong in docs/performance.md and docs/bench-history.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "ARCHITECTURE.md", "docs/api.md", "docs/performance.md", "docs/bench-history.md"]
# a session tag (month-day and a run letter) or a run date of this decade, in a comment;
# a festival being imitated (the 2010s) is not a measurement
DATED = re.compile(r"#.*\b(?:\d{2}-\d{2}[a-z]\b|20[2-9]\d-\d\d-\d\d)")


def test_the_readme_and_the_architecture_fit_their_claims():
    # counted in bytes, as the front-door check counts them (≤ and – are three each)
    assert len((ROOT / "README.md").read_bytes()) < 7_000
    assert len((ROOT / "ARCHITECTURE.md").read_bytes()) < 7_000  # "one page"


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / page).parent.joinpath(target).exists(), f"{page} links to {target}, which is not there"


def test_no_dated_measurements_in_code_comments():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for folder in ("double11", "tests", "scripts")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if DATED.search(line)]
    assert found == []
