// The edgeplane dashboard: a map of metros coloured by state, live from /api/events (server-sent events).
// Everything it loads is served by the control plane itself; data is written as text, never as HTML.
"use strict";

const COLOURS = { serving: "#2e9e44", degraded: "#e69f00", drained: "#8a8f98", down: "#d1352b" };
const TOKEN_KEY = "edgeplane-admin-token";
const tokenInput = document.getElementById("token");
let latest = null;

tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
tokenInput.addEventListener("input", () => {
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  if (latest) render(latest);
});

// -- small helpers ---------------------------------------------------------------------------
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, state) {
  return el("span", { class: "badge", "data-state": state || text }, text);
}

function percent(x) {
  return x === null || x === undefined ? "" : `${Math.round(x * 100)}%`;
}

function fixed(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : "";
}

function when(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// -- admin actions, through the ordinary API -------------------------------------------------
function canAct() {
  return !(latest && latest.admin_token_required) || tokenInput.value.trim() !== "";
}

async function act(method, path, body, what) {
  const headers = { "X-Edgeplane-Actor": "dashboard" };
  const token = tokenInput.value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body) headers["Content-Type"] = "application/json";
  let answer = {};
  let response;
  try {
    response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    answer = await response.json().catch(() => ({}));
  } catch (error) {
    toast(`${what}: ${error}`);
    return null;
  }
  const message = answer.error ? answer.error.message : `HTTP ${response.status}`;
  toast(response.ok ? `${what}: done` : `${what}: ${message}`);
  return response.ok ? answer : null;
}

function button(label, title, onclick) {
  const allowed = canAct();
  return el("button", {
    type: "button",
    disabled: !allowed,
    title: allowed ? title : "type the admin token first",
    onclick,
  }, label);
}

function drainButtons(kind, code, drained) {
  if (drained) {
    return button("undrain", `undrain ${kind} ${code}`, () => act("DELETE", `/api/drains/${kind}/${code}`, null,
      `undrain ${kind} ${code}`));
  }
  return button("drain", `drain ${kind} ${code} (refused if its neighbours cannot take the load)`, () =>
    act("POST", "/api/drains", { kind, code, reason: "from the dashboard" }, `drain ${kind} ${code}`));
}

// -- the map ---------------------------------------------------------------------------------
const map = L.map("map", { worldCopyJump: true, minZoom: 1, zoomSnap: 0.25 }).setView([30, 0], 1.5);
map.attributionControl.setPrefix(false);
map.attributionControl.addAttribution("Leaflet · Natural Earth, via world-atlas");
map.createPane("world").style.zIndex = 250; // under the metros, whenever the outline arrives
fetch("/static/vendor/world-atlas/countries-110m.json")
  .then((response) => response.json())
  .then((topology) => {
    const countries = topojson.feature(topology, topology.objects.countries);
    countries.features = countries.features.filter((f) => f.properties.name !== "Antarctica").map(unwrap);
    L.geoJSON(countries, {
      pane: "world",
      interactive: false,
      style: { color: "#9aa5b1", weight: 0.6, fillColor: "#f2f0e9", fillOpacity: 1 },
    }).addTo(map);
  });
// Rings cut at the antimeridian (Russia's far east, Fiji) jump from 180 to -180: continue them past 180
// instead, or they draw as lines across the whole map.
function unwrap(feature) {
  const geometry = feature.geometry;
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
  for (const polygon of polygons) {
    for (const ring of polygon) {
      const longitudes = ring.map((point) => point[0]);
      if (Math.max(...longitudes) - Math.min(...longitudes) > 180) {
        for (const point of ring) if (point[0] < 0) point[0] += 360;
      }
    }
  }
  return feature;
}
const markers = new Map();
let fitted = false;

function drawMetros(metros) {
  for (const metro of metros) {
    let marker = markers.get(metro.code);
    if (!marker) {
      marker = L.circleMarker([metro.latitude, metro.longitude], { weight: 2, fillOpacity: 0.75 }).addTo(map);
      marker.bindTooltip(metro.code, { permanent: true, direction: "right", className: "metro-label" });
      marker.bindPopup("");
      markers.set(metro.code, marker);
    }
    const colour = COLOURS[metro.state] || COLOURS.down;
    marker.setStyle({ color: colour, fillColor: colour });
    marker.setRadius(6 + 2.5 * Math.sqrt(metro.rps || 0));
    const path = marker.getElement();
    if (path) {
      path.setAttribute("data-metro", metro.code);
      path.setAttribute("data-state", metro.state);
    }
    marker.setPopupContent(el("div", {},
      el("strong", {}, `${metro.name} (${metro.code})`), el("br"),
      `${metro.state} · ${fixed(metro.rps, 1)} req/s · load ${percent(metro.load)}`, el("br"),
      `served at: ${servedAt(metro) || "no traffic"}`));
  }
  if (!fitted && metros.length) {
    map.fitBounds(L.latLngBounds(metros.map((m) => [m.latitude, m.longitude])).pad(0.3));
    fitted = true;
  }
}

