// raytrade dashboard: fetch the /api endpoints with the operator's token, render, refresh live.
// Plain DOM, no framework. Every value is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "raytrade.token";
const POLL_MS = 2000;
const PAGE = document.body.dataset.page;
const SYMBOL = document.body.dataset.symbol;
let wsLive = false;
let refreshing = false;
let refreshAgain = false;

// Token: ?token= on first load (then removed from the address bar), else sessionStorage, else ask.
function takeToken() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function askToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
      form.hidden = true;
      start();
    }
  };
}

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = options || {};
  const headers = Object.assign({ Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) }, opts.headers || {});
  const response = await fetch(path, Object.assign({}, opts, { headers }));
  if (response.status === 401) throw new Unauthorized("token refused");
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!response.ok) {
    const detail = body && body.detail ? JSON.stringify(body.detail) : String(response.status);
    const err = new Error(path + ": " + detail);
    err.status = response.status;
    err.body = body;
    throw err;
  }
  return body;
}

// Endpoints that may not be wired into this app (trading, account, promotions, on-demand explain):
// a 404 reads as "not available" and the page goes on.
const NOT_AVAILABLE = { notAvailable: true };
async function optional(path) {
  try { return await api(path); } catch (e) {
    if (e instanceof Unauthorized) throw e;
    if (e.status === 404 || e.status === 405) return NOT_AVAILABLE;
    return { error: e.message };
  }
}

// Rendering helpers ---------------------------------------------------------------------------------
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 100 ? value.toFixed(2) : value.toPrecision(4);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.map(fmt).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function cell(row, column) {
  const value = typeof column.value === "function" ? column.value(row) : row[column.key];
  if (value instanceof Node) return el("td", {}, [value]);
  if (column.key && column.key.endsWith("_ms")) return el("td", { text: fmtTime(value) });
  return el("td", { text: fmt(value) });
}

// columns: [{key, label, value?}]; without columns, the keys of the first row.
function table(rows, columns, options) {
  const opts = options || {};
  if (!rows || rows.length === 0) return el("p", { class: "muted", text: opts.empty || "none" });
  const cols = columns || Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object" || rows[0][k] === null).map((k) => ({ key: k, label: k }));
  const head = el("tr", {}, cols.map((c) => el("th", { text: c.label || c.key })));
  const body = rows.map((row) => {
    const tr = el("tr", {}, cols.map((c) => cell(row, c)));
    if (opts.rowId) tr.id = opts.rowId(row);
    if (opts.onClick) { tr.className = "clickable"; tr.onclick = () => opts.onClick(row); }
    return tr;
  });
  return el("table", { id: opts.id || "" }, [el("thead", {}, [head]), el("tbody", {}, body)]);
}

function keyValues(obj) {
  const rows = Object.entries(obj || {}).map(([k, v]) => ({ key: k, value: v }));
  return table(rows, [{ key: "key", label: "name" }, { key: "value", label: "value" }]);
}

function fill(id, ...nodes) {
  const target = document.getElementById(id);
  if (target) target.replaceChildren(...nodes);
}

function reasons(list) {
  const span = el("span", { class: "reasons" });
  for (const r of list || []) span.append(el("span", { class: "reason", text: r }));
  if (!list || list.length === 0) span.append(el("span", { class: "muted", text: "—" }));
  return span;
}

function symbolLink(symbol) {
  return el("a", { href: "/symbol/" + encodeURIComponent(symbol), text: symbol });
}

function setBadge(id, text, level) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = level || "";
}

const SIGNAL_COLUMNS = [
  { key: "symbol", label: "symbol", value: (s) => symbolLink(s.symbol) },
  { key: "ts_ms", label: "time" },
  { key: "decision", label: "decision" },
  { key: "ev_long", label: "EV long" },
  { key: "ev_short", label: "EV short" },
  { key: "q05_long", label: "q05 long" },
  { key: "q05_short", label: "q05 short" },
  { key: "size_notional", label: "size" },
  { key: "block_reasons", label: "why not entered", value: (s) => reasons(s.block_reasons) },
];

// Header: health, kill switch, drift -----------------------------------------------------------------
async function renderHeader() {
  const [health, status, risk, drift, trading] = await Promise.all([
    api("/api/health").catch(() => null),
    api("/api/status").catch(() => null),
    api("/api/risk/state"),
    api("/api/drift").catch(() => []),
    optional("/api/trading"),
  ]);
  if (trading.notAvailable) setBadge("trading-state", "not available", "");
  else if (trading.error) setBadge("trading-state", "error", "bad");
  else {
    const level = trading.state === "running" ? "ok" : trading.state === "entries_stopped" ? "warn" : "bad";
    setBadge("trading-state", trading.state.replace("_", " ") + (trading.reason ? " (" + trading.reason + ")" : ""), level);
  }
  if (!health) setBadge("health-state", "down", "bad");
  else if (status && (!status.collector_ok || !status.userstream_ok)) {
    setBadge("health-state", status.collector_ok ? "user stream!" : "data stale", "warn");
  } else setBadge("health-state", "ok", "ok");
  const ks = risk.kill_switch;
  if (ks.active) setBadge("killswitch-state", "ACTIVE" + (ks.reason ? " (" + ks.reason + ")" : ""), "bad");
  else setBadge("killswitch-state", "off", "ok");
  const worst = (drift || []).reduce((m, d) => Math.max(m, d.psi || 0), 0);
  setBadge("drift-state", (drift || []).length ? "psi " + worst.toFixed(2) : "no data", worst > 0.25 ? "bad" : worst > 0.1 ? "warn" : "ok");
  return { status, risk, drift, trading };
}

