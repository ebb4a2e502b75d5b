// The big screen.  Every figure is drawn from the last event of /v1/stats/stream,
// and each element keeps the raw value it shows in data-value, so what the screen
// says can be checked against GET /v1/stats.  Plain JS, no libraries, no network
// but our own server.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  // ?scale= says the traffic was simulated at this share of the real festival; the
  // server's stats may also say so (their word wins).  Only derived figures use it.
  const urlScale = parseFloat(params.get("scale")) || 0;
  const COUNT_UP_MS = 900;
  const DAY_MS = 86400000;
  const SPARK_POINTS = 120;
  const $ = (id) => document.getElementById(id);
  const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const spark = [];
  const counters = {};

  function set(id, value, text) {
    const el = $(id);
    if (!el) return;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text;
  }

  function clock(ms) {
    const neg = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const t = [h, m, s].map((x) => String(x).padStart(2, "0")).join(":");
    return neg ? "-" + t : t;
  }

  function yuanShort(fen) {
    const y = fen / 100;
    if (y >= 1e9) return "¥" + (y / 1e9).toFixed(1) + " bn";
    if (y >= 1e6) return "¥" + (y / 1e6).toFixed(1) + " M";
    return "¥" + int.format(y);
  }

  function clubLabel(fen) {
    const y = fen / 100;
    if (y >= 1e9) return "RMB " + int.format(y / 1e9) + "B";
    if (y >= 1e6) return "RMB " + int.format(y / 1e6) + "M";
    return "RMB " + int.format(y);
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // The big counters count up from what they show to the new figure; data-value
  // holds the new figure at once.  The same figure again (every event, once the
  // traffic stops) leaves the count-up running: restarted every 0.5 s, a 0.9 s
  // count-up never reached its last fen.
  function countUp(id, target, divisor) {
    const el = $(id);
    el.dataset.value = String(target);
    const c = counters[id] || (counters[id] = { shown: 0, raf: 0, target: null });
    if (c.target === target) return;
    c.target = target;
    const from = c.shown, start = performance.now();
    cancelAnimationFrame(c.raf);
    const step = (now) => {
      const k = Math.min(1, (now - start) / COUNT_UP_MS);
      const eased = 1 - Math.pow(1 - k, 3);
      c.shown = k < 1 ? from + (target - from) * eased : target;  // the last frame lands on the figure exactly
      el.textContent = int.format(Math.floor(c.shown / divisor));
      if (k < 1) c.raf = requestAnimationFrame(step);
    };
    if (document.hidden) { c.shown = target; el.textContent = int.format(Math.floor(target / divisor)); }
    else c.raf = requestAnimationFrame(step);
  }

  function renderHours(byHour, nowHour) {
    const svg = $("gmv-by-hour");
    const max = Math.max(1, ...byHour);
    const w = 480 / 24;
    let out = "";
    byHour.forEach((v, h) => {
      const bh = v > 0 ? Math.max(1, 150 * v / max) : 2;
      const cls = v === 0 ? "empty" : h === nowHour ? "now" : "";
      out += `<rect class="${cls}" data-hour="${h}" data-value="${v}" x="${(h * w + 1.5).toFixed(1)}" y="${(160 - bh).toFixed(1)}" width="${(w - 3).toFixed(1)}" height="${bh.toFixed(1)}"><title>${String(h).padStart(2, "0")}:00  ¥${int.format(v / 100)}</title></rect>`;
    });
    svg.innerHTML = out;
    svg.dataset.value = byHour.join(",");
  }

  function renderSpark(v) {
    spark.push(v);
    if (spark.length > SPARK_POINTS) spark.shift();
    const max = Math.max(1, ...spark);
    const pts = spark.map((x, i) => `${(i * 200 / (SPARK_POINTS - 1)).toFixed(1)},${(38 - 36 * x / max).toFixed(1)}`);
    $("pay-spark").querySelector("polyline").setAttribute("points", pts.join(" "));
  }

  function renderList(id, items, line) {
    $(id).innerHTML = items.map(line).join("");
    $(id).dataset.value = items.length;
  }

  function render(s) {
    const scale = Number(s.scale) || urlScale || 1;
    const start = s.festival_start;
    const elapsed = s.at - start;
    set("festival-clock", s.at, elapsed < 0 ? "starts in " + clock(-elapsed) : elapsed >= DAY_MS ? "the day is over" : clock(elapsed));
    set("stats-at", s.at, "figures of " + new Date(s.at).toISOString());

    countUp("gmv-cny", s.gmv_fen, 100);
    countUp("gmv-usd", s.gmv_usd_cents, 100);
    if (scale !== 1) {
      $("scale-note").hidden = false;
      $("scale-note").textContent = "· simulated at scale " + scale;
      $("gmv-full").hidden = false;
      $("gmv-full").textContent = "≈ " + yuanShort(s.gmv_fen / scale) + " at full size";
    }

    const prev = s.previous || {};
    $("prev-year").textContent = prev.year || "last year";
    // Last year at this moment means something next to a simulation, which imitates a
    // year at a scale (its GMV with the scale undone estimates a real day's).  At scale 1
    // the server is a plain serve taking test orders (or a real festival, which the screen
    // cannot tell from one): against a real year's billions it would read -100% all day,
    // which says nothing, so the line is left out.
    $("vs-previous").hidden = scale === 1;
    // growth at the same moment: the server's figure, or with the scale undone
    let growth = null;
    if (scale !== 1) {
      if (prev.gmv_same_moment_fen > 0) growth = s.gmv_fen / scale / prev.gmv_same_moment_fen - 1;
    } else if (prev.gmv_same_moment_fen > 0) {
      growth = prev.growth_same_moment;
    }
    set("growth", growth, growth === null ? "-" : (growth >= 0 ? "+" : "") + (growth * 100).toFixed(1) + "%");
    $("growth").dataset.sign = growth === null ? "" : growth >= 0 ? "+" : "-";
    // the day's final GMV if the rest of it goes like last year's: the share of last
    // year's day done by this moment is gmv_same_moment / gmv
    const done = prev.gmv_fen > 0 ? prev.gmv_same_moment_fen / prev.gmv_fen : 0;
    if (done > 0.001 && s.gmv_fen > 0) {
      const projected = Math.round(s.gmv_fen / Math.min(done, 1));
      set("projection", projected, yuanShort(projected) + (scale !== 1 ? "  (≈ " + yuanShort(projected / scale) + ")" : ""));
    } else {
      set("projection", null, "-");
    }

    set("orders-per-s", s.orders_per_s, int.format(s.orders_per_s));
    set("payments-per-s", s.payments_per_s, int.format(s.payments_per_s));
    const po = s.peak_orders_per_s || {}, pp = s.peak_payments_per_s || {};
    set("peak-orders", po.value, int.format(po.value || 0));
    set("peak-orders-at", po.at, po.at == null ? "-" : clock(po.at - start));
    set("peak-payments", pp.value, int.format(pp.value || 0));
    set("peak-payments-at", pp.at, pp.at == null ? "-" : clock(pp.at - start));
    renderSpark(s.payments_per_s);

    set("mobile-share", s.mobile_share, (s.mobile_share * 100).toFixed(1) + "%");
    set("payments", s.payments, int.format(s.payments));
    set("checkouts", s.checkouts, int.format(s.checkouts));
    set("countries", s.countries, int.format(s.countries));
    $("top-countries").textContent = (s.top_countries || []).slice(0, 5).map((c) => c.country).join(" · ");
    set("buyers", s.buyers, int.format(s.buyers));
    set("new-buyers", s.new_buyers, int.format(s.new_buyers));
    (s.merchant_clubs || []).slice(0, 3).forEach((c, i) => {
      set("club-" + i, c.merchants, int.format(c.merchants));
      $("club-" + i + "-label").textContent = clubLabel(c.threshold_fen);
    });

    renderList("top-brands", s.top_brands || [], (b) =>
      `<li data-brand="${b.brand}"><span class="name">${escapeHtml(b.name)}${b.international ? '<span class="intl">intl</span>' : ""}</span><span class="amount">${yuanShort(b.gmv_fen)}</span></li>`);
    renderList("top-merchants", s.top_merchants || [], (m) =>
      `<li data-merchant="${m.merchant}"><span class="name">${escapeHtml(m.name)}</span><span class="amount">${yuanShort(m.gmv_fen)}</span></li>`);
    const hour = elapsed >= 0 && elapsed < 86400000 ? Math.floor(elapsed / 3600000) : -1;
    renderHours(s.gmv_by_hour_fen || [], hour);
    renderPromotions(s.promotions || {}, start);
  }

  // Discounts by kind, coupons granted and used, what the templates may still
  // grant, and the deals that sold out last with their moment on the festival clock.
  function renderPromotions(p, start) {
    const discounts = p.discounts_fen || {};
    const kinds = ["deal", "store_coupon", "threshold", "platform_coupon"];
    let total = 0;
    kinds.forEach((k) => { const v = discounts[k] || 0; total += v; set("discount-" + k, v, yuanShort(v)); });
    set("discount-total", total, yuanShort(total));
    const granted = p.coupons_granted || 0, used = p.coupons_used || 0;
    set("coupons-granted", granted, int.format(granted));
    set("coupons-used", used, int.format(used));
    set("coupons-used-share", granted ? used / granted : null, granted ? (100 * used / granted).toFixed(1) + "%" : "-");
    const left = p.coupons_left || {}, leftFen = p.coupon_budget_left_fen || {};
    const leftTotal = (leftFen.store || 0) + (leftFen.platform || 0);
    set("budget-left-fen", leftTotal, yuanShort(leftTotal));
    set("coupons-left-store", left.store || 0, int.format(left.store || 0));
    set("coupons-left-platform", left.platform || 0, int.format(left.platform || 0));
    set("deals-sold-out", p.deals_sold_out || 0, int.format(p.deals_sold_out || 0));
    renderList("deals-sold-out-latest", p.deals_sold_out_latest || [], (d) =>
      `<li data-deal="${d.deal}" data-sold-out-at="${d.sold_out_at}"><span class="name">${escapeHtml(d.kind)} · SKU ${d.sku}</span><span class="amount">${clock(d.sold_out_at - start)}</span></li>`);
  }

  function connect() {
    const status = $("connection");
    const source = new EventSource("/v1/stats/stream");
    source.onopen = () => { status.dataset.state = "live"; status.textContent = "live"; };
    source.onerror = () => { status.dataset.state = "lost"; status.textContent = "reconnecting"; };
    source.onmessage = (e) => {
      try { render(JSON.parse(e.data)); }
      catch (err) { console.error("bad stats event", err); }
    };
  }

  window.double11Screen = { render };  // for tests and the console
  connect();
})();