function servedAt(metro) {
  const scopes = Object.entries(metro.scopes || {});
  return scopes.map(([scope, share]) => `${scope} ${percent(share)}`).join(", ");
}

// -- the panels ------------------------------------------------------------------------------
function drawMetroTable(state) {
  const drained = new Set(state.drains.filter((d) => d.kind === "metro").map((d) => d.code));
  replaceRows(document.querySelector("#metros tbody"), state.metros.map((metro) => el("tr",
    { "data-metro": metro.code, "data-state": metro.state },
    el("td", {}, metro.code),
    el("td", {}, metro.name),
    el("td", {}, badge(metro.state)),
    el("td", { class: "rps" }, fixed(metro.rps, 1)),
    el("td", { class: "scope" }, servedAt(metro)),
    el("td", {}, percent(metro.load)),
    el("td", {},
      drainButtons("metro", metro.code, drained.has(metro.code)), " ",
      button("drill", `rehearse draining ${metro.code} for 60 s, rolled back if the SLO breaks`, () =>
        act("POST", "/api/drills", { metro: metro.code, duration_seconds: 60 }, `drill ${metro.code}`))))));
}

function drawUnits(state) {
  const drained = new Set(state.drains.filter((d) => d.kind === "unit").map((d) => d.code));
  const rows = [];
  for (const pop of state.pops) {
    rows.push(el("tr", { class: "pop", "data-pop": pop.code, "data-state": pop.state },
      el("td", { colspan: 9 }, `${pop.code} (${pop.metro}) `, badge(pop.state), ` load ${percent(pop.load)} `,
        pop.reason ? el("span", { class: "note" }, pop.reason) : null),
      el("td", {}, drainButtons("pop", pop.code, state.drains.some((d) => d.kind === "pop" && d.code === pop.code)))));
    for (const [code, unit] of Object.entries(pop.units)) {
      const reading = unit.reading || {};
      const alarms = (unit.alarms || []).map((a) => badge(a, "alarm"));
      const held = pop.alarms_held && pop.alarms_held[code];
      rows.push(el("tr", { "data-unit": code, "data-out": unit.out ? "yes" : "no" },
        el("td", {}, code),
        el("td", {}, unit.lifecycle || ""),
        el("td", {}, unit.out ? badge(`out: ${unit.out}`, "drained") : badge("in", "serving")),
        el("td", {}, fixed(reading.inlet_c, 1)),
        el("td", {}, fixed(reading.coolant_supply_c, 1)),
        el("td", {}, typeof reading.pdu_power_w === "number" ? (reading.pdu_power_w / 1000).toFixed(0) : ""),
        el("td", {}, reading.gpus ?? ""),
        el("td", {}, fixed(reading.gpu_temp_max_c, 0),
          (reading.gpu_xid || []).length ? ` XID ${reading.gpu_xid.map((x) => x.xid).join(",")}` : ""),
        el("td", {}, alarms, unit.stale ? el("span", { class: "stale", title: unit.stale }, " telemetry stale") : null,
          held ? el("span", { class: "note", title: held }, " (held: neighbours cannot take the load)") : null),
        el("td", {}, drainButtons("unit", code, drained.has(code)))));
    }
  }
  replaceRows(document.querySelector("#units tbody"), rows);
}

function drawDrains(state) {
  const drains = state.drains.map((d) => el("li", { "data-drain": `${d.kind} ${d.code}` },
    `${d.kind} ${d.code} by ${d.by}${d.reason ? ` (${d.reason})` : ""} `,
    drainButtons(d.kind, d.code, true)));
  document.getElementById("drains").replaceChildren(...(drains.length ? drains : [el("li", {}, "none")]));
  const drills = state.drills.map((d) => el("li", {},
    `#${d.id} ${d.metro}: ${d.state}${d.reason ? ` (${d.reason})` : ""}`));
  document.getElementById("drills").replaceChildren(...(drills.length ? drills : [el("li", {}, "none")]));
}

function drawScenarios(state) {
  const report = state.scenarios;
  const meta = document.getElementById("scenarios-meta");
  const tbody = document.querySelector("#scenarios tbody");
  if (!report) {
    meta.textContent = "none published yet: edgeplane plan scenarios --observed --publish";
    replaceRows(tbody, []);
    return;
  }
  meta.textContent = `published ${when(report.published_at)} by ${report.by}${report.title ? `: ${report.title}` : ""}`;
  const lines = [...report.lines].sort((a, b) => b.unserved_rps - a.unserved_rps
    || ((b.busiest || {}).utilisation || 0) - ((a.busiest || {}).utilisation || 0));
  replaceRows(tbody, lines.slice(0, 15).map((line) => el("tr", {},
    el("td", {}, line.scenario),
    el("td", {}, line.busiest ? line.busiest.pop : ""),
    el("td", {}, line.busiest ? percent(line.busiest.utilisation) : ""),
    el("td", {}, line.breaches),
    el("td", {}, fixed(line.unserved_rps, 1)))));
}