// Pages ----------------------------------------------------------------------------------------------
let signalFilter = "all";
let lastSignals = [];

function filteredSignals(signals) {
  const list = signals.slice();
  const ev = (s) => Math.max(s.ev_long, s.ev_short);
  if (signalFilter === "blocked") return list.filter((s) => (s.block_reasons || []).length > 0);
  if (signalFilter === "ev") return list.sort((a, b) => ev(b) - ev(a)).slice(0, 10);
  if (signalFilter === "funding") return list.filter((s) => (s.block_reasons || []).some((r) => /funding/i.test(r)));
  if (signalFilter === "vol") return list.filter((s) => (s.block_reasons || []).some((r) => /vol|atr/i.test(r)));
  return list;
}

let drawerSymbol = "";
const onDemand = {};  // "SYMBOL/ts" -> the on-demand explain's answer or its error, kept across refreshes

// explain.contributions: {target: {base, top: [{feature, value, contribution}]}} -> one table per target.
function contributionsView(contributions, id) {
  const targets = Object.keys(contributions || {});
  if (!targets.length) return el("p", { class: "muted", text: "no feature contributions" });
  const rows = [];
  for (const target of targets) {
    const part = contributions[target] || {};
    (part.top || []).forEach((c, i) => rows.push({
      target: i === 0 ? target : "", base: i === 0 ? part.base : null, feature: c.feature, value: c.value, contribution: c.contribution,
    }));
    if (!(part.top || []).length) rows.push({ target, base: part.base, feature: "–", value: null, contribution: null });
  }
  return table(rows, [
    { key: "target" }, { key: "base" }, { key: "feature" }, { key: "value" },
    { key: "contribution", value: (r) => el("span", { class: r.contribution > 0 ? "long" : r.contribution < 0 ? "short" : "", text: fmt(r.contribution) }) },
  ], { id });
}

function explainView(signal) {
  const explain = Object.assign({}, signal.explain || {});
  const contributions = explain.contributions;
  delete explain.contributions;
  const parts = [el("h3", { text: "top features per target" })];
  const key = signal.symbol + "/" + signal.ts_ms;
  if (contributions && Object.keys(contributions).length) {
    parts.push(contributionsView(contributions, "contributions"));
  } else if (onDemand[key] && onDemand[key].contributions) {
    parts.push(el("p", { class: "muted", text: "computed on demand (" + (onDemand[key].source || "on_demand") + ", model " + fmt(onDemand[key].model_version) + ")" }));
    parts.push(contributionsView(onDemand[key].contributions, "contributions"));
  } else {
    parts.push(el("p", { class: "muted", text: "not stored for this signal" }));
    const button = el("button", { id: "explain-button", text: "Explain now" });
    button.onclick = () => explainNow(signal, button);
    parts.push(button);
    if (onDemand[key] && onDemand[key].error) parts.push(el("p", { id: "explain-error", class: "bad", text: onDemand[key].error }));
  }
  parts.push(el("h3", { text: "costs and penalties" }), keyValues(explain));
  return el("div", {}, parts);
}

async function explainNow(signal, button) {
  const key = signal.symbol + "/" + signal.ts_ms;
  button.disabled = true;
  try {
    onDemand[key] = await api("/api/signals/" + encodeURIComponent(signal.symbol) + "/" + signal.ts_ms + "/explain");
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    const detail = e.body && e.body.detail ? (typeof e.body.detail === "string" ? e.body.detail : JSON.stringify(e.body.detail)) : e.message;
    onDemand[key] = { error: (e.status === 404 ? "not available: " : "failed: ") + detail };
  }
  if (drawerSymbol === signal.symbol) showDrawer(signal);
  if (PAGE === "symbol") refresh();
}

function showDrawer(signal) {
  drawerSymbol = signal.symbol;
  const why = (signal.block_reasons || []).length
    ? el("p", {}, [el("b", { text: signal.symbol + " blocked: " }), reasons(signal.block_reasons)])
    : el("p", { text: signal.symbol + ": " + signal.decision + " (no block)" });
  fill("signal-drawer", why, explainView(signal));
}

