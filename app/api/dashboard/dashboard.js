"use strict";
(function () {
  const KEY = "x402r_admin_token";
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  // Atomic units (6 decimals) as exact decimal text, never through floats.
  function usdc(atomic) {
    if (atomic === null || atomic === undefined) return "–";
    let v = BigInt(atomic);
    const neg = v < 0n;
    if (neg) v = -v;
    const whole = v / 1000000n;
    const frac = (v % 1000000n).toString().padStart(6, "0");
    return (neg ? "-" : "") + whole.toString() + "." + frac;
  }
  function money(el, atomic) {
    el.textContent = usdc(atomic);
    el.dataset.atomic = String(atomic);
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function api(path, options) {
    const token = sessionStorage.getItem(KEY);
    const headers = Object.assign({ Authorization: "Bearer " + token }, (options || {}).headers);
    const response = await fetch(path, Object.assign({}, options, { headers }));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401 || (response.status === 404 && path.startsWith("/v1/admin/report"))) {
      logout("the admin token was refused");
      throw new Error("unauthorized");
    }
    if (!response.ok) throw new Error((body && body.message) || ("HTTP " + response.status));
    return body;
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    $("dash").classList.add("hidden");
    $("logout").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("login-error").textContent = message || "";
  }

  function renderTotals(t) {
    for (const name of ["revenue", "charges", "keyDebits", "upstreamSpend", "refunds",
      "onchainRefunds", "keyCredits", "margin"]) money($(name), t[name]);
  }

  function renderChart(rows) {
    const chart = $("chart");
    chart.replaceChildren();
    const W = 760, H = 240, left = 62, bottom = 26, top = 10;
    if (!rows.length) {
      chart.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no money moved yet"));
      return;
    }
    const series = [["revenue", "var(--rev)"], ["upstreamSpend", "var(--spend)"],
      ["refunds", "var(--ref)"], ["margin", "var(--margin)"]];
    const values = rows.flatMap((r) => series.map(([k]) => Number(r[k]) / 1e6));
    // Round the axis out to 1-2-5 steps, at most five of them.
    const raw = (Math.max(0, ...values) - Math.min(0, ...values)) / 4 || 1;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const max = Math.ceil(Math.max(0, ...values) / step) * step;
    const min = Math.floor(Math.min(0, ...values) / step) * step;
    const span = (max - min) || 1;
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    const y = (v) => top + (H - top - bottom) * (max - v) / span;
    for (let v = min; v <= max + step / 2; v += step) {
      chart.appendChild(svg("line", { x1: left, x2: W, y1: y(v), y2: y(v), stroke: "#e3e6ee" }));
      chart.appendChild(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(digits)));
    }
    const slot = (W - left) / rows.length;
    const bar = Math.min(28, (slot - 12) / series.length);
    rows.forEach((row, i) => {
      const x0 = left + i * slot + (slot - bar * series.length) / 2;
      series.forEach(([key, color], j) => {
        const v = Number(row[key]) / 1e6;
        const rect = svg("rect", { x: x0 + j * bar, y: Math.min(y(v), y(0)), width: bar - 2,
          height: Math.max(1, Math.abs(y(v) - y(0))), fill: color, rx: 2 });
        rect.appendChild(svg("title", {}, row.day + " " + key + ": " + usdc(row[key])));
        chart.appendChild(rect);
      });
      chart.appendChild(svg("text", { x: left + i * slot + slot / 2, y: H - 8, "text-anchor": "middle" }, row.day));
    });
  }

  function renderStates(counts) {
    const box = $("states");
    box.replaceChildren();
    const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
    const most = Math.max(1, ...entries.map((e) => e[1]));
    if (!entries.length) box.appendChild(el("div", { class: "empty" }, "no jobs yet"));
    for (const [state, n] of entries) {
      const row = el("div", { class: "state-row", "data-state": state });
      row.appendChild(el("code", {}, state));
      const bar = el("div", { class: "bar" });
      const fill = el("span");
      fill.style.width = (100 * n / most) + "%";
      if (state === "needs_attention") fill.style.background = "var(--ref)";
      bar.appendChild(fill);
      row.appendChild(bar);
      row.appendChild(el("span", { class: "num count" }, String(n)));
      box.appendChild(row);
    }
  }

  async function act(jobId, action, reasonInput) {
    const reason = reasonInput.value.trim();
    if (!reason) { $("action-result").textContent = "give a reason first"; reasonInput.focus(); return; }
    try {
      const job = await api("/v1/admin/jobs/" + encodeURIComponent(jobId) + "/" + action, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason, actor: "dashboard" }) });
      $("action-result").textContent = jobId + ": " + action + " recorded, now " + job.state;
    } catch (e) {
      $("action-result").textContent = jobId + ": " + action + " refused: " + e.message;
    }
    await load();
  }

  function renderAttention(jobs) {
    const body = $("attention");
    body.replaceChildren();
    if (!jobs.length) {
      const row = el("tr"); row.appendChild(el("td", { colspan: "6", class: "empty" }, "nothing parked"));
      body.appendChild(row);
    }
    for (const job of jobs) {
      const row = el("tr", { "data-job": job.id });
      const link = row.appendChild(el("td", {})).appendChild(el("a", { class: "job", title: job.id, href: "#" }));
      link.appendChild(el("code", {}, job.id.slice(0, 14) + "…"));
      link.addEventListener("click", (event) => { event.preventDefault(); showTrail(job.id); });
      row.appendChild(el("td", {}, "")).appendChild(el("code", { title: job.payer }, job.payer.slice(0, 10) + "…"));
      const paid = el("td", { class: "num" }); money(paid, job.amount); row.appendChild(paid);
      row.appendChild(el("td", { title: (job.error && job.error.message) || "" }, (job.error && job.error.code) || ""));
      const reason = el("input", { class: "reason", placeholder: "reason", "aria-label": "reason" });
      row.appendChild(el("td")).appendChild(reason);
      const buttons = el("td", { class: "actions" });
      for (const action of ["retry", "refund"]) {
        const b = el("button", { type: "button", "data-action": action }, action === "retry" ? "Retry" : "Refund");
        b.disabled = !job.actions[action];
        b.addEventListener("click", () => act(job.id, action, reason));
        buttons.appendChild(b);
        buttons.appendChild(document.createTextNode(" "));
      }
      row.appendChild(buttons);
      body.appendChild(row);
    }
  }

  // One job's money trail: every ledger row with its transaction, key-ledger rows, actions.
  async function showTrail(jobId) {
    const box = $("trail");
    box.replaceChildren();
    box.classList.remove("hidden");
    let job;
    try { job = await api("/v1/admin/jobs/" + encodeURIComponent(jobId)); } catch (e) {
      box.appendChild(el("div", { class: "error" }, "could not load " + jobId + ": " + e.message));
      return;
    }
    box.dataset.job = job.id;
    box.appendChild(el("h3", {}, job.id + " · " + job.state));
    if (job.error) box.appendChild(el("div", { class: "sub" }, job.error.code + ": " + (job.error.message || "")));
    const table = (title, rows, columns) => {
      box.appendChild(el("h3", {}, title));
      if (!rows.length) { box.appendChild(el("div", { class: "empty" }, "none")); return; }
      const t = el("table"); const head = el("tr");
      columns.forEach((c) => head.appendChild(el("th", {}, c)));
      t.appendChild(head);
      for (const r of rows) {
        const tr = el("tr");
        columns.forEach((c) => {
          const td = el("td", c === "amount" ? { class: "num" } : {});
          if (c === "amount") money(td, r[c]); else td.appendChild(el("code", {}, r[c] === null || r[c] === undefined ? "–" : String(r[c])));
          tr.appendChild(td);
        });
        t.appendChild(tr);
      }
      box.appendChild(t);
    };
    table("Ledger", job.ledger, ["kind", "amount", "txHash"]);
    table("Key ledger", job.keyLedger, ["kind", "amount", "keyId"]);
    table("Operator actions", job.operatorActions, ["action", "actor", "reason", "createdAt"]);
  }

  function renderKeys(rows) {
    const body = $("keys");
    body.replaceChildren();
    const keyed = rows.filter((r) => r.key !== "x402");
    if (!keyed.length) {
      const row = el("tr"); row.appendChild(el("td", { colspan: "6", class: "empty" }, "no key-paid jobs"));
      body.appendChild(row);
    }
    for (const r of keyed) {
      const row = el("tr", { "data-key": r.keyName || r.key });
      row.appendChild(el("td", {}, r.keyName || r.key));
      for (const name of ["revenue", "keyCredits", "upstreamSpend", "margin", "budgetLeft"]) {
        const td = el("td", { class: "num", "data-field": name });
        if (r[name] === null || r[name] === undefined) td.textContent = "no budget"; else money(td, r[name]);
        row.appendChild(td);
      }
      body.appendChild(row);
    }
  }

  function renderWallet(w) {
    const box = $("wallet");
    box.replaceChildren();
    const line = (label, node) => { const d = el("div", { class: "sub" }, label + " "); d.appendChild(node); box.appendChild(d); };
    const balance = el("div", { class: "big", id: "wallet-balance" });
    if (w.balance === null) {
      balance.textContent = "unknown";
      box.appendChild(balance);
      box.appendChild(el("div", { class: "error", id: "wallet-error" }, w.balanceError));
    } else {
      money(balance, w.balance);
      box.appendChild(balance);
      balance.insertAdjacentElement("afterend", el("div", { class: "sub" }, "USDC in the hot wallet"));
      if (BigInt(w.floor) > 0n && BigInt(w.balance) < BigInt(w.floor)) {
        box.appendChild(el("div", { class: "error" }, "below the floor of " + usdc(w.floor)));
      }
    }
    const spent = el("span", { id: "wallet-spent" }); money(spent, w.spentToday);
    const cap = el("span", { id: "wallet-cap" }); money(cap, w.dailyCap);
    const both = el("span"); both.append(spent, " of ", cap, " USDC");
    line("upstream spend, last 24 h:", both);
    const bar = el("div", { class: "bar" }); const fill = el("span");
    fill.style.width = Math.min(100, 100 * Number(w.spentToday) / Math.max(1, Number(w.dailyCap))) + "%";
    bar.appendChild(fill); box.appendChild(bar);
    if (w.balance !== null && BigInt(w.balance) < BigInt(w.dailyCap) - BigInt(w.spentToday)) {
      box.appendChild(el("div", { class: "sub" }, "the balance is below what the cap still allows today"));
    }
    const floor = el("span", { id: "wallet-floor" });
    if (BigInt(w.floor) > 0n) money(floor, w.floor); else floor.textContent = "not set";
    line("readiness floor:", floor);
    line("address", el("code", {}, w.address));
  }

  async function load() {
    try {
      const daysBack = Number($("range").value);
      const since = daysBack ? "since=" + encodeURIComponent(
        new Date(Date.now() - daysBack * 86400000).toISOString()) : "";
      const reportUrl = (by) => "/v1/admin/report?" + [since, by ? "by=" + by : ""].filter(Boolean).join("&");
      const [report, days, keys, parked, wallet] = await Promise.all([
        api(reportUrl("")), api(reportUrl("day")), api(reportUrl("key")),
        api("/v1/admin/jobs?state=needs_attention&limit=50"), api("/v1/admin/wallet")]);
      renderTotals(report.totals);
      renderStates(report.jobsByState);
      renderChart(days.rows);
      renderKeys(keys.rows);
      renderAttention(parked.jobs);
      renderWallet(wallet);
      $("dash-error").textContent = "";
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      if (e.message !== "unauthorized") $("dash-error").textContent = "could not load: " + e.message;
    }
  }

  function show() {
    $("login").classList.add("hidden");
    $("dash").classList.remove("hidden");
    $("logout").classList.remove("hidden");
    return load();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    show();
  });
  $("logout").addEventListener("click", () => logout(""));
  $("range").addEventListener("change", () => load());
  $("refresh").addEventListener("click", () => load());
  if (sessionStorage.getItem(KEY)) show();
})();
