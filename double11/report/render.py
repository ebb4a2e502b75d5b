"""The report as terminal text and as one self-contained HTML page (inline CSS and
SVG, nothing fetched)."""

from __future__ import annotations

import html
import time

from double11.report.figures import Row, deals_sold_out, effective_scale, lag_note, report_hours, rows, top_brands
from double11.simulator.curve import format_clock
from double11.simulator.schedule import hours_text
from double11.simulator.years import profile, targets

CHART_W, CHART_H, CHART_PAD = 720, 240, 36


def _ratio_text(r: float | None) -> str:
    return "" if r is None else f"x{r:.2f}"


def headline(stats: dict, scale: float) -> str:
    gmv = int(stats.get("gmv_fen", 0))
    at = (int(stats.get("at", 0)) - int(stats.get("festival_start", 0))) / 1000
    clock = format_clock(at) if 0 <= at < 86_400 else ("24:00:00" if at >= 86_400 else "before midnight")
    return (f"11.11 Global Shopping Festival: RMB {gmv / 100:,.0f} of GMV by {clock}"
            + (f" at scale {scale:g} (about RMB {gmv / scale / 1e11:,.1f} billion at full size)" if scale != 1 else ""))


def compared_with(year: int, hours: float) -> str:
    """The column of the year's figures: its whole day, or the same first hours."""
    return str(year) if hours >= 24 else f"{year}, {hours_text(hours)}"


def text_report(stats: dict, year: int = 2017, scale: float | None = None, summary: dict | None = None,
                hours: float | None = None) -> str:
    s = effective_scale(stats, scale, summary)
    h = report_hours(stats, summary, hours)
    table = rows(stats, year, s, summary, h)
    head = ("figure", "measured", "scale undone", compared_with(profile(year).year, h), "ratio")
    cells = [head] + [(r.label, r.ours, r.full, r.target, _ratio_text(r.ratio)) for r in table]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = [headline(stats, s)]
    if h < 24:
        lines.append(f"a run of {hours_text(h)} of the day, compared with {hours_text(h)} of {profile(year).year}'s")
    warning = lag_note(summary)
    if warning:
        lines.append("warning: " + warning)
    lines.append("")
    for c in cells:
        lines.append("  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(5)))
    brands = top_brands(stats)
    if brands:
        lines += ["", "top brands: " + ", ".join(
            b["name"] + (" (intl)" if b.get("international") else "") for b in brands)]
    sold_out = deals_sold_out(stats)
    if sold_out:
        lines += ["", "deals sold out last: " + ", ".join(
            f"{d['kind']} deal {d['deal']} on SKU {d['sku']} at {d['moment']}" for d in sold_out)]
    return "\n".join(lines)


def _bar_chart(by_hour: list[int], expected_share: tuple[float, ...]) -> str:
    """GMV by hour as bars, with the year's hourly curve over the same hours (scaled
    to our total) as dots."""
    total = sum(by_hour)
    expected = [total * p / sum(expected_share) for p in expected_share] if sum(expected_share) else []
    top = max(max(by_hour, default=0), max(expected, default=0), 1)
    w = (CHART_W - 2 * CHART_PAD) / 24
    plot_h = CHART_H - 2 * CHART_PAD
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" '
             f'role="img" aria-label="GMV by hour" class="chart">']
    for h, v in enumerate(by_hour):
        bh = plot_h * v / top
        x = CHART_PAD + h * w
        parts.append(f'<rect x="{x + 2:.1f}" y="{CHART_PAD + plot_h - bh:.1f}" width="{w - 4:.1f}" '
                     f'height="{bh:.1f}" fill="#ff5000"><title>{h:02d}:00 RMB {v / 100:,.0f}</title></rect>')
        if h < len(expected):
            ey = CHART_PAD + plot_h - plot_h * expected[h] / top
            parts.append(f'<circle cx="{x + w / 2:.1f}" cy="{ey:.1f}" r="3" fill="#333"/>')
        if h % 3 == 0:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{CHART_H - 12}" font-size="11" '
                         f'text-anchor="middle">{h:02d}</text>')
    parts.append(f'<line x1="{CHART_PAD}" y1="{CHART_PAD + plot_h}" x2="{CHART_W - CHART_PAD}" '
                 f'y2="{CHART_PAD + plot_h}" stroke="#999"/></svg>')
    return "".join(parts)