// The newest promotion of each model whose gates failed or that carries a warning.
async function promotionBanner() {
  const node = document.getElementById("promotion-banner");
  if (!node) return;
  const promotions = await optional("/api/models/promotions?limit=200");
  if (promotions.notAvailable || promotions.error) {
    node.hidden = false;
    node.className = "banner muted";
    node.textContent = "promotion checks: " + (promotions.notAvailable ? "not available" : promotions.error);
    return;
  }
  const newest = {};
  for (const p of promotions || []) if (!(p.name in newest) || p.ts_ms > newest[p.name].ts_ms) newest[p.name] = p;
  const bad = Object.values(newest).filter((p) => p.gates_passed === false || p.warning);
  if (!bad.length) { node.hidden = true; node.replaceChildren(); return; }
  node.hidden = false;
  node.className = "banner warn";
  node.replaceChildren(...bad.map((p) => el("p", {
    text: "⚠ " + p.name + " v" + p.version + " promoted by " + p.source + " at " + fmtTime(p.ts_ms)
      + (p.gates_passed === false ? ": gates FAILED" : "") + (p.warning ? ": " + p.warning : ""),
  })));
}

const pages = {
  async dashboard(ctx) {
    fill("status", ctx.status ? keyValues({
      collector_ok: ctx.status.collector_ok, userstream_ok: ctx.status.userstream_ok,
      kill_switch_active: ctx.status.kill_switch_active, latest_candle: fmtTime(ctx.status.latest_candle_ts_ms),
      latest_signal: el("span", { id: "latest-signal", text: fmtTime(ctx.status.latest_signal_ts_ms) }), latency_ms: ctx.status.latency_ms, queue_lag: ctx.status.queue_lag,
    }) : el("p", { class: "muted", text: "no status" }));
    const account = await optional("/api/account");
    if (account.notAvailable) fill("account", el("p", { class: "muted", id: "account-na", text: "account: not available" }));
    else if (account.error) fill("account", el("p", { class: "bad", text: account.error }));
    else fill("account", keyValues({
      mode: account.mode, equity: account.equity, wallet: account.wallet, available: account.available,
      unrealized_pnl: account.unrealized_pnl, margin_used: account.margin_used, positions: account.positions, as_of: fmtTime(account.ts_ms),
    }));
    await promotionBanner();
    const pnl = await api("/api/pnl").catch(() => null);
    fill("margin", pnl ? keyValues({ realized_pnl: pnl.realized_pnl, fees: pnl.fees, funding: pnl.funding, net: pnl.net }) : el("p", { class: "muted", text: "no account data" }));
    const alerts = (ctx.drift || []).filter((d) => (d.psi || 0) > 0.1 || (d.missing_rate || 0) > 0.01);
    fill("drift-alerts", table(alerts, null, { empty: "no drift alert" }));
    const signals = await api("/api/signals/latest?sort=ev&limit=50");
    fill("top-signals", table(signals, SIGNAL_COLUMNS, { id: "signals", rowId: (s) => "signal-" + s.symbol }));
  },

  async signals() {
    lastSignals = await api("/api/signals/latest?sort=ev&limit=50");
    fill("signals-table", table(filteredSignals(lastSignals), SIGNAL_COLUMNS, {
      id: "signals", rowId: (s) => "signal-" + s.symbol, onClick: showDrawer,
    }));
    const chosen = lastSignals.find((s) => s.symbol === drawerSymbol);
    if (chosen) showDrawer(chosen);
    else fill("signal-drawer", el("p", { class: "muted", text: "click a row: why it entered or was blocked, and its explain" }));
  },

  async symbol() {
    const sym = encodeURIComponent(SYMBOL);
    const [series, positions, orders, fills] = await Promise.all([
      api("/api/symbol/" + sym + "/series"), api("/api/positions/latest"), api("/api/orders"), api("/api/fills").catch(() => []),
    ]);
    const open = positions.open.filter((p) => p.symbol === SYMBOL);
    drawPrice(series, open);
    drawEv(series.signals);
    const latest = series.signals[series.signals.length - 1];
    fill("explain", latest ? el("div", {}, [
      el("p", {}, [el("b", { text: "newest signal " + fmtTime(latest.ts_ms) + ", " + latest.decision + "; why: " }), reasons(latest.block_reasons)]),
      explainView(latest),
    ]) : el("p", { class: "muted", text: "no signal" }));
    fill("symbol-positions", table(open, null, { empty: "flat" }));
    fill("symbol-orders", el("div", {}, [
      table(orders.algo_orders.filter((o) => o.symbol === SYMBOL), null, { empty: "no algo order" }),
      table(orders.orders.filter((o) => o.symbol === SYMBOL), null, { empty: "no order" }),
    ]));
    fill("symbol-fills", table((fills || []).filter((f) => f.symbol === SYMBOL), null, { empty: "no fill" }));
  },

  async positions() {
    const [positions, pnl] = await Promise.all([api("/api/positions/latest"), api("/api/pnl")]);
    const cols = ["symbol", "side", "amt", "entry_price", "mark_price", "sl_price", "tp_price", "liquidation_price", "notional", "leverage", "unrealized_pnl", "mode"].map((k) => ({ key: k }));
    fill("positions-table", el("div", {}, [table(positions.open, cols, { id: "positions", empty: "no open position" }), table(positions.ledger, null, { empty: "ledger flat" })]));
    const distance = (p) => (p.liquidation_price && p.mark_price ? Math.abs(p.mark_price - p.liquidation_price) / p.mark_price : Infinity);
    const top = positions.open.slice().sort((a, b) => distance(a) - distance(b)).slice(0, 5)
      .map((p) => ({ symbol: p.symbol, liquidation_distance: distance(p), notional: p.notional }));
    fill("risk-top", table(top, null, { empty: "no open position" }));
    fill("pnl", el("div", {}, [keyValues({ realized_pnl: pnl.realized_pnl, fees: pnl.fees, funding: pnl.funding, net: pnl.net }), table(pnl.by_symbol)]));
  },

  async orders() {
    const [orders, fills] = await Promise.all([api("/api/orders"), api("/api/fills")]);
    const isOpen = (o) => ["NEW", "PARTIALLY_FILLED", "WORKING"].includes(o.status);
    const stops = orders.algo_orders.filter(isOpen).map((o) => Object.assign({ kind: "algo" }, o));
    const open = orders.orders.filter(isOpen).map((o) => Object.assign({ kind: "regular" }, o));
    const cols = ["kind", "symbol", "type", "side", "status", "qty", "price", "trigger_price", "stop_price", "created_at_ms"].map((k) => ({ key: k }));
    fill("orders-open", table(stops.concat(open), cols, { id: "open-orders", empty: "no open order" }));
    fill("orders-table", table(orders.orders, null, { empty: "no order" }));
    fill("fills-table", table(fills, null, { empty: "no fill" }));
  },

  async training() {
    await rlSection();
    const [jobs, models] = await Promise.all([api("/api/training/jobs"), api("/api/models"), promotionBanner()]);
    fill("jobs-table", table(jobs, ["job_id", "kind", "status", "progress", "created_at_ms", "report_uri", "error"].map((k) => ({ key: k })), { empty: "no job" }));
    // the RL agent's registered models (<strategy>-rl) are promoted in their own section below
    fill("models-table", table(models.filter((m) => !/-rl$/.test(m.name)), [
      { key: "name" }, { key: "versions" }, { key: "production" }, { key: "previous" },
      { key: "actions", value: (m) => el("span", {}, [
        actionButton("promote", "Promote the newest version of " + m.name + "?", "/api/models/" + encodeURIComponent(m.name) + "/promote", {}),
        actionButton("rollback", "Roll " + m.name + " back to its previous version?", "/api/models/" + encodeURIComponent(m.name) + "/rollback", {}),
      ]) },
    ], { empty: "no model" }));
  },

  async risk(ctx) {
    const risk = ctx.risk;
    fill("risk-state", el("div", {}, [keyValues(Object.assign({ kill_file: risk.kill_file }, risk.kill_switch)), table(risk.risk_events, null, { empty: "no risk event" })]));
    const events = await api("/api/safety-events");
    const history = risk.history.map((h) => ({ ts_ms: h.ts_ms, kind: h.kind, detail: fmt(h) }));
    fill("safety-events", el("div", {}, [table(events, ["ts_ms", "kind", "source", "symbol", "payload"].map((k) => ({ key: k })), { empty: "no safety event" }), table(history, null, { empty: "no kill-switch history" })]));
  },

  async "data-quality"(ctx) {
    const summary = await api("/api/data-quality/summary");
    fill("dq-summary", el("div", {}, [keyValues(summary.counts), table(summary.candles_1m, null, { empty: "no candle" }), table(summary.recent, null, { empty: "no data-quality event" })]));
    const drift = ctx.drift || [];
    const target = el("div", { class: "chart", id: "drift-heatmap" });
    fill("drift-table", target, table(drift, null, { empty: "no drift measured" }));
    if (drift.length && window.Plotly) {
      const symbols = [...new Set(drift.map((d) => d.symbol))];
      const metrics = ["psi", "missing_rate", "outlier_rate"];
      const z = metrics.map((m) => symbols.map((s) => { const row = drift.filter((d) => d.symbol === s).pop(); return row[m]; }));
      window.Plotly.react(target, [{ type: "heatmap", x: symbols, y: metrics, z }], { margin: { t: 10 } }, { displayModeBar: false });
    }
  },

  async settings() {
    const settings = await api("/api/settings");
    const flat = Object.assign({}, settings);
    delete flat.killswitch;
    fill("settings-view", el("div", {}, [keyValues(flat), el("h3", { text: "kill switch" }), keyValues(settings.killswitch)]));
  },
};

