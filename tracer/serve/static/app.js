// The pages of `tracer serve`: one script, no dependencies, no build step.
//
// Every string that comes from a span (or any answer of the API) reaches the page through
// textContent or setAttribute of a non-URL attribute; links are built only from ids checked to
// be hex. The Content-Security-Policy forbids inline scripts and styles, so styles are classes,
// SVG attributes or element.style set from here.
"use strict";

(function () {
  const pages = (window.tracerPages = window.tracerPages || {});
  const SVG = "http://www.w3.org/2000/svg";
  const TRACE_ID = /^[0-9a-f]{32}$/i;
  const SPAN_ID = /^[0-9a-f]{16}$/i;
  // Colours of services: a fixed palette picked by a hash of the name, so a service keeps its
  // colour from one trace to the next.
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
    "#ff9da7", "#9c755f", "#3d9be9", "#8cd17d", "#d37295", "#86bcb6",
  ];
  const STATUS_COLOURS = { "2xx": "#59a14f", "3xx": "#4e79a7", "4xx": "#f28e2b", "5xx": "#e15759", other: "#9d9d9d" };
  const LATENCY_COLOURS = { p50_ms: "#4e79a7", p95_ms: "#f28e2b", p99_ms: "#e15759" };
  const numbers = new Intl.NumberFormat("en-US");
  let timers = [];

  // --- small helpers -------------------------------------------------------------------------

  /** An HTML element: attrs holds attributes (class, text for textContent, on* as listeners). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAll(node, attrs);
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  /** An SVG element, the same way. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAll(node, attrs);
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function setAll(node, attrs) {
    if (!attrs) return;
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (key === "href") node.setAttribute("href", safeHref(value));
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  /** Only the viewer's own paths are ever links. */
  function safeHref(value) {
    const text = String(value);
    return text.startsWith("/") && !text.startsWith("//") ? text : "#";
  }

  function traceHref(id) {
    return TRACE_ID.test(id) ? "/trace/" + id.toLowerCase() : null;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function message(text, kind) {
    const box = document.getElementById("message");
    if (!box) return;
    if (!text) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = text;
    box.className = kind || "error";
    box.hidden = false;
  }

  class ApiError extends Error {
    constructor(status, text) {
      super(text);
      this.status = status;
    }
  }

  /** The JSON of one API call; an ApiError carrying the server's reason when it failed. */
  async function api(path, options) {
    let answer;
    try {
      answer = await fetch(path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
    } catch (error) {
      throw new ApiError(0, "the viewer does not answer (" + error.message + ")");
    }
    let body = null;
    try {
      body = await answer.json();
    } catch (error) {
      body = null;
    }
    if (!answer.ok) {
      const reason = body && typeof body.error === "string" ? body.error : answer.statusText;
      throw new ApiError(answer.status, answer.status + " " + reason);
    }
    return body;
  }

  function postJson(path, document) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(document) });
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
      else if (value !== null && value !== undefined && value !== "") search.append(key, value);
    }
    const text = search.toString();
    return text ? "?" + text : "";
  }

  function hash(text) {
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return h >>> 0;
  }

  function serviceColour(name) {
    return PALETTE[hash(String(name)) % PALETTE.length];
  }

  function fmtDuration(us) {
    if (us === null || us === undefined || !isFinite(us)) return "";
    const a = Math.abs(us);
    if (a < 1000) return Math.round(us) + " µs";
    if (a < 1e6) return trim(us / 1000, a < 10000 ? 2 : a < 100000 ? 1 : 0) + " ms";
    if (a < 60e6) return trim(us / 1e6, 2) + " s";
    return trim(us / 60e6, 1) + " min";
  }

  function fmtMs(ms) {
    return ms === null || ms === undefined ? "" : fmtDuration(ms * 1000);
  }

  function trim(value, digits) {
    return String(Number(value.toFixed(digits)));
  }

  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return "";
    const a = Math.abs(bytes);
    for (const [unit, size] of [["GB", 2 ** 30], ["MB", 2 ** 20], ["KB", 2 ** 10]]) {
      if (a >= size) return trim(bytes / size, 1) + " " + unit;
    }
    return bytes + " B";
  }

  function fmtCount(n) {
    return n === null || n === undefined ? "" : numbers.format(n);
  }

  function fmtPercent(ratio) {
    return ratio === null || ratio === undefined ? "" : trim(ratio * 100, 1) + "%";
  }

  function fmtTime(us) {
    if (us === null || us === undefined) return "";
    const d = new Date(us / 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return (
      d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3)
    );
  }

  function fmtClock(us) {
    const d = new Date(us / 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  /** A datetime-local value as epoch microseconds (the page's time zone), or "" when empty. */
  function localToUs(value) {
    if (!value) return "";
    const ms = new Date(value).getTime();
    return isFinite(ms) ? String(ms * 1000) : "";
  }

  function every(ms, fn) {
    const id = setInterval(fn, ms);
    timers.push(id);
    return id;
  }

  function table(id, headings, extraClass) {
    const head = el("tr");
    for (const heading of headings) head.append(el("th", { text: heading }));
    return el("table", { id: id, class: extraClass || null }, el("thead", null, head), el("tbody"));
  }

  /** Clicking a heading sorts the rows by that column (numbers by their data-sort value). */
  function sortable(tableNode) {
    const headings = tableNode.querySelectorAll("thead th");
    headings.forEach((th, column) => {
      th.classList.add("sortable");
      th.addEventListener("click", () => {
        const down = th.dataset.sort !== "desc";
        headings.forEach((h) => delete h.dataset.sort);
        th.dataset.sort = down ? "desc" : "asc";
        const body = tableNode.tBodies[0];
        const rows = Array.from(body.rows);
        const key = (row) => {
          const cell = row.cells[column];
          if (!cell) return "";
          return cell.dataset.sort !== undefined ? Number(cell.dataset.sort) : cell.textContent;
        };
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return down ? -order : order;
        });
        const fragment = document.createDocumentFragment();
        rows.forEach((row) => fragment.append(row));
        body.append(fragment);
      });
    });
    return tableNode;
  }

  function numCell(value, text) {
    return el("td", { class: "num", "data-sort": value === null || value === undefined ? -1 : value, text: text });
  }

  function legend(entries) {
    const box = el("div", { class: "legend" });
    for (const [label, colour] of entries) {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colour;
      box.append(el("span", { class: "legend-item" }, swatch, el("span", { text: label })));
    }
    return box;
  }

  // --- charts ----------------------------------------------------------------------------------

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  /**
   * A line chart in `node` (an svg): series [{label, colour, points: [[x, y]...]}], x in epoch
   * microseconds. Options: yFormat, height, markers [{x, title, class}], rightSeries (drawn
   * against a second axis on the right), rightFormat.
   */
  function lineChart(node, series, options) {
    const opts = Object.assign({ height: 220, yFormat: (v) => trim(v, 2), rightFormat: null, markers: [] }, options || {});
    clear(node);
    const width = Math.max(320, Math.round(node.getBoundingClientRect().width || node.parentNode.getBoundingClientRect().width || 800));
    const height = opts.height;
    const pad = { left: 64, right: opts.rightSeries ? 64 : 16, top: 12, bottom: 28 };
    node.setAttribute("viewBox", "0 0 " + width + " " + height);
    node.setAttribute("width", width);
    node.setAttribute("height", height);
    const all = series.concat(opts.rightSeries || []);
    const xs = [];
    all.forEach((s) => s.points.forEach((p) => xs.push(p[0])));
    opts.markers.forEach((m) => xs.push(m.x));
    if (!xs.length) {
      node.append(svg("text", { x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle", text: "no data in this range" }));
      return;
    }
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= 30e6; x1 += 30e6; }
    const yMax = (list) => {
      let m = 0;
      list.forEach((s) => s.points.forEach((p) => { if (p[1] !== null && p[1] > m) m = p[1]; }));
      return m > 0 ? m * 1.1 : 1;
    };
    const yl = yMax(series), yr = opts.rightSeries ? yMax(opts.rightSeries) : 1;
    const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
    const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * w;
    const Y = (y, top) => pad.top + h - (y / top) * h;
    const axes = svg("g", { class: "axis" });
    for (const t of niceTicks(0, yl, 4)) {
      axes.append(svg("line", { x1: pad.left, x2: pad.left + w, y1: Y(t, yl), y2: Y(t, yl), class: "grid" }));
      axes.append(svg("text", { x: pad.left - 6, y: Y(t, yl) + 4, "text-anchor": "end", text: opts.yFormat(t) }));
    }
    if (opts.rightSeries) {
      for (const t of niceTicks(0, yr, 4)) {
        axes.append(svg("text", { x: pad.left + w + 6, y: Y(t, yr) + 4, "text-anchor": "start", text: opts.rightFormat(t) }));
      }
    }
    const span = x1 - x0;
    for (let i = 0; i <= 5; i++) {
      const x = x0 + (span * i) / 5;
      axes.append(svg("line", { x1: X(x), x2: X(x), y1: pad.top + h, y2: pad.top + h + 4 }));
      axes.append(svg("text", { x: X(x), y: height - 8, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle", text: fmtClock(x) }));
    }
    axes.append(svg("line", { x1: pad.left, x2: pad.left + w, y1: pad.top + h, y2: pad.top + h, class: "baseline" }));
    node.append(axes);
    const draw = (s, top) => {
      const points = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
      if (!points.length) return;
      const g = svg("g", { class: "series" });
      g.append(svg("title", { text: s.label }));
      const d = points.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1], top).toFixed(1)).join(" ");
      g.append(svg("path", { d: d, fill: "none", stroke: s.colour, "stroke-width": 2, class: "line" }));
      if (points.length < 60) {
        for (const p of points) g.append(svg("circle", { cx: X(p[0]), cy: Y(p[1], top), r: 2.5, fill: s.colour }));
      }
      node.append(g);
    };
    series.forEach((s) => draw(s, yl));
    (opts.rightSeries || []).forEach((s) => draw(s, yr));
    for (const m of opts.markers) {
      const g = svg("g", { class: m.class || "marker" });
      g.append(svg("title", { text: m.title }));
      g.append(svg("line", { x1: X(m.x), x2: X(m.x), y1: pad.top, y2: pad.top + h }));
      g.append(svg("path", { d: "M" + (X(m.x) - 5) + " " + pad.top + " h10 l-5 7 z" }));
      node.append(g);
    }
  }

  // --- search ----------------------------------------------------------------------------------

  const SEARCH_FIELDS = ["service", "operation", "min_duration_ms", "max_duration_ms", "errors", "tag", "start", "end", "limit"];

  pages.search = async function (root, params) {
    document.title = "Search · tracer";
    const q = params.query;
    const serviceSelect = el("select", { name: "service" }, el("option", { value: "", text: "all services" }));
    const operationSelect = el("select", { name: "operation" }, el("option", { value: "", text: "all operations" }));
    const field = (label, input) => el("label", { class: "field" }, el("span", { text: label }), input);
    const form = el(
      "form",
      { id: "search", class: "search-form" },
      field("Service", serviceSelect),
      field("Operation", operationSelect),
      field("Min duration (ms)", el("input", { name: "min_duration_ms", type: "number", min: 0, step: "any" })),
      field("Max duration (ms)", el("input", { name: "max_duration_ms", type: "number", min: 0, step: "any" })),
      field("Tag", el("input", { name: "tag", type: "text", placeholder: "key=value" })),
      field("From", el("input", { name: "start", type: "datetime-local", step: 1 })),
      field("To", el("input", { name: "end", type: "datetime-local", step: 1 })),
      field("Limit", el("input", { name: "limit", type: "number", min: 1, max: 10000, value: 20 })),
      el("label", { class: "check" }, el("input", { name: "errors", type: "checkbox", value: "1" }), el("span", { text: "errors only" })),
      el("button", { type: "submit", text: "Find traces" })
    );
    const live = el("input", { id: "live", type: "checkbox" });
    const scale = el("select", { id: "scale" }, el("option", { value: "log", text: "log scale" }), el("option", { value: "linear", text: "linear scale" }));
    const upload = uploadInput();
    const count = el("span", { class: "count" });
    const scatter = svg("svg", { id: "scatter", class: "scatter", role: "img" });
    const results = table("results", ["Trace", "Root service", "Root operation", "Spans", "Errors", "Duration", "Started", "Services"]);
    root.append(
      el("h1", { text: "Traces" }),
      form,
      el("div", { class: "toolbar" }, el("label", { class: "check" }, live, el("span", { text: "live tail" })), scale, count,
        el("label", { class: "upload" }, el("span", { text: "Open a trace file " }), upload)),
      el("div", { class: "chart-box" }, scatter),
      results
    );

    // The form shows the URL's query.
    for (const name of SEARCH_FIELDS) {
      const input = form.elements[name];
      const value = q.get(name);
      if (!input || value === null) continue;
      if (input.type === "checkbox") input.checked = ["1", "true", "on", "yes"].includes(value.toLowerCase());
      else if (input.tagName !== "SELECT") input.value = value;
    }
    let shown = [];

    function filters() {
      const data = new FormData(form);
      const out = {};
      for (const name of SEARCH_FIELDS) {
        const value = data.get(name);
        if (name === "errors") out.errors = value ? "1" : "";
        else out[name] = value === null ? "" : String(value).trim();
      }
      return out;
    }

    function apiQuery(f) {
      return query({
        service: f.service, operation: f.operation, min_duration_ms: f.min_duration_ms,
        max_duration_ms: f.max_duration_ms, errors: f.errors, tag: f.tag ? [f.tag] : [],
        start_us: localToUs(f.start), end_us: localToUs(f.end), limit: f.limit,
      });
    }

    async function run(quiet) {
      const f = filters();
      let answer;
      try {
        answer = await api("/api/traces" + apiQuery(f));
      } catch (error) {
        if (!quiet) message("Search failed: " + error.message);
        return;
      }
      const traces = Array.isArray(answer && answer.traces) ? answer.traces : [];
      const ids = traces.map((t) => t.trace_id).join();
      if (quiet && ids === shown.map((t) => t.trace_id).join()) return;
      if (!quiet) message("");
      shown = traces;
      drawResults(traces);
    }

    function drawResults(traces) {
      const body = clear(results.tBodies[0]);
      const fragment = document.createDocumentFragment();
      for (const t of traces) {
        const href = traceHref(String(t.trace_id));
        const row = el("tr", { class: "trace-row" + (t.errors ? " error" : ""), "data-trace-id": t.trace_id });
        const services = Object.entries(t.services || {}).map(([name, n]) => {
          const dot = el("span", { class: "dot" });
          dot.style.background = serviceColour(name);
          return el("span", { class: "service-chip" }, dot, el("span", { text: name + " " + n }));
        });
        row.append(
          el("td", { class: "mono" }, href ? el("a", { class: "trace-link", href: href, text: String(t.trace_id).slice(0, 12) }) : String(t.trace_id)),
          el("td", { text: t.root_service }),
          el("td", { text: t.root_name }),
          numCell(t.spans, fmtCount(t.spans)),
          numCell(t.errors, t.errors ? fmtCount(t.errors) : ""),
          numCell(t.duration_us, fmtDuration(t.duration_us)),
          numCell(t.start_us, fmtTime(t.start_us)),
          el("td", { class: "services" }, ...services)
        );
        fragment.append(row);
      }
      body.append(fragment);
      count.textContent = traces.length === 1 ? "1 trace" : fmtCount(traces.length) + " traces";
      drawScatter(traces);
    }

    function drawScatter(traces) {
      clear(scatter);
      const width = Math.max(320, Math.round(scatter.parentNode.getBoundingClientRect().width || 800));
      const height = 200;
      const pad = { left: 64, right: 16, top: 10, bottom: 26 };
      scatter.setAttribute("viewBox", "0 0 " + width + " " + height);
      scatter.setAttribute("width", width);
      scatter.setAttribute("height", height);
      if (!traces.length) {
        scatter.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty", text: "no traces match" }));
        return;
      }
      const log = scale.value === "log";
      const starts = traces.map((t) => t.start_us), durations = traces.map((t) => Math.max(1, t.duration_us || 0));
      let x0 = Math.min(...starts), x1 = Math.max(...starts);
      if (x1 === x0) { x0 -= 1e6; x1 += 1e6; }
      const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
      const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * w;
      let yTicks, Y;
      if (log) {
        const lo = Math.floor(Math.log10(Math.min(...durations))), hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...durations))));
        Y = (d) => pad.top + h - ((Math.log10(Math.max(1, d)) - lo) / (hi - lo)) * h;
        yTicks = [];
        for (let e = lo; e <= hi; e++) yTicks.push(Math.pow(10, e));
      } else {
        const hi = Math.max(...durations) * 1.1;
        Y = (d) => pad.top + h - (d / hi) * h;
        yTicks = niceTicks(0, hi, 4);
      }
      const axes = svg("g", { class: "axis" });
      for (const t of yTicks) {
        axes.append(svg("line", { x1: pad.left, x2: pad.left + w, y1: Y(t), y2: Y(t), class: "grid" }));
        axes.append(svg("text", { x: pad.left - 6, y: Y(t) + 4, "text-anchor": "end", text: fmtDuration(t) }));
      }
      for (let i = 0; i <= 4; i++) {
        const x = x0 + ((x1 - x0) * i) / 4;
        axes.append(svg("text", { x: X(x), y: height - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", text: fmtClock(x) }));
      }
      scatter.append(axes);
      const points = svg("g", { class: "points" });
      for (const t of traces) {
        const href = traceHref(String(t.trace_id));
        const c = svg("circle", {
          class: "point" + (t.errors ? " error" : ""), "data-trace-id": t.trace_id,
          cx: X(t.start_us).toFixed(1), cy: Y(Math.max(1, t.duration_us || 0)).toFixed(1), r: 5,
        });
        c.append(svg("title", { text: t.root_service + " · " + t.root_name + " · " + fmtDuration(t.duration_us) }));
        if (href) c.addEventListener("click", () => location.assign(href));
        points.append(c);
      }
      scatter.append(points);
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const f = filters();
      const url = location.pathname + query(f);
      history.pushState(null, "", url);
      run(false);
    });
    scale.addEventListener("change", () => drawScatter(shown));
    let tail = null;
    live.addEventListener("change", () => {
      if (live.checked) tail = every(2000, () => run(true));
      else if (tail !== null) { clearInterval(tail); tail = null; }
    });

    // Services and their operations fill the selects; the URL's choice is kept even when the
    // store does not know it (yet).
    const wantService = q.get("service") || "", wantOperation = q.get("operation") || "";
    const fillOperations = async (service, want) => {
      clear(operationSelect).append(el("option", { value: "", text: "all operations" }));
      if (!service) return;
      let names = [];
      try {
        const answer = await api("/api/operations" + query({ service: service }));
        names = (answer.operations || []).map((o) => String(o.name));
      } catch (error) {
        message("Could not list the operations: " + error.message);
      }
      if (want && !names.includes(want)) names.unshift(want);
      for (const name of names) operationSelect.append(el("option", { value: name, text: name }));
      operationSelect.value = want || "";
    };
    serviceSelect.addEventListener("change", () => fillOperations(serviceSelect.value, ""));
    try {
      const answer = await api("/api/services");
      const names = (answer.services || []).map(String);
      if (wantService && !names.includes(wantService)) names.unshift(wantService);
      for (const name of names) serviceSelect.append(el("option", { value: name, text: name }));
      serviceSelect.value = wantService;
      await fillOperations(wantService, wantOperation);
    } catch (error) {
      message("Could not list the services: " + error.message);
    }
    await run(false);
  };

  /** A file input that posts a downloaded trace to the store and opens it. */
  function uploadInput() {
    const input = el("input", { id: "upload", type: "file", accept: ".json,application/json" });
    input.addEventListener("change", async () => {
      const file = input.files && input.files[0];
      if (!file) return;
      let document;
      try {
        document = JSON.parse(await file.text());
      } catch (error) {
        message("That file is not JSON: " + error.message);
        return;
      }
      try {
        const answer = await postJson("/api/traces", document);
        const href = traceHref(String(answer && answer.trace_id));
        if (!href) throw new Error("the viewer answered no trace id");
        location.assign(href);
      } catch (error) {
        message("Could not upload the trace: " + error.message);
      }
    });
    return input;
  }

  // --- trace -----------------------------------------------------------------------------------

  /** The spans in tree order, each {span, depth, parent, children, end (last descendant)}. */
  function buildTree(spans) {
    const nodes = new Map();
    for (const span of spans) {
      if (span && typeof span.span_id === "string" && !nodes.has(span.span_id)) {
        nodes.set(span.span_id, { span: span, children: [], parent: null, depth: 0, index: 0, last: 0 });
      }
    }
    const roots = [];
    for (const node of nodes.values()) {
      const parent = node.span.parent_id ? nodes.get(node.span.parent_id) : undefined;
      if (parent && parent !== node) {
        node.parent = parent;
        parent.children.push(node);
      } else roots.push(node);
    }
    const byStart = (a, b) => (a.span.start_us || 0) - (b.span.start_us || 0);
    roots.sort(byStart);
    const order = [];
    const seen = new Set();
    const stack = roots.slice().reverse().map((n) => [n, 0]);
    while (stack.length) {
      const [node, depth] = stack.pop();
      if (seen.has(node)) continue;
      seen.add(node);
      node.depth = depth;
      node.index = order.length;
      order.push(node);
      node.children.sort(byStart);
      for (let i = node.children.length - 1; i >= 0; i--) stack.push([node.children[i], depth + 1]);
    }
    // A cycle of parent ids leaves spans unvisited: show them at the top level.
    for (const node of nodes.values()) {
      if (!seen.has(node)) {
        if (node.parent) node.parent.children = node.parent.children.filter((c) => c !== node);
        node.children = [];
        node.parent = null;
        node.depth = 0;
        node.index = order.length;
        order.push(node);
        seen.add(node);
      }
    }
    for (let i = order.length - 1; i >= 0; i--) {
      const node = order[i];
      node.last = node.index;
      for (const child of node.children) if (child.last > node.last) node.last = child.last;
    }
    return { order: order, roots: roots };
  }

  function spanEnd(span) {
    return (span.start_us || 0) + (span.duration_us || 0);
  }

  /** From the root, the child that ended last among those ending by the parent's end, again and
   * again: the spans the trace's end waited for. */
  function criticalPath(root) {
    const path = [];
    let node = root;
    while (node) {
      path.push(node);
      const end = spanEnd(node.span);
      let next = null;
      for (const child of node.children) {
        const childEnd = spanEnd(child.span);
        if (childEnd <= end && (!next || childEnd > spanEnd(next.span))) next = child;
      }
      node = next;
    }
    return path;
  }

  function eventTime(span, type) {
    for (const e of span.events || []) if (e && e.type === type && typeof e.time_us === "number") return e.time_us;
    return null;
  }

  function hopMs(us) {
    const ms = us / 1000;
    return trim(ms, Math.abs(ms) < 100 ? 1 : 0) + " ms";
  }

  /** The network time of a hop: on a server span called by a client span. */
  function hopText(server, client) {
    const cs = eventTime(client, "cs"), cr = eventTime(client, "cr");
    const sr = eventTime(server, "sr"), ss = eventTime(server, "ss");
    const out = cs !== null && sr !== null ? sr - cs : server.start_us - client.start_us;
    const back = cr !== null && ss !== null ? cr - ss : spanEnd(client) - spanEnd(server);
    return "CS→SR " + hopMs(out) + " · SS→CR " + hopMs(back);
  }

  pages.trace = async function (root, params) {
    const id = params.id;
    document.title = "Trace " + id.slice(0, 12) + " · tracer";
    const waterfall = el("div", { id: "waterfall", class: "waterfall" });
    const details = el("div", { id: "details", class: "details" }, el("p", { class: "hint", text: "Click a span to see its details." }));
    const header = el("div", { class: "trace-header" });
    const find = el("input", { id: "find", type: "search", placeholder: "find in trace" });
    const found = el("span", { class: "count" });
    const nextError = el("button", { id: "next-error", type: "button", text: "Next error" });
    const download = el("a", { id: "download", class: "button", href: "/api/traces/" + id, download: "trace-" + id + ".json", text: "Download JSON" });
    const toolbar = el("div", { class: "toolbar" }, find, found, nextError, download,
      el("label", { class: "upload" }, el("span", { text: "Open a trace file " }), uploadInput()));
    root.append(header, toolbar, el("div", { class: "trace-body" }, waterfall, details));

    let answer;
    try {
      answer = await api("/api/traces/" + id);
    } catch (error) {
      if (error.status === 404) message("Trace " + id + " not found: the store holds no span of it.");
      else message("Could not load the trace: " + error.message);
      return;
    }
    const spans = Array.isArray(answer && answer.spans) ? answer.spans : [];
    if (!spans.length) {
      message("Trace " + id + " not found: it has no spans.");
      return;
    }
    const tree = buildTree(spans);
    const order = tree.order;
    let t0 = Infinity, t1 = -Infinity;
    for (const n of order) {
      t0 = Math.min(t0, n.span.start_us || 0);
      t1 = Math.max(t1, spanEnd(n.span));
    }
    const total = Math.max(1, t1 - t0);
    const services = new Map();
    let errors = 0;
    for (const n of order) {
      services.set(n.span.service, (services.get(n.span.service) || 0) + 1);
      if (n.span.error) errors++;
    }
    const main = tree.roots[0] || order[0];
    const critical = new Set(criticalPath(main));

    header.append(
      el("h1", null, el("span", { text: main.span.name }), el("span", { class: "sub", text: " " + main.span.service })),
      el("p", { class: "summary" },
        el("span", { class: "mono", text: id }),
        el("span", { text: " · " + fmtTime(t0) + " · " + fmtDuration(total) + " · " + fmtCount(order.length) + " spans · " +
          services.size + (services.size === 1 ? " service" : " services") + (errors ? " · " + errors + (errors === 1 ? " error" : " errors") : "") })),
      legend(Array.from(services.keys()).map((s) => [String(s), serviceColour(s)]))
    );

    // The time axis above the bars.
    const axis = el("div", { class: "span-row axis-row" }, el("div", { class: "span-label", text: "span" }));
    const ticks = el("div", { class: "span-timeline axis" });
    for (let i = 0; i <= 4; i++) {
      const tick = el("span", { class: "tick", text: fmtDuration((total * i) / 4) });
      tick.style.left = (i * 25) + "%";
      if (i === 4) tick.classList.add("last");
      ticks.append(tick);
    }
    axis.append(ticks);
    waterfall.append(axis);

    // One row per span, built in a fragment and added at once; bars are placed in percent so
    // nothing needs measuring.
    const rows = new Array(order.length);
    // Rows are clones of two prepared rows (with and without a toggle): cloning is cheaper than
    // building each element anew, which counts in a trace of thousands of spans.
    const pattern = (withToggle) => {
      const row = el("div", { class: "span-row" },
        el("div", { class: "span-label" },
          withToggle ? el("button", { type: "button", class: "toggle", title: "collapse", text: "▾" }) : el("span", { class: "toggle-space" }),
          el("span", { class: "dot" }), el("span", { class: "span-service" }), el("span", { class: "span-name" })),
        el("div", { class: "span-timeline" }, el("div", { class: "bar" }), el("span", { class: "bar-time" })));
      return row;
    };
    const parentRow = pattern(true), leafRow = pattern(false);
    const fragment = document.createDocumentFragment();
    for (const n of order) {
      const s = n.span;
      const row = (n.children.length ? parentRow : leafRow).cloneNode(true);
      if (s.error) row.classList.add("error");
      if (critical.has(n)) row.classList.add("critical");
      row.setAttribute("data-span-id", s.span_id);
      if (s.parent_id) row.setAttribute("data-parent-id", s.parent_id);
      row.setAttribute("data-depth", n.depth);
      row.setAttribute("data-service", s.service);
      row.setAttribute("data-index", n.index);
      const label = row.firstChild, line = row.lastChild;
      label.style.paddingLeft = Math.min(n.depth, 40) * 14 + 4 + "px";
      const colour = serviceColour(s.service);
      const dot = label.childNodes[1];
      dot.style.background = colour;
      dot.nextSibling.textContent = s.service;
      label.lastChild.textContent = s.name;
      if (s.kind === "server" && n.parent && n.parent.span.kind === "client") {
        const hop = document.createElement("span");
        hop.className = "hop-network";
        hop.textContent = hopText(s, n.parent.span);
        label.append(hop);
      }
      const bar = line.firstChild, time = line.lastChild;
      const left = (((s.start_us || 0) - t0) / total) * 100;
      const width = Math.max(0.1, ((s.duration_us || 0) / total) * 100);
      bar.style.left = left + "%";
      bar.style.width = width + "%";
      bar.style.background = colour;
      time.textContent = fmtDuration(s.duration_us);
      // The duration sits right of its bar, or left of it when the bar ends near the edge.
      if (left + width <= 85) time.style.left = left + width + "%";
      else if (left > 15) {
        time.classList.add("before");
        time.style.right = 100 - left + "%";
      } else {
        time.classList.add("inside");
        time.style.right = 100 - left - width + "%";
      }
      rows[n.index] = row;
      fragment.append(row);
    }
    waterfall.append(fragment);

    const collapsed = new Set();
    let selected = null;

    function setShown(index, show) {
      const n = order[index];
      if (show) {
        for (let j = n.index + 1; j <= n.last; j++) {
          rows[j].hidden = false;
          if (collapsed.has(j)) j = order[j].last;
        }
      } else {
        for (let j = n.index + 1; j <= n.last; j++) rows[j].hidden = true;
      }
    }

    function toggle(index) {
      const button = rows[index].querySelector("button.toggle");
      if (collapsed.has(index)) {
        collapsed.delete(index);
        setShown(index, true);
        rows[index].classList.remove("collapsed");
        if (button) { button.textContent = "▾"; button.title = "collapse"; }
      } else {
        collapsed.add(index);
        setShown(index, false);
        rows[index].classList.add("collapsed");
        if (button) { button.textContent = "▸"; button.title = "expand"; }
      }
    }

    /** Shows a row hidden under collapsed ancestors. */
    function reveal(index) {
      for (let p = order[index].parent; p; p = p.parent) if (collapsed.has(p.index)) toggle(p.index);
    }

    function select(index, scroll) {
      if (selected !== null) rows[selected].classList.remove("selected");
      selected = index;
      reveal(index);
      rows[index].classList.add("selected");
      showDetails(details, order[index], t0, order);
      if (scroll) rows[index].scrollIntoView({ block: "center" });
    }

    waterfall.addEventListener("click", (event) => {
      const row = event.target.closest(".span-row");
      if (!row || row.dataset.index === undefined) return;
      const index = Number(row.dataset.index);
      if (event.target.closest("button.toggle")) toggle(index);
      else select(index, false);
    });

    const errorRows = order.filter((n) => n.span.error).map((n) => n.index);
    nextError.disabled = !errorRows.length;
    nextError.addEventListener("click", () => {
      if (!errorRows.length) return;
      const next = errorRows.find((i) => selected === null || i > selected);
      select(next === undefined ? errorRows[0] : next, true);
    });

    find.addEventListener("input", () => {
      const text = find.value.trim().toLowerCase();
      let hits = 0;
      for (const n of order) {
        const s = n.span;
        const hit = text !== "" && (String(s.name).toLowerCase().includes(text) || String(s.service).toLowerCase().includes(text) || String(s.span_id).includes(text));
        if (hit !== rows[n.index].classList.contains("match")) rows[n.index].classList.toggle("match", hit);
        if (hit) hits++;
      }
      found.textContent = text ? hits + (hits === 1 ? " match" : " matches") : "";
    });
  };

  function kvTable(entries, extraClass) {
    const t = el("table", { class: "kv" + (extraClass ? " " + extraClass : "") });
    const body = el("tbody");
    for (const [key, value] of entries) {
      if (value === null || value === undefined || value === "") continue;
      body.append(el("tr", null, el("th", { text: key }), el("td", { text: typeof value === "object" ? JSON.stringify(value) : String(value) })));
    }
    t.append(body);
    return t;
  }

  function section(title, ...content) {
    return el("section", { class: "detail-section" }, el("h3", { text: title }), ...content);
  }

  function showDetails(box, node, t0) {
    const s = node.span;
    clear(box);
    box.append(el("h2", { text: s.name }));
    const offset = (us) => "+" + fmtDuration(us - t0);
    box.append(kvTable([
      ["service", s.service], ["kind", s.kind], ["host", s.host], ["pid", s.pid],
      ["start", fmtTime(s.start_us) + " (" + offset(s.start_us) + ")"], ["duration", fmtDuration(s.duration_us)],
      ["span id", s.span_id], ["parent id", s.parent_id], ["trace id", s.trace_id], ["request id", s.request_id],
      ["source", s.source], ["sampled", s.sampled === undefined ? null : String(s.sampled)],
      ["must collect", s.must_collect ? "true" : null], ["tracestate", s.tracestate],
    ]));
    if (s.error) {
      const e = s.error;
      box.append(section("Error", el("p", { class: "error-text" }, el("strong", { text: String(e.type || "error") }), el("span", { text: e.message ? ": " + e.message : "" })),
        e.stack ? el("pre", { class: "stack", text: String(e.stack) }) : null));
    }
    if (s.http && typeof s.http === "object") {
      box.append(section("HTTP", kvTable(Object.entries(s.http))));
    }
    if (s.db && typeof s.db === "object") {
      const statement = s.db["db.query.text"];
      box.append(section("Database", statement ? el("pre", { class: "statement", text: String(statement) }) : null,
        kvTable(Object.entries(s.db).filter(([k]) => k !== "db.query.text"))));
    }
    const events = Array.isArray(s.events) ? s.events : [];
    if (events.length) {
      const t = el("table", { class: "events" }, el("thead", null, el("tr", null, el("th", { text: "event" }), el("th", { text: "time" }), el("th", { text: "in trace" }), el("th", { text: "in span" }))));
      const body = el("tbody");
      const names = { sr: "server receive", ss: "server send", cs: "client send", cr: "client receive" };
      for (const e of events) {
        if (!e) continue;
        body.append(el("tr", null, el("td", null, el("strong", { text: String(e.type) }), el("span", { class: "sub", text: names[e.type] ? " " + names[e.type] : "" })),
          el("td", { text: fmtTime(e.time_us) }), el("td", { class: "num", text: offset(e.time_us) }), el("td", { class: "num", text: "+" + fmtDuration(e.time_us - s.start_us) })));
      }
      t.append(body);
      box.append(section("Events", t));
    }
    if (s.kind === "server" && node.parent && node.parent.span.kind === "client") {
      box.append(section("Network", el("p", { class: "hop", text: hopText(s, node.parent.span) })));
    }
    if (s.tags && typeof s.tags === "object" && Object.keys(s.tags).length) box.append(section("Tags", kvTable(Object.entries(s.tags))));
    if (s.attributes && typeof s.attributes === "object" && Object.keys(s.attributes).length) {
      box.append(section("Attributes", kvTable(Object.entries(s.attributes))));
    }
    const annotations = Array.isArray(s.annotations) ? s.annotations : [];
    if (annotations.length) {
      const list = el("ul", { class: "annotations" });
      for (const a of annotations) {
        if (!a) continue;
        const data = a.data && typeof a.data === "object" ? a.data : { value: a.data };
        list.append(el("li", null, el("span", { class: "num", text: offset(a.time_us) + " " }), kvTable(Object.entries(data))));
      }
      box.append(section("Annotations", list));
    }
  }

  // --- service map -----------------------------------------------------------------------------

  function rangeForm(id, q, onChange) {
    const start = el("input", { name: "start", type: "datetime-local", step: 1, value: q.get("start") || "" });
    const end = el("input", { name: "end", type: "datetime-local", step: 1, value: q.get("end") || "" });
    const form = el("form", { id: id, class: "range-form" },
      el("label", { class: "field" }, el("span", { text: "From" }), start),
      el("label", { class: "field" }, el("span", { text: "To" }), end),
      el("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const keep = new URLSearchParams(location.search);
      keep.delete("token");
      for (const [k, v] of [["start", start.value], ["end", end.value]]) {
        if (v) keep.set(k, v);
        else keep.delete(k);
      }
      const text = keep.toString();
      history.pushState(null, "", location.pathname + (text ? "?" + text : ""));
      onChange();
    });
    return { form: form, range: () => ({ start_us: localToUs(start.value), end_us: localToUs(end.value) }) };
  }

  pages.map = async function (root, params) {
    document.title = "Service map · tracer";
    const map = svg("svg", { id: "service-map", class: "service-map", role: "img" });
    const range = rangeForm("map-range", params.query, () => load());
    root.append(el("h1", { text: "Service map" }), range.form, el("div", { class: "map-box" }, map));

    async function load() {
      let deps;
      try {
        deps = await api("/api/dependencies" + query(range.range()));
      } catch (error) {
        message("Could not load the service map: " + error.message);
        return;
      }
      message("");
      drawMap(map, deps);
    }
    await load();
  };

  function drawMap(map, deps) {
    clear(map);
    const services = Array.isArray(deps && deps.services) ? deps.services : [];
    const edges = Array.isArray(deps && deps.edges) ? deps.edges : [];
    const names = new Map();
    for (const s of services) names.set(String(s.name), s);
    for (const e of edges) {
      for (const name of [String(e.from), String(e.to)]) if (!names.has(name)) names.set(name, { name: name, spans: 0, errors: 0 });
    }
    if (!names.size) {
      map.setAttribute("width", 400);
      map.setAttribute("height", 60);
      map.append(svg("text", { x: 10, y: 30, class: "chart-empty", text: "no services in this range" }));
      return;
    }
    // Layers: each service one column right of its furthest caller (capped, so a cycle ends).
    const level = new Map(Array.from(names.keys()).map((n) => [n, 0]));
    const cap = names.size - 1;
    for (let round = 0; round < names.size; round++) {
      let moved = false;
      for (const e of edges) {
        const from = String(e.from), to = String(e.to);
        if (from === to) continue;
        const want = Math.min(cap, level.get(from) + 1);
        if (want > level.get(to)) { level.set(to, want); moved = true; }
      }
      if (!moved) break;
    }
    const columns = [];
    for (const [name, l] of level) (columns[l] = columns[l] || []).push(name);
    const used = columns.filter(Boolean);
    used.forEach((c) => c.sort());
    const nodeW = 160, nodeH = 46, colGap = 150, rowGap = 40, margin = 24;
    const pos = new Map();
    const tallest = Math.max(...used.map((c) => c.length));
    const height = margin * 2 + tallest * nodeH + (tallest - 1) * rowGap;
    used.forEach((column, ci) => {
      const colHeight = column.length * nodeH + (column.length - 1) * rowGap;
      column.forEach((name, ri) => {
        pos.set(name, { x: margin + ci * (nodeW + colGap), y: (height - colHeight) / 2 + ri * (nodeH + rowGap), column: ci });
      });
    });
    const width = margin * 2 + used.length * nodeW + (used.length - 1) * colGap;
    map.setAttribute("width", width);
    map.setAttribute("height", height);
    map.setAttribute("viewBox", "0 0 " + width + " " + height);
    const defs = svg("defs");
    for (const [id, cls] of [["arrow", "arrow"], ["arrow-error", "arrow error"]]) {
      defs.append(svg("marker", { id: id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0 0 L10 5 L0 10 z", class: cls })));
    }
    map.append(defs);
    const edgeLayer = svg("g", { class: "edges" });
    for (const e of edges) {
      const from = pos.get(String(e.from)), to = pos.get(String(e.to));
      if (!from || !to) continue;
      const bad = (e.errors || 0) > 0;
      const g = svg("g", { class: "edge" + (bad ? " error" : ""), "data-from": e.from, "data-to": e.to, "data-calls": e.calls, "data-errors": e.errors, "data-p95-us": e.p95_us });
      let d, lx, ly;
      if (to.column > from.column) {
        const x1 = from.x + nodeW, y1 = from.y + nodeH / 2, x2 = to.x, y2 = to.y + nodeH / 2;
        const mid = (x1 + x2) / 2;
        d = "M" + x1 + " " + y1 + " C" + mid + " " + y1 + " " + mid + " " + y2 + " " + x2 + " " + y2;
        lx = mid;
        ly = (y1 + y2) / 2 - 6;
      } else {
        // A call to the same column or back: an arc below the nodes.
        const x1 = from.x + nodeW / 2, y1 = from.y + nodeH, x2 = to.x + nodeW / 2 + (to === from ? 20 : 0), y2 = to.y + nodeH;
        const drop = 40 + Math.abs(x1 - x2) / 4;
        d = "M" + x1 + " " + y1 + " C" + x1 + " " + (Math.max(y1, y2) + drop) + " " + x2 + " " + (Math.max(y1, y2) + drop) + " " + x2 + " " + y2;
        lx = (x1 + x2) / 2;
        ly = Math.max(y1, y2) + drop * 0.75 + 4;
        if (ly + 10 > height) {
          map.setAttribute("height", ly + 20);
          map.setAttribute("viewBox", "0 0 " + width + " " + (ly + 20));
        }
      }
      g.append(svg("path", { d: d, class: "edge-line", "marker-end": bad ? "url(#arrow-error)" : "url(#arrow)" }));
      const label = fmtCount(e.calls) + " calls · " + fmtPercent(e.error_ratio || 0) + " errors · p95 " + fmtDuration(e.p95_us);
      g.append(svg("text", { x: lx, y: ly, "text-anchor": "middle", class: "edge-label", text: label }));
      g.append(svg("title", { text: e.from + " → " + e.to + ": " + label }));
      edgeLayer.append(g);
    }
    map.append(edgeLayer);
    const nodeLayer = svg("g", { class: "nodes" });
    for (const [name, info] of names) {
      const p = pos.get(name);
      const g = svg("g", { class: "node" + (info.errors ? " error" : ""), "data-service": name, transform: "translate(" + p.x + " " + p.y + ")" });
      g.append(svg("rect", { width: nodeW, height: nodeH, rx: 6, class: "node-box", stroke: serviceColour(name) }));
      g.append(svg("rect", { width: 6, height: nodeH, rx: 2, fill: serviceColour(name) }));
      g.append(svg("text", { x: 14, y: 19, class: "node-name", text: name.length > 21 ? name.slice(0, 20) + "…" : name }));
      g.append(svg("text", { x: 14, y: 36, class: "node-stats", text: fmtCount(info.spans) + " spans" + (info.errors ? " · " + fmtCount(info.errors) + " errors" : "") }));
      g.append(svg("title", { text: name }));
      g.addEventListener("click", () => location.assign("/search" + query({ service: name })));
      nodeLayer.append(g);
    }
    map.append(nodeLayer);
  }

  // --- dashboard -------------------------------------------------------------------------------

  const RANGES = [["", "all stored"], ["900", "last 15 min"], ["3600", "last hour"], ["21600", "last 6 hours"], ["86400", "last 24 hours"], ["604800", "last 7 days"]];

  pages.dashboard = async function (root, params) {
    document.title = "Dashboard · tracer";
    const q = params.query;
    const select = el("select", { id: "service" });
    const rangeSelect = el("select", { id: "range" }, ...RANGES.map(([v, t]) => el("option", { value: v, text: t })));
    rangeSelect.value = RANGES.some(([v]) => v === q.get("range")) ? q.get("range") : "";
    const source = el("span", { id: "dashboard-source" });
    const rpm = svg("svg", { id: "rpm-chart", class: "chart", role: "img" });
    const latency = svg("svg", { id: "latency-chart", class: "chart", role: "img" });
    const routeChart = svg("svg", { id: "route-chart", class: "chart", role: "img" });
    const routeTitle = el("h2", { text: "" });
    const routeBox = el("div", { class: "route-box", hidden: true }, routeTitle, routeChart);
    const routes = table("routes", ["Method", "Route", "Requests", "Per minute", "Errors", "Error %", "p50", "p95", "p99"]);
    const slowest = table("slowest", ["Route", "p95", "p99", "Requests"]);
    const failing = table("failing", ["Route", "Errors", "Error %", "Requests"]);
    root.append(
      el("h1", { text: "Dashboard" }),
      el("div", { class: "toolbar" }, el("label", { class: "field" }, el("span", { text: "Service" }), select),
        el("label", { class: "field" }, el("span", { text: "Range" }), rangeSelect),
        el("span", { class: "source" }, el("span", { text: "from " }), source)),
      el("div", { class: "charts" },
        el("div", { class: "chart-box" }, el("h2", { text: "Requests per minute" }), legend(Object.entries(STATUS_COLOURS)), rpm),
        el("div", { class: "chart-box" }, el("h2", { text: "Latency" }), legend([["p50", LATENCY_COLOURS.p50_ms], ["p95", LATENCY_COLOURS.p95_ms], ["p99", LATENCY_COLOURS.p99_ms]]), latency)),
      routeBox,
      el("h2", { text: "Routes" }), sortable(routes),
      el("div", { class: "pair" }, el("div", null, el("h2", { text: "Slowest routes" }), slowest), el("div", null, el("h2", { text: "Most failing routes" }), failing))
    );

    let names = [];
    try {
      names = ((await api("/api/services")).services || []).map(String);
    } catch (error) {
      message("Could not list the services: " + error.message);
      return;
    }
    const want = q.get("service");
    if (want && !names.includes(want)) names.unshift(want);
    for (const name of names) select.append(el("option", { value: name, text: name }));
    if (!names.length) {
      message("No services yet: send spans or metrics to the receiver.", "info");
      return;
    }
    select.value = want || names[0];

    const change = () => {
      const keep = query({ service: select.value, range: rangeSelect.value });
      history.pushState(null, "", location.pathname + keep);
      load();
    };
    select.addEventListener("change", change);
    rangeSelect.addEventListener("change", change);

    const routeLabel = (r) => String(r.method || "") + " " + String(r.route || "");

    async function load() {
      const seconds = Number(rangeSelect.value || 0);
      const now = Date.now() * 1000;
      const args = { service: select.value };
      if (seconds) {
        args.start_us = String(now - seconds * 1e6);
        args.end_us = String(now);
        args.step_s = String(Math.max(60, Math.round(seconds / 120 / 60) * 60));
      }
      let d;
      try {
        d = await api("/api/dashboard" + query(args));
      } catch (error) {
        message("Could not load the dashboard: " + error.message);
        return;
      }
      message("");
      source.textContent = String(d.source || "");
      const series = Array.isArray(d.series) ? d.series : [];
      lineChart(rpm, Object.entries(STATUS_COLOURS).map(([k, colour]) => ({
        label: k, colour: colour, points: series.map((p) => [p.time_us, p.rpm ? p.rpm[k] || 0 : 0]),
      })), { yFormat: (v) => trim(v, 1) });
      lineChart(latency, Object.entries(LATENCY_COLOURS).map(([k, colour]) => ({
        label: k.slice(0, 3), colour: colour, points: series.map((p) => [p.time_us, p[k]]),
      })), { yFormat: (v) => fmtMs(v) });
      const body = clear(routes.tBodies[0]);
      routeBox.hidden = true;
      for (const r of d.routes || []) {
        const row = el("tr", { class: "route-row" + (r.errors ? " error" : ""), "data-route": routeLabel(r) },
          el("td", { text: r.method }), el("td", { text: r.route }),
          numCell(r.requests, fmtCount(r.requests)), numCell(r.rpm, trim(r.rpm || 0, 2)), numCell(r.errors, fmtCount(r.errors)),
          numCell(r.error_ratio, fmtPercent(r.error_ratio)), numCell(r.p50_ms, fmtMs(r.p50_ms)), numCell(r.p95_ms, fmtMs(r.p95_ms)), numCell(r.p99_ms, fmtMs(r.p99_ms)));
        row.addEventListener("click", () => {
          routes.querySelectorAll("tr.selected").forEach((x) => x.classList.remove("selected"));
          row.classList.add("selected");
          routeTitle.textContent = routeLabel(r);
          routeBox.hidden = false;
          const points = Array.isArray(r.series) ? r.series : [];
          lineChart(routeChart, [{ label: "per minute", colour: "#59a14f", points: points.map((p) => [p.time_us, p.rpm]) }],
            { yFormat: (v) => trim(v, 1), rightSeries: Object.entries(LATENCY_COLOURS).map(([k, colour]) => ({ label: k.slice(0, 3), colour: colour, points: points.map((p) => [p.time_us, p[k]]) })), rightFormat: (v) => fmtMs(v) });
        });
        body.append(row);
      }
      const fill = (t, list, cells) => {
        const b = clear(t.tBodies[0]);
        for (const r of list || []) b.append(el("tr", { class: "route-row", "data-route": routeLabel(r) }, el("td", { text: routeLabel(r) }), ...cells(r)));
      };
      fill(slowest, d.slowest, (r) => [numCell(r.p95_ms, fmtMs(r.p95_ms)), numCell(r.p99_ms, fmtMs(r.p99_ms)), numCell(r.requests, fmtCount(r.requests))]);
      fill(failing, (d.failing || []).filter((r) => r.errors > 0), (r) => [numCell(r.errors, fmtCount(r.errors)), numCell(r.error_ratio, fmtPercent(r.error_ratio)), numCell(r.requests, fmtCount(r.requests))]);
    }
    await load();
  };

  // --- memory ----------------------------------------------------------------------------------

  pages.memory = async function (root, params) {
    document.title = "Memory · tracer";
    const box = el("div", { class: "memory" });
    const range = rangeForm("memory-range", params.query, () => load());
    root.append(el("h1", { text: "Memory" }), range.form, legend([["RSS (left axis)", "#4e79a7"], ["heap blocks (right axis)", "#f28e2b"], ["leak", "#e15759"]]), box);

    async function load() {
      let d;
      try {
        d = await api("/api/memory" + query(Object.assign({ service: params.query.get("service") || "" }, range.range())));
      } catch (error) {
        message("Could not load the memory readings: " + error.message);
        return;
      }
      clear(box);
      const processes = Array.isArray(d && d.processes) ? d.processes : [];
      if (!processes.length) {
        message("No memory readings yet: tracer's memory watch sends them (docs/memory.md).", "info");
        return;
      }
      message("");
      for (const p of processes) {
        const chart = svg("svg", { class: "memory-chart chart", "data-pid": p.pid, "data-service": p.service, role: "img" });
        const points = Array.isArray(p.points) ? p.points : [];
        const leaks = Array.isArray(p.leaks) ? p.leaks : [];
        const last = points.length ? points[points.length - 1] : null;
        box.append(el("section", { class: "process" },
          el("h2", null, el("span", { text: p.service }), el("span", { class: "sub", text: " · " + p.host + " · pid " + p.pid })),
          el("p", { class: "summary", text: (last ? "RSS " + fmtBytes(last.rss_bytes) + (last.heap_blocks !== null && last.heap_blocks !== undefined ? " · " + fmtCount(last.heap_blocks) + " heap blocks" : "") + " · " : "") +
            fmtCount(points.length) + " readings" + (leaks.length ? " · " + leaks.length + (leaks.length === 1 ? " leak event" : " leak events") : "") }),
          chart));
        lineChart(chart, [{ label: "RSS", colour: "#4e79a7", points: points.map((x) => [x.time_us, x.rss_bytes]) }], {
          yFormat: fmtBytes,
          rightSeries: [{ label: "heap blocks", colour: "#f28e2b", points: points.map((x) => [x.time_us, x.heap_blocks]) }],
          rightFormat: (v) => fmtCount(Math.round(v)),
          markers: leaks.map((l) => ({ x: l.time_us, class: "leak-marker", title: fmtTime(l.time_us) + " " + l.measure + " leak: " + l.reason })),
        });
      }
    }
    await load();
  };

  // --- heap diff -------------------------------------------------------------------------------

  async function readSnapshot(file) {
    const head = new Uint8Array(await file.slice(0, 2).arrayBuffer());
    let text;
    if (head[0] === 0x1f && head[1] === 0x8b) {
      if (typeof DecompressionStream !== "function") throw new Error("this browser cannot decompress gzip: give the .json");
      text = await new Response(file.stream().pipeThrough(new DecompressionStream("gzip"))).text();
    } else text = await file.text();
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new Error(file.name + " is not a heap snapshot (" + error.message + ")");
    }
  }

  pages.heap = async function (root) {
    document.title = "Heap diff · tracer";
    const before = el("input", { id: "heap-before", type: "file", accept: ".json,.gz,.json.gz", required: true });
    const after = el("input", { id: "heap-after", type: "file", accept: ".json,.gz,.json.gz", required: true });
    const form = el("form", { id: "heap-diff", class: "heap-form" },
      el("label", { class: "field" }, el("span", { text: "Older snapshot" }), before),
      el("label", { class: "field" }, el("span", { text: "Newer snapshot" }), after),
      el("button", { type: "submit", text: "Compare" }));
    const summary = el("div", { class: "summary" });
    const result = table("heap-diff-result", ["Type", "Size change", "Objects +", "Objects −", "Before", "After", "Held by"]);
    const sites = el("div", { class: "sites" });
    root.append(el("h1", { text: "Heap diff" }),
      el("p", { class: "hint", text: "Two snapshot files of one process written by `tracer heap` (.json.gz or .json): what grew between them." }),
      form, summary, sortable(result), sites);

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const a = before.files && before.files[0], b = after.files && after.files[0];
      if (!a || !b) {
        message("Choose both snapshot files.");
        return;
      }
      let d;
      try {
        const docs = await Promise.all([readSnapshot(a), readSnapshot(b)]);
        d = await postJson("/api/heap/diff", { before: docs[0], after: docs[1] });
      } catch (error) {
        message("Could not compare the snapshots: " + error.message);
        return;
      }
      message("");
      clear(summary);
      const who = (x) => (x && x.service ? x.service : "?") + " (pid " + (x && x.pid !== undefined ? x.pid : "?") + ") at " + (x && x.time ? x.time : "?");
      summary.append(kvTable([
        ["older", who(d.old)], ["newer", who(d.new)], ["apart", d.seconds !== undefined ? trim(d.seconds, 1) + " s" : null],
        ["RSS change", d.rss_bytes === null ? null : fmtBytes(d.rss_bytes)], ["objects change", fmtCount(d.nodes)], ["size change", fmtBytes(d.size_bytes)],
      ]));
      const body = clear(result.tBodies[0]);
      const fragment = document.createDocumentFragment();
      for (const t of d.types || []) {
        const holders = Array.isArray(t.held_by) ? t.held_by.map((h) => String(h.held_by) + (h.len !== undefined && h.len !== null ? " (" + fmtCount(h.len) + (h.len_before !== undefined && h.len_before !== null ? " from " + fmtCount(h.len_before) : "") + ")" : "")).join("; ") : "";
        fragment.append(el("tr", { class: t.size_bytes > 0 || t["+"] > 0 ? "grew" : "shrank" },
          el("td", { class: "mono", text: t.what }), numCell(t.size_bytes, (t.size_bytes > 0 ? "+" : "") + fmtBytes(t.size_bytes)),
          numCell(t["+"], fmtCount(t["+"])), numCell(t["-"], fmtCount(t["-"])),
          numCell(t.count_before, fmtCount(t.count_before)), numCell(t.count_after, fmtCount(t.count_after)), el("td", { text: holders })));
      }
      body.append(fragment);
      clear(sites);
      if (d.allocation_sites && Array.isArray(d.allocation_sites.sites) && d.allocation_sites.sites.length) {
        const t = table("heap-sites", ["Allocation site", "Size", "Blocks"]);
        for (const s of d.allocation_sites.sites.slice(0, 50)) {
          t.tBodies[0].append(el("tr", null, el("td", { class: "mono", text: s.file + ":" + s.line }), numCell(s.size_bytes, fmtBytes(s.size_bytes)), numCell(s.count, fmtCount(s.count))));
        }
        sites.append(el("h2", { text: d.allocation_sites.compared ? "Allocation sites that grew" : "Allocation sites of the newer snapshot" }), t);
      }
    });
  };

  // --- router ----------------------------------------------------------------------------------

  function route() {
    const path = location.pathname.replace(/\/+$/, "") || "/";
    const q = new URLSearchParams(location.search);
    if (path === "/" || path === "/search") return ["search", { query: q }];
    let m = /^\/trace\/([^/]+)$/.exec(path);
    if (m) return TRACE_ID.test(m[1]) ? ["trace", { id: m[1].toLowerCase(), query: q }] : [null, "not a trace id: a trace id is 32 hexadecimal digits"];
    if (["/map", "/dashboard", "/memory", "/heap", "/profiles"].includes(path)) return [path.slice(1), { query: q }];
    m = /^\/profiles\/([0-9]+)$/.exec(path);
    if (m) return ["profiles", { id: m[1], query: q }];
    return [null, "no such page"];
  }

  async function render() {
    timers.forEach((id) => clearInterval(id));
    timers = [];
    message("");
    const root = clear(document.getElementById("app"));
    // A token in the address is kept by the cookie the server set: leave it out of links shared.
    const current = new URLSearchParams(location.search);
    if (current.has("token")) {
      current.delete("token");
      const rest = current.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
    const [name, params] = route();
    document.querySelectorAll("#nav a").forEach((a) => {
      const target = a.getAttribute("href").slice(1);
      a.classList.toggle("active", name === target || (name === "trace" && target === "search"));
    });
    if (!name) {
      message(String(params));
      return;
    }
    const page = pages[name];
    if (typeof page !== "function") {
      message(name === "profiles" ? "profiles are not available" : "no such page");
      return;
    }
    try {
      await page(root, params);
    } catch (error) {
      message("This page failed: " + (error && error.message ? error.message : String(error)));
      if (window.console) console.warn(error);
    }
  }

  // Helpers other page scripts (flame.js) may use.
  window.tracerUI = { el: el, svg: svg, api: api, postJson: postJson, message: message, clear: clear, query: query,
    fmtDuration: fmtDuration, fmtTime: fmtTime, fmtCount: fmtCount, fmtBytes: fmtBytes, serviceColour: serviceColour,
    traceHref: traceHref, legend: legend, table: table, sortable: sortable, isSpanId: (v) => SPAN_ID.test(v) };

  window.addEventListener("popstate", render);
  // Deferred scripts run before DOMContentLoaded: waiting for it lets flame.js register first.
  if (document.readyState === "complete") render();
  else document.addEventListener("DOMContentLoaded", render);
})();