function drawAuditRows(records) {
  replaceRows(document.querySelector("#audit tbody"), records.map((record) => el("tr", {},
    el("td", {}, when(record.at)),
    el("td", {}, record.who),
    el("td", {}, record.action),
    el("td", {}, record.target),
    el("td", {}, record.outcome))));
}

// With an admin token set, the stream leaves the audit log out (it shows who did what to which tenant's key):
// the page reads it with the token typed in, at most once a second.
let auditAsked = 0;
async function drawAudit(state) {
  if (state.audit) {
    drawAuditRows(state.audit);
    return;
  }
  const token = tokenInput.value.trim();
  if (!token) {
    replaceRows(document.querySelector("#audit tbody"),
      [el("tr", {}, el("td", { colspan: "5" }, "type the admin token to see the audit log"))]);
    return;
  }
  if (Date.now() - auditAsked < 1000) return;
  auditAsked = Date.now();
  try {
    const response = await fetch("/api/audit?limit=25", { headers: { Authorization: `Bearer ${token}` } });
    if (response.ok) drawAuditRows((await response.json()).audit);
  } catch (error) {
    // the next state event asks again
  }
}

// -- the peering report, as `edgeplane peering candidates --publish` left it --------------------
// Read from /api/peering/candidates (not the event stream: it changes once in a while and can be large), at most
// every PEERING_EVERY_MS, redrawn only when a new report came.
const PEERING_TOP = 5;
const PEERING_EVERY_MS = 5000;
let peeringAsked = 0;
let peeringShown;

async function refreshPeering() {
  if (Date.now() - peeringAsked < PEERING_EVERY_MS) return;
  peeringAsked = Date.now();
  try {
    const response = await fetch("/api/peering/candidates");
    if (response.ok) drawPeering(await response.json());
  } catch (error) {
    // the next state event asks again
  }
}

function mbps(x) {
  if (typeof x !== "number") return "";
  return x.toFixed(x >= 100 ? 0 : x >= 1 ? 1 : 3);
}

function drawPeering(answer) {
  if (answer.received_at === peeringShown) return;
  peeringShown = answer.received_at;
  const meta = document.getElementById("peering-meta");
  const tbody = document.querySelector("#peering tbody");
  const report = answer.report;
  if (!report) {
    meta.textContent = "";
    replaceRows(tbody, [el("tr", { class: "empty" }, el("td", { colspan: 6 },
      "no peering report published yet (edgeplane peering candidates --publish)"))]);
    return;
  }
  meta.textContent = `as of ${new Date(answer.received_at * 1000).toLocaleString()} · routes from `
    + `${report.routes.source} · top ${PEERING_TOP} per metro by p95 over ${report.bin_seconds / 60}-minute bins`;
  const rows = [];
  for (const metro of report.metros) {
    const transits = new Map(metro.transits.map((t) => [t.asn, t.name]));
    const shown = metro.candidates.slice(0, PEERING_TOP);
    rows.push(el("tr", { class: "pop", "data-metro": metro.code },
      el("td", { colspan: 6 }, `${metro.name} (${metro.code})`,
        metro.candidates.length > shown.length ? ` · ${shown.length} of ${metro.candidates.length}` : "")));
    if (!shown.length) {
      rows.push(el("tr", { "data-metro": metro.code },
        el("td", { colspan: 6, class: "note" }, "no candidates: no traffic through its transits in the window")));
    }
    for (const row of shown) {
      const via = row.via_transits.map((asn) => (transits.get(asn) ? `AS${asn} ${transits.get(asn)}` : `AS${asn}`));
      rows.push(el("tr", { "data-metro": metro.code, "data-asn": row.asn },
        el("td", {}, `AS${row.asn}`),
        el("td", { class: "wrap name" }, row.name || ""),
        el("td", { title: `in ${mbps(row.p95_in_mbps)} · out ${mbps(row.p95_out_mbps)} · ${percent(row.share)} of `
          + "the metro's transit traffic" }, mbps(row.p95_mbps)),
        el("td", { class: "wrap" }, via.join(", ")),
        el("td", {}, typeof row.saving_per_month === "number" ? row.saving_per_month.toFixed(2) : "unknown price"),
        el("td", { class: "wrap" }, row.meet.map((m) => `${m.kind}: ${m.name}`).join(", ") || "nowhere known")));
    }
  }
  replaceRows(tbody, rows);
}

function render(state) {
  latest = state;
  document.getElementById("snapshot").textContent =
    `snapshot v${state.snapshot_version} · ${state.metros.length} metros · ${state.pops.length} PoPs`;
  drawMetros(state.metros);
  drawMetroTable(state);
  drawUnits(state);
  drawDrains(state);
  drawScenarios(state);
  drawAudit(state);
  refreshPeering();
  document.body.setAttribute("data-snapshot", state.snapshot_version);
}

// -- live updates ----------------------------------------------------------------------------
const connection = document.getElementById("connection");
const events = new EventSource("/api/events");
events.addEventListener("state", (event) => {
  connection.textContent = "live";
  connection.dataset.state = "open";
  render(JSON.parse(event.data));
});
events.addEventListener("error", () => {
  connection.textContent = "reconnecting";
  connection.dataset.state = "reconnecting";
});