// RL agent (spec 001 §25.6) on the Training & models page: models with metrics, gates and Promote; the
// action distribution per model (all decisions, and the last 24 h); the recent decisions with their
// action probabilities. Endpoints not wired read "not available" and the rest of the page goes on.
const RL_ACTIONS = ["HOLD", "LONG", "SHORT", "CLOSE"];
const RL_COLORS = { HOLD: "#9ca3af", LONG: "#0f7b3f", SHORT: "#b42318", CLOSE: "#1d4ed8" };
const rlDecisionsOf = {};  // model_id -> the newest promote answer of this page (gates, refused or not)

function rlMetric(metrics, ...keys) {
  for (const k of keys) if (metrics && typeof metrics[k] === "number") return metrics[k];
  return null;
}

function rlVersion(m) {
  const match = /^models:\/(.+)\/(\d+)$/.exec(m.model_path || "");
  return match ? match[1] + " v" + match[2] : (m.model_path || "–");
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }

function rlGates(m) {
  const answer = rlDecisionsOf[m.model_id];
  if (answer) {
    const text = answer.gates_passed ? "passed" : "failed: " + answer.failed_gates.join(", ");
    return el("span", { class: answer.gates_passed ? "long" : "bad", title: answer.gates.map((g) => g.reason).join("; "), text });
  }
  const g = rlMetric(m.metrics, "gates_passed");
  if (g === null) return el("span", { class: "muted", text: "not recorded" });
  return el("span", { class: g >= 1 ? "long" : "bad", text: g >= 1 ? "passed (train)" : "failed (train)" });
}

