// pygateway dashboard: polls the JSON /metrics and draws on canvas. No build step, no library.
//
// /metrics is cumulative (totals and latency histogram counts since each replica started, summed
// over the live replicas), so every rate and percentile shown is the difference between two
// polls: requests per second, 429s per second, p50/p99 of the requests in the last interval,
// and the cache hit ratio of the last interval.
"use strict";

(() => {
  const POLL_MS = 2000;
  const KEEP = 150; // points per chart: five minutes at one poll every two seconds
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue("--" + name).trim();
  const $ = (id) => document.getElementById(id);

  const series = { rps: [], limited: [], p50: [], p99: [], cache: [] };
  let previous = null; // { at, doc }
  const replicaTotals = new Map(); // replica id -> { at, total }
  let polls = 0;
  let busy = 0; // intervals in which requests were answered

  // -- numbers -----------------------------------------------------------------------------
  function quantile(counts, bounds, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (n && seen + n >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i ? bounds[i - 1] : 0;
        return lower + (bounds[i] - lower) * ((rank - seen) / n);
      }
      seen += n;
    }
    return bounds[bounds.length - 1];
  }

  const minus = (a, b) => a.map((x, i) => x - ((b && b[i]) || 0));
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);

  function cacheCounts(doc) {
    const results = (doc.cache && doc.cache.results) || {};
    return { served: (results.hit || 0) + (results.stale || 0), all: sum(Object.values(results)) };
  }

  function push(name, value) {
    series[name].push(value);
    if (series[name].length > KEEP) series[name].shift();
  }

  function fmt(value, unit, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return value.toFixed(digits === undefined ? 1 : digits) + (unit || "");
  }

  // -- one poll ------------------------------------------------------------------------------
  function update(doc, at) {
    const prev = previous;
    previous = { at, doc };
    polls += 1;
    document.body.dataset.polls = String(polls);
    $("scope").textContent = `${doc.cluster.replicas} replica${doc.cluster.replicas === 1 ? "" : "s"}` +
      (doc.cluster.complete ? "" : " (store unreachable: this replica only)") +
      ` · store ${doc.store.kind}${doc.store.available ? "" : " down"}`;
    status(doc.store.available ? "live" : "store down", doc.store.available ? "ok" : "warn");
    breakers(doc.circuit_breakers || {});
    replicas(doc.replicas || [], at);
    if (!prev) return draw();
    const dt = (at - prev.at) / 1000;
    const req = doc.requests, was = prev.doc.requests;
    const done = req.total - was.total;
    if (dt <= 0 || done < 0) return draw(); // a replica left: totals went down, skip this interval
    const rps = done / dt;
    if (done > 0) document.body.dataset.busy = String(++busy);
    const limited = Math.max(0, req.rate_limited - was.rate_limited) / dt;
    const errors = Math.max(0, (req.by_status["5xx"] || 0) - (was.by_status["5xx"] || 0)) / dt;
    const lat = doc.latency, before = prev.doc.latency;
    const recent = minus(lat.counts, before.counts);
    const p50 = sum(recent) > 0 ? quantile(recent, lat.bounds_ms, 0.5) : null;
    const p99 = sum(recent) > 0 ? quantile(recent, lat.bounds_ms, 0.99) : null;
    const c = cacheCounts(doc), cp = cacheCounts(prev.doc);
    const looked = c.all - cp.all;
    const hitRatio = looked > 0 ? (100 * (c.served - cp.served)) / looked : null;
    push("rps", rps); push("limited", limited); push("p50", p50); push("p99", p99); push("cache", hitRatio);
    $("t-rps").textContent = fmt(rps);
    $("t-429").textContent = fmt(limited);
    $("t-5xx").textContent = fmt(errors);
    $("t-p50").textContent = fmt(p50, " ms", 2);
    $("t-p99").textContent = fmt(p99, " ms", 2);
    $("t-cache").textContent = fmt(hitRatio, " %");
    draw();
  }

  function status(text, kind) {
    const pill = $("status");
    pill.textContent = text;
    pill.className = "pill " + kind;
  }

  function breakers(doc) {
    const body = $("breakers").tBodies[0];
    const services = doc.services || {};
    const rows = Object.keys(services).sort().map((name) => {
      const s = services[name];
      const targets = Object.values(s.targets || {});
      const open = targets.filter((t) => t.state !== "closed").length;
      return `<tr><td>${esc(name)}</td><td><span class="state ${esc(s.state)}">${esc(s.state)}</span></td>` +
        `<td>${targets.length - open}/${targets.length} closed</td><td>${s.recent_failures ?? "–"}</td></tr>`;
    });
    body.innerHTML = rows.join("") || `<tr><td colspan="4" class="muted">no circuit breaker configured</td></tr>`;
  }

  function replicas(list, at) {
    const body = $("replicas").tBodies[0];
    const seen = new Set();
    body.innerHTML = list.map((r) => {
      seen.add(r.id);
      const last = replicaTotals.get(r.id);
      const total = r.requests.total;
      const rate = last && at > last.at && total >= last.total ? (total - last.total) / ((at - last.at) / 1000) : null;
      replicaTotals.set(r.id, { at, total });
      const ratio = r.cache_hit_ratio === null || r.cache_hit_ratio === undefined ? null : 100 * r.cache_hit_ratio;
      return `<tr><td class="${r.self ? "me" : ""}">${esc(r.id)}${r.self ? " (this)" : ""}</td>` +
        `<td>${fmt(rate)}</td><td>${total}</td><td>${fmt(r.latency.p50_ms, " ms", 2)}</td>` +
        `<td>${fmt(r.latency.p99_ms, " ms", 2)}</td><td>${fmt(ratio, " %")}</td><td>${fmt(r.age_s, " s")} ago</td></tr>`;
    }).join("");
    for (const id of replicaTotals.keys()) if (!seen.has(id)) replicaTotals.delete(id);
  }

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
  }

  // -- charts --------------------------------------------------------------------------------
  function draw() {
    let points = 0;
    points += chart($("c-rps"), [["rps", "rps"], ["limited", "limited"]], "");
    points += chart($("c-latency"), [["p50", "p50"], ["p99", "p99"]], " ms");
    points += chart($("c-cache"), [["cache", "cache"]], " %", 100);
    document.body.dataset.rendered = String(points);
  }

  // Draws the named series right-aligned on a shared y axis; returns the data points drawn.
  function chart(canvas, lines, unit, fixedMax) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const values = lines.flatMap(([name]) => series[name]).filter((v) => v !== null);
    let max = fixedMax || niceMax(Math.max(1e-9, ...values));
    const left = 44, right = 6, top = 6, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = colour("muted");
    g.strokeStyle = colour("line");
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(left + pw, y + 0.5); g.stroke();
      g.fillText(label((max * i) / 4) + unit, 2, y + 4);
    }
    g.fillText(`last ${Math.round((KEEP * POLL_MS) / 60000)} min`, left, h - 3);
    const rect = canvas.getBoundingClientRect();
    canvas.dataset.rect = [rect.left, rect.top, rect.width, rect.height].map(Math.round).join(",");
    let drawn = 0;
    for (const [name, key] of lines) {
      const data = series[name];
      const step = pw / (KEEP - 1);
      const x0 = left + pw - step * (data.length - 1);
      g.strokeStyle = colour(key);
      g.lineWidth = 2;
      g.beginPath();
      let pen = false;
      data.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        const x = x0 + step * i, y = top + ph - (ph * Math.min(v, max)) / max;
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
        drawn += v > 0 ? 1 : 0;
      });
      g.stroke();
      // The latest value as a dot, so a single interval is visible too.
      const last = data.length ? data[data.length - 1] : null;
      if (last !== null) {
        g.fillStyle = colour(key);
        g.beginPath();
        g.arc(left + pw, top + ph - (ph * Math.min(last, max)) / max, 3, 0, 2 * Math.PI);
        g.fill();
      }
    }
    canvas.dataset.points = String(drawn);
    return drawn;
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function label(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    return v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2);
  }

  // -- the loop ------------------------------------------------------------------------------
  async function poll() {
    try {
      const resp = await fetch("/metrics", { headers: { accept: "application/json" }, cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      update(await resp.json(), Date.now());
    } catch (err) {
      status("unreachable", "bad");
      $("scope").textContent = String(err);
    }
  }

  window.addEventListener("resize", draw);
  draw();
  poll();
  setInterval(poll, POLL_MS);
})();