def html_report(stats: dict, year: int = 2017, scale: float | None = None, summary: dict | None = None,
                hours: float | None = None) -> str:
    s = effective_scale(stats, scale, summary)
    h = report_hours(stats, summary, hours)
    y = profile(year)
    e = html.escape
    table = rows(stats, year, s, summary, h)
    window = "" if h >= 24 else f" A run of {hours_text(h)} of the day: compared with {hours_text(h)} of {y.year}'s."
    warning = lag_note(summary)
    warning_html = f'<p class="warning" id="lag-warning">Warning: {e(warning)}</p>' if warning else ""

    def tr(r: Row) -> str:
        return (f'<tr id="row-{e(r.key)}"><th>{e(r.label)}</th><td>{e(r.ours)}</td><td>{e(r.full)}</td>'
                f'<td>{e(r.target)}</td><td>{e(_ratio_text(r.ratio))}</td><td class="note">{e(r.note)}</td></tr>')

    brands = "".join(
        f'<li>{e(b["name"])}{" <span class=intl>international</span>" if b.get("international") else ""}'
        f'{" <small>(a 2017 top seller)</small>" if b.get("named_in_2017") else ""}'
        f' RMB {int(b.get("gmv_fen", 0)) / 100:,.0f}</li>' for b in top_brands(stats))
    merchants = "".join(f'<li>{e(m["name"])} <small>{e(m.get("marketplace", ""))}</small> '
                        f'RMB {int(m.get("gmv_fen", 0)) / 100:,.0f}</li>' for m in stats.get("top_merchants") or [])
    sold_out = "".join(f'<li data-deal="{int(d["deal"])}">{e(str(d["kind"]))} deal {int(d["deal"])} on SKU '
                       f'{int(d["sku"])} <small>sold out at {e(d["moment"])}</small></li>'
                       for d in deals_sold_out(stats))
    sold_out_html = (f'<div><h2>Deals sold out last</h2><ol id="deals-sold-out">{sold_out}</ol></div>'
                     if sold_out else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>11.11 festival report</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;padding:0 1rem;color:#222}}
h1{{font-size:1.5rem}} table{{border-collapse:collapse;width:100%}}
th,td{{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:right}}
td{{white-space:nowrap}} th{{text-align:left}}
thead th{{text-align:right}} thead th:first-child{{text-align:left}}
.warning{{background:#fff3cd;border-left:4px solid #e0a800;padding:.5rem .8rem}}
.note{{color:#777;font-size:.85em;text-align:left;white-space:normal}} .intl{{color:#ff5000;font-size:.8em}}
.chart{{width:100%;height:auto}} .cols{{display:flex;gap:2rem;flex-wrap:wrap}} .cols>div{{flex:1}}
</style></head><body>
<h1>{e(headline(stats, s))}</h1>
<p>Imitating {y.year}; traffic at scale {s:g}: amounts, counts and rates are multiplied by {1 / s:,.0f}
to compare with {y.year}'s published figures; shares, moments and reach are compared as they are.{e(window)}
Report made {e(time.strftime("%Y-%m-%d %H:%M:%S"))}.</p>
{warning_html}
<table><thead><tr><th>figure</th><th>measured</th><th>scale undone</th>
<th>{e(compared_with(y.year, h))}</th><th>ratio</th><th></th></tr></thead>
<tbody>{"".join(tr(r) for r in table)}</tbody></table>
<h2>GMV by hour</h2>
<p>Bars: this festival (UTC+8); dots: {y.year}'s hourly shape over the same hours, at the same total.</p>
{_bar_chart([int(v) for v in stats.get("gmv_by_hour_fen") or [0] * 24], targets(y, h).hourly_permille)}
<div class="cols"><div><h2>Top brands</h2><ol>{brands}</ol></div>
<div><h2>Top merchants</h2><ol>{merchants}</ol></div>{sold_out_html}</div>
</body></html>
"""