function probsBar(probs) {
  const bar = el("span", { class: "probs", title: RL_ACTIONS.map((a) => a + " " + pct(probs[a])).join(", ") });
  for (const a of RL_ACTIONS) {
    const v = typeof probs[a] === "number" ? probs[a] : 0;
    const part = el("span", { class: "prob prob-" + a });
    part.style.width = (100 * Math.max(0, Math.min(1, v))).toFixed(1) + "%";
    part.style.background = RL_COLORS[a];
    bar.append(part);
  }
  return bar;
}

function rlSummary(r) {
  const who = r.kind === "override" ? " with override by " + r.actor + " (" + r.override_reason + ")" : "";
  if (r.promoted) return r.name + " v" + r.version + " is production" + who + (r.gates_passed ? ", all gates passed" : ", gates failed: " + r.failed_gates.join(", "));
  return "refused: gates failed: " + r.gates.filter((g) => !g.passed).map((g) => g.name + " (" + g.reason + ")").join("; ");
}

// One POST per click (a busy flag, the button disabled in flight), a fresh Idempotency-Key each time.
async function rlPromote(button, m, override) {
  if (button.dataset.busy === "1") return;
  const ok = override === null ? window.confirm("Promote " + rlVersion(m) + " through the gates?") : true;
  if (!ok) return;
  button.dataset.busy = "1";
  button.disabled = true;
  const body = { actor: "dashboard" };
  if (override) body.override_reason = override;
  try {
    const result = await api("/api/rl/models/" + encodeURIComponent(m.model_id) + "/promote", {
      method: "POST", headers: { "Content-Type": "application/json", "Idempotency-Key": newKey() }, body: JSON.stringify(body),
    });
    rlDecisionsOf[m.model_id] = result;
    showResult("RL promote: " + rlSummary(result), false);
  } catch (e) {
    if (e instanceof Unauthorized) { showResult("token refused", true); return; }
    if (e.body && e.body.kind === "refused") { rlDecisionsOf[m.model_id] = e.body; showResult("RL promote " + rlVersion(m) + ": " + rlSummary(e.body), true); }
    else if (e.status === 404 || e.status === 405) showResult("RL promote: not available on this server", true);
    else showResult("RL promote failed: " + e.message, true);
  } finally {
    button.dataset.busy = "0";
    button.disabled = false;
    refresh();
  }
}

function rlActions(m) {
  const promote = el("button", { text: "Promote", "data-action": "rl-promote", id: "rl-promote-" + m.model_id });
  promote.onclick = () => rlPromote(promote, m, null);
  const override = el("button", { text: "Override…", "data-action": "rl-override", id: "rl-override-" + m.model_id });
  override.onclick = () => {
    const reason = window.prompt("Promote " + rlVersion(m) + " even if gates fail. Reason (recorded with the event):", "");
    if (reason && reason.trim()) rlPromote(override, m, reason.trim());
  };
  const answer = rlDecisionsOf[m.model_id];
  return el("span", {}, answer && !answer.promoted ? [promote, override] : [promote]);
}

async function rlSection() {
  const since = Date.now() - 24 * 3600 * 1000;
  const [models, decisions, day] = await Promise.all([
    optional("/api/rl/models"), optional("/api/rl/decisions?limit=50"), optional("/api/rl/decisions/stats?from=" + since),
  ]);
  const unavailable = (r, what) => el("p", { class: r.notAvailable ? "muted" : "bad", text: what + ": " + (r.notAvailable ? "not available" : r.error) });
  if (models.notAvailable || models.error) {
    fill("rl-models", unavailable(models, "RL models"));
    fill("rl-actions", unavailable(models, "RL action distribution"));
  } else {
    fill("rl-models", table(models, [
      { key: "version", value: (m) => el("span", { title: m.model_id, text: rlVersion(m) }) },
      { key: "symbol" },
      { key: "train window", value: (m) => fmtTime(m.train_start_ms).slice(0, 10) + " → " + fmtTime(m.train_end_ms).slice(0, 10) },
      { key: "PF", value: (m) => rlMetric(m.metrics, "eval_profit_factor", "profit_factor", "pf") },
      { key: "win rate", value: (m) => pct(rlMetric(m.metrics, "eval_win_rate", "win_rate")) },
      { key: "Sharpe", value: (m) => rlMetric(m.metrics, "eval_sharpe", "sharpe") },
      { key: "max DD", value: (m) => pct(rlMetric(m.metrics, "eval_max_drawdown", "max_drawdown")) },
      { key: "gates", value: rlGates },
      { key: "production", value: (m) => el("span", { class: m.is_production ? "badge ok" : "muted", text: m.is_production ? "production" : "–" }) },
      { key: "decisions", value: (m) => m.stats.decisions },
      { key: "actions", value: rlActions },
    ], { id: "rl-models-table", rowId: (m) => "rl-model-" + m.model_id, empty: "no RL model" }));
    const target = el("div", { class: "chart", id: "rl-actions-plot" });
    const dayRows = day.notAvailable || day.error ? [] : day;
    const versionOf = Object.fromEntries(models.map((m) => [m.model_id, rlVersion(m)]));
    const dayTable = day.notAvailable || day.error
      ? unavailable(day, "24 h stats")
      : table(dayRows.map((s) => Object.assign({ model: versionOf[s.model_id] || s.model_id || "(none)", decisions: s.decisions, executed: s.executed,
          mean_confidence: s.mean_confidence, pnl: s.pnl_result }, s.actions)), null, { id: "rl-stats-24h", empty: "no decision in 24 h" });
    fill("rl-actions", target, el("h3", { text: "last 24 h" }), dayTable);
    const withDecisions = models.filter((m) => m.stats.decisions > 0);
    if (window.Plotly && withDecisions.length) {
      const traces = withDecisions.map((m) => ({ type: "bar", name: rlVersion(m), x: RL_ACTIONS, y: RL_ACTIONS.map((a) => m.stats.action_share[a] || 0) }));
      window.Plotly.react(target, traces, { barmode: "group", margin: { t: 10 }, yaxis: { title: { text: "share of decisions" }, tickformat: ".0%" } }, { displayModeBar: false });
    } else if (!withDecisions.length) target.replaceChildren(el("p", { class: "muted", text: "no RL decision recorded" }));
  }
  if (decisions.notAvailable || decisions.error) fill("rl-decisions", unavailable(decisions, "RL decisions"));
  else fill("rl-decisions", table(decisions, [
    { key: "ts_ms", label: "time" },
    { key: "symbol", value: (d) => symbolLink(d.symbol) },
    { key: "action", value: (d) => el("span", { style: "color:" + RL_COLORS[d.action_name], text: d.action_name }) },
    { key: "probabilities", value: (d) => probsBar(d.action_probs || {}) },
    { key: "confidence", value: (d) => pct(d.confidence) },
    { key: "value", value: (d) => d.value_estimate },
    { key: "executed" },
    { key: "position", value: (d) => fmt(d.position_before) + " → " + fmt(d.position_after) },
    { key: "pnl", value: (d) => d.pnl_result },
    { key: "model", value: (d) => (d.model_id || "–").slice(0, 8) },
  ], { id: "rl-decisions-table", empty: "no RL decision" }));
}

// Charts ---------------------------------------------------------------------------------------------
// Price: last (1m candles) or mark (stored marks, else the positions' marks), chosen by the toggle;
// lines of entry, SL, TP, liquidation, the working stop orders and the open position's mark; the open
// trade's stop drawn as the active stop, labelled with the trade's risk.
let priceSource = "last";
const LINE_COLORS = { entry: "#1d4ed8", sl: "#b42318", stop: "#e11d48", tp: "#0f7b3f", liquidation: "#7c2d12", mark: "#6b21a8" };

function drawPrice(series, open) {
  const toggle = el("span", { class: "toggle", id: "price-toggle" }, ["last", "mark"].map((name) => {
    const b = el("button", { id: "price-" + name, text: name, "aria-pressed": String(priceSource === name) });
    b.onclick = () => { priceSource = name; refresh(); };
    return b;
  }));
  const target = el("div", { class: "chart", id: "price-plot" });
  const lines = series.lines.map((l) => ({ kind: l.kind, price: l.price, side: l.side, from_ms: l.from_ms, to_ms: l.to_ms }));
  for (const p of open) {
    if (p.mark_price) lines.push({ kind: "mark", price: p.mark_price, side: p.side, from_ms: p.ts_ms, to_ms: null });
  }
  const risk = (series.risk || []).map((r) => ({
    trade: r.trade_group_id, side: r.side, open: r.to_ms === null, qty: r.qty, entry: r.entry_price, stop: r.sl_price,
    risk_usdt: r.risk_usdt, risk_pct: (100 * r.risk_pct).toFixed(2) + " %", from_ms: r.from_ms,
  }));
  const active = (series.risk || []).filter((r) => r.to_ms === null);
  const summary = active.length
    ? el("p", { id: "active-stop", text: active.map((r) => "active stop " + fmt(r.sl_price) + " (" + r.side + "), risk " + fmt(r.risk_usdt) + " USDT = " + (100 * r.risk_pct).toFixed(2) + " % of the price").join("; ") })
    : el("p", { id: "active-stop", class: "muted", text: "no open trade: no active stop" });
  const marks = series.marks || [];
  const note = priceSource === "mark" && !marks.length ? el("p", { class: "muted", id: "mark-none", text: "no mark price stored for this window" }) : el("span");
  fill("price-chart", el("div", {}, [el("span", { class: "muted", text: "price " }), toggle]), note, summary, target,
    table(lines, null, { id: "price-lines", empty: "no position line" }),
    el("h3", { text: "risk per trade" }), table(risk, null, { id: "risk-table", empty: "no trade in the window" }));
  if (!window.Plotly) return;
  const x = series.candles.map((c) => new Date(c.ts_ms));
  const traces = priceSource === "mark"
    ? [{ type: "scatter", mode: "lines", name: "mark", x: marks.map((m) => new Date(m.ts_ms)), y: marks.map((m) => m.price), line: { color: LINE_COLORS.mark } }]
    : [{ type: "candlestick", name: "last", x, open: series.candles.map((c) => c.open), high: series.candles.map((c) => c.high), low: series.candles.map((c) => c.low), close: series.candles.map((c) => c.close) }];
  const end = x.length ? x[x.length - 1] : new Date();
  const annotations = [];
  for (const l of lines) {
    const isActive = (l.kind === "sl" && l.to_ms === null) || l.kind === "stop";
    traces.push({ type: "scatter", mode: "lines", name: isActive ? "active stop" : l.kind, x: [new Date(l.from_ms), l.to_ms ? new Date(l.to_ms) : end], y: [l.price, l.price],
      line: { color: LINE_COLORS[l.kind], width: isActive ? 3 : 1.5, dash: l.kind === "entry" ? "solid" : l.kind === "mark" ? "dot" : "dash" } });
  }
  // y range: the prices and the lines near them; a line far off (a liquidation at low leverage) is
  // named at the edge rather than squashing the candles flat
  const near = traces[0].type === "candlestick" ? traces[0].low.concat(traces[0].high) : traces[0].y.slice();
  for (const l of lines) if (l.kind !== "liquidation") near.push(l.price);
  let yaxis = {};
  if (near.length) {
    const lo = Math.min(...near), hi = Math.max(...near);
    const pad = Math.max((hi - lo) * 0.15, Math.abs(hi) * 0.002);
    yaxis = { range: [lo - pad, hi + pad] };
    for (const l of lines) {
      if (l.kind === "liquidation" && (l.price < lo - pad || l.price > hi + pad)) {
        annotations.push({ x: end, y: l.price < lo ? lo - pad : hi + pad, xanchor: "right", yanchor: l.price < lo ? "bottom" : "top", showarrow: false,
          font: { color: LINE_COLORS.liquidation }, text: "liquidation " + fmt(l.price) + (l.price < lo ? " ↓ (off chart)" : " ↑ (off chart)") });
      }
    }
  }
  for (const r of active) {
    annotations.push({ x: end, y: r.sl_price, xanchor: "right", yanchor: "bottom", showarrow: false, font: { color: LINE_COLORS.sl },
      text: "active stop " + fmt(r.sl_price) + " · risk " + fmt(r.risk_usdt) + " USDT (" + (100 * r.risk_pct).toFixed(2) + "%)" });
  }
  window.Plotly.react(target, traces, { margin: { t: 10 }, xaxis: { rangeslider: { visible: false } }, yaxis, annotations }, { displayModeBar: false });
}

// EV beside its parts: EV and ER (long/short), and the tail: q05 and expected MAE (long/short).
function drawEv(signals) {
  const top = el("div", { class: "chart", id: "ev-plot" });
  const bottom = el("div", { class: "chart", id: "tail-plot" });
  const latest = signals[signals.length - 1];
  const values = latest ? keyValues({
    time: fmtTime(latest.ts_ms), ev_long: latest.ev_long, ev_short: latest.ev_short, er_long: latest.er_long, er_short: latest.er_short,
    q05_long: latest.q05_long, q05_short: latest.q05_short, e_mae_long: latest.e_mae_long, e_mae_short: latest.e_mae_short,
  }) : el("p", { class: "muted", text: "no signal" });
  values.id = "series-latest";
  fill("ev-chart", values, top, bottom);
  if (!window.Plotly || !signals.length) return;
  const x = signals.map((s) => new Date(s.ts_ms));
  const line = (name, key, color, dash) => ({ type: "scatter", mode: "lines", name, x, y: signals.map((s) => s[key]), line: { color, dash: dash || "solid" } });
  window.Plotly.react(top, [
    line("EV long", "ev_long", "#0f7b3f"), line("EV short", "ev_short", "#b42318"),
    line("ER long", "er_long", "#0f7b3f", "dot"), line("ER short", "er_short", "#b42318", "dot"),
  ], { margin: { t: 10 }, yaxis: { title: { text: "EV / ER" } } }, { displayModeBar: false });
  window.Plotly.react(bottom, [
    line("q05 long", "q05_long", "#0f7b3f"), line("q05 short", "q05_short", "#b42318"),
    line("E[MAE] long", "e_mae_long", "#0f7b3f", "dash"), line("E[MAE] short", "e_mae_short", "#b42318", "dash"),
  ], { margin: { t: 10 }, yaxis: { title: { text: "q05 / E[MAE]" } } }, { displayModeBar: false });
}

// Operator actions: confirm, one request with a fresh Idempotency-Key, show the result. -----------------
function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showResult(text, bad) {
  const node = document.getElementById("action-result");
  node.textContent = text;
  node.className = bad ? "bad" : "";
}

async function act(button, question, path, body) {
  if (button.dataset.busy === "1") return;  // a double click sends one request
  if (!window.confirm(question)) return;
  button.dataset.busy = "1";
  button.disabled = true;
  try {
    const result = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": newKey() },
      body: JSON.stringify(body),
    });
    showResult(button.textContent + ": " + summarize(result), false);
  } catch (e) {
    if (e instanceof Unauthorized) { showResult("token refused", true); return; }
    if (e.body && e.body.kill_switch) showResult(button.textContent + ": " + summarize(e.body), true);
    else if (e.status === 404 || e.status === 405) showResult(button.textContent + ": not available on this server", true);
    else showResult(button.textContent + " failed: " + e.message, true);
  } finally {
    button.dataset.busy = "0";
    button.disabled = false;
    refresh();
  }
}

function summarize(result) {
  if (result && result.kill_switch) {
    return (result.applied === false ? "refused; " : "done; ") + "kill switch " + (result.kill_switch.active ? "ACTIVE" : "off");
  }
  if (result && result.job_id) return "queued job " + result.job_id;
  if (result && result.state) return "trading " + result.state.replace("_", " ");
  return "done " + fmt(result);
}

function actionButton(label, question, path, body) {
  const button = el("button", { text: label, "data-action": label });
  button.onclick = () => act(button, question, path, body);
  return button;
}

function wireControls() {
  const kill = document.getElementById("kill-button");
  kill.onclick = () => act(kill, "Activate the kill switch (stop new entries)?", "/api/killswitch", { active: true, close_positions: false, reason: "dashboard" });
  const killClose = document.getElementById("kill-close-button");
  killClose.onclick = () => act(killClose, "Activate the kill switch AND cancel orders and close every position?", "/api/killswitch", { active: true, close_positions: true, reason: "dashboard" });
  const resume = document.getElementById("resume-button");
  resume.onclick = () => act(resume, "Resume trading (deactivate the kill switch)?", "/api/killswitch", { active: false, reason: "dashboard" });
  const trading = [
    ["start-button", "Start trading (allow new entries)?", "start"],
    ["stop-entries-button", "Stop new entries (open positions stay, with their stops)?", "stop-entries"],
    ["stop-button", "Stop trading?", "stop"],
  ];
  for (const [id, question, verb] of trading) {
    const button = document.getElementById(id);
    if (button) button.onclick = () => act(button, question, "/api/trading/" + verb, { reason: "dashboard" });
  }
  const filter = document.getElementById("signal-filter");
  if (filter) filter.onchange = () => { signalFilter = filter.value; refresh(); };
  const enqueue = document.getElementById("enqueue-form");
  if (enqueue) {
    const button = document.getElementById("enqueue-button");
    enqueue.onsubmit = (ev) => {
      ev.preventDefault();
      const kind = document.getElementById("job-kind").value;
      act(button, "Enqueue a " + kind + " job?", "/api/jobs", { kind, config: {} });
    };
  }
}

// Refresh: over the WebSocket when it is there, else every 2 s. --------------------------------------
async function refresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  try {
    const ctx = await renderHeader();
    await pages[PAGE](ctx);
    document.body.dataset.refreshedMs = String(Date.now());
  } catch (e) {
    if (e instanceof Unauthorized) { sessionStorage.removeItem(TOKEN_KEY); showResult("token refused: enter it again", true); askToken(); return; }
    showResult(String(e.message || e), true);
  } finally {
    refreshing = false;
    if (refreshAgain) { refreshAgain = false; refresh(); }
  }
}

// The /ws protocol (serve/api/ws.py): auth as the first message, subscribe to every channel the
// server offers, answer pings; every data message triggers a refresh of the page's state.
function connectWs() {
  let ws;
  try {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + window.location.host + "/ws");
  } catch (e) { return; }
  ws.onopen = () => ws.send(JSON.stringify({ op: "auth", token: sessionStorage.getItem(TOKEN_KEY) }));
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    if (msg.op === "ready") {
      ws.send(JSON.stringify({ op: "subscribe", channels: msg.channels || [] }));
    } else if (msg.op === "subscribed") {
      wsLive = true;
      setBadge("live-state", "websocket", "ok");
      refresh();
    } else if (msg.op === "ping") {
      ws.send(JSON.stringify({ op: "pong", ts: msg.ts }));
    } else if (msg.channel) {
      refresh();
    }
  };
  ws.onclose = () => {
    wsLive = false;
    setBadge("live-state", "polling 2 s", "warn");
    window.setTimeout(connectWs, 5000);
  };
  ws.onerror = () => ws.close();
  // leaving the page closes the socket at once (the server holds a request slot per open socket)
  window.addEventListener("pagehide", () => { ws.onclose = null; ws.close(1000, "page left"); }, { once: true });
}

let started = false;
function start() {
  if (started) { refresh(); return; }
  started = true;
  wireControls();
  setBadge("live-state", "polling 2 s", "warn");
  connectWs();
  refresh();
  window.setInterval(() => { if (!wsLive) refresh(); }, POLL_MS);
}

if (takeToken()) start(); else askToken();
