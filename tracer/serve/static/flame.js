// The profiles page of `tracer serve`: the list of CPU profiles received, and a flame graph
// (an icicle: the outermost frame on top) of one, for the whole profile, one route or one trace.
//
// A profile batch (docs/profiler.md, "What the reporters get") carries its collapsed stacks,
// `route <route>;<outermost>;...;<innermost> <samples>` per line, and per sampled trace the same
// without the route. Every name reaches the page through textContent or setAttribute; styles
// are SVG attributes and classes (the Content-Security-Policy forbids inline styles).
"use strict";

(function () {
  const pages = (window.tracerPages = window.tracerPages || {});
  const SVG = "http://www.w3.org/2000/svg";
  const TRACE_ID = /^[0-9a-f]{32}$/i;
  const WIDTH = 1200;
  const ROW = 18;
  const CHAR = 6.6; // average width of a character of the 11px labels, for cutting them
  const ROUTE_HEAD = "route ";

  function ui() {
    return window.tracerUI || null;
  }

  function node(tag, attrs, text) {
    const made = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) made.setAttribute(key, String(value));
    }
    if (text !== undefined && text !== null) made.textContent = String(text);
    return made;
  }

  function emptied(element) {
    while (element.firstChild) element.removeChild(element.firstChild);
    return element;
  }

  function say(text, kind) {
    const helpers = ui();
    if (helpers) helpers.message(text, kind);
  }

  async function getJson(path) {
    const helpers = ui();
    if (helpers) return helpers.api(path);
    const answer = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error(answer.status + " " + answer.statusText);
    return answer.json();
  }

  // --- the stacks ------------------------------------------------------------------------------

  /** Lines of collapsed stacks -> [[frames...], samples]; lines that do not parse are skipped. */
  function parseCollapsed(text) {
    const out = [];
    if (typeof text !== "string") return out;
    for (const line of text.split("\n")) {
      const cut = line.lastIndexOf(" ");
      if (cut <= 0) continue;
      const samples = Number(line.slice(cut + 1));
      if (!Number.isFinite(samples) || samples <= 0) continue;
      out.push([line.slice(0, cut).split(";"), samples]);
    }
    return out;
  }

  /** The rows of the flame graph asked for: all routes (each route a child of the root), one
   * route (its head dropped), or one trace. */
  function stacksFor(profile, route, trace) {
    if (trace) {
      const traced = (Array.isArray(profile.traces) ? profile.traces : []).find((t) => t && t.trace_id === trace);
      return traced ? parseCollapsed(traced.collapsed) : [];
    }
    const rows = parseCollapsed(profile.collapsed);
    if (!route) return rows;
    const head = ROUTE_HEAD + route;
    return rows.filter(([frames]) => frames[0] === head).map(([frames, samples]) => [frames.slice(1), samples]);
  }

  function routesOf(profile) {
    const found = new Set(Array.isArray(profile.routes) ? profile.routes.filter((r) => typeof r === "string") : []);
    for (const [frames] of parseCollapsed(profile.collapsed)) {
      if (frames[0] && frames[0].startsWith(ROUTE_HEAD)) found.add(frames[0].slice(ROUTE_HEAD.length));
    }
    return Array.from(found).sort();
  }

  /** A tree of {name, value, children (Map), parent} from the rows. */
  function buildTree(rows, rootName) {
    const root = { name: rootName, value: 0, children: new Map(), parent: null, depth: 0 };
    for (const [frames, samples] of rows) {
      root.value += samples;
      let at = root;
      for (const name of frames) {
        let child = at.children.get(name);
        if (!child) {
          child = { name: name, value: 0, children: new Map(), parent: at, depth: at.depth + 1 };
          at.children.set(name, child);
        }
        child.value += samples;
        at = child;
      }
    }
    return root;
  }

  function height(tree) {
    let deepest = 0;
    const walk = (n) => {
      deepest = Math.max(deepest, n.depth);
      n.children.forEach(walk);
    };
    walk(tree);
    return deepest + 1;
  }

  /** A warm colour for a function, the same for the same name on every draw. */
  function colour(name) {
    let hash = 0;
    for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0;
    const h = 10 + (Math.abs(hash) % 45);
    const l = 55 + (Math.abs(hash >> 8) % 15);
    return "hsl(" + h + ", 80%, " + l + "%)";
  }

  // --- the graph -------------------------------------------------------------------------------

  /** Draw `tree` into `chart`, zoomed on `focus` (which spans the whole width; its ancestors
   * too). A click on a frame zooms on it. */
  function draw(chart, tree, focus, onZoom) {
    emptied(chart);
    const rows = height(tree);
    const total = tree.value;
    chart.setAttribute("viewBox", "0 0 " + WIDTH + " " + Math.max(rows * ROW, ROW));
    chart.setAttribute("data-samples", String(total));
    chart.setAttribute("data-focus", focus.name);
    if (!total) {
      chart.append(node("svg:text", { x: 8, y: 13, class: "flame-empty" }, "no samples"));
      return;
    }
    const place = (n, x, width) => {
      if (width < 0.5) return; // narrower than a pixel: not drawn
      const g = node("svg:g", {
        class: "frame" + (n === focus ? " focus" : ""),
        "data-name": n.name,
        "data-samples": n.value,
        "data-depth": n.depth,
        transform: "translate(" + x.toFixed(2) + "," + n.depth * ROW + ")",
      });
      const share = ((100 * n.value) / total).toFixed(1);
      g.append(node("svg:title", null, n.name + "\n" + n.value + (n.value === 1 ? " sample" : " samples") + " (" + share + "%)"));
      g.append(node("svg:rect", { width: Math.max(width - 0.5, 0.5).toFixed(2), height: ROW - 1, rx: 2, fill: n === tree ? "#c9d1de" : colour(n.name) }));
      const fits = Math.floor((width - 6) / CHAR);
      if (fits >= 3) {
        const label = n.name.length > fits ? n.name.slice(0, fits - 1) + "…" : n.name;
        g.append(node("svg:text", { x: 3, y: ROW - 5, "font-size": 11, class: "frame-label" }, label));
      }
      g.addEventListener("click", (event) => {
        event.stopPropagation();
        onZoom(n);
      });
      chart.append(g);
    };
    // The focus and its ancestors take the whole width; below the focus, widths by samples.
    const scale = WIDTH / focus.value;
    for (let up = focus.parent; up; up = up.parent) place(up, 0, WIDTH);
    const below = (n, x) => {
      place(n, x, n.value * scale);
      let childX = x;
      const children = Array.from(n.children.values()).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const child of children) {
        below(child, childX);
        childX += child.value * scale;
      }
    };
    below(focus, 0);
  }

  // --- the page --------------------------------------------------------------------------------

  function when(us) {
    const helpers = ui();
    if (helpers && helpers.fmtTime) return helpers.fmtTime(us);
    return new Date(Number(us) / 1000).toISOString();
  }

  function profilesTable(profiles, selected) {
    const table = node("table", { id: "profiles" });
    const head = node("tr");
    for (const heading of ["started", "service", "host", "pid", "reason", "seconds", "samples", "routes"]) head.append(node("th", null, heading));
    const thead = node("thead");
    thead.append(head);
    table.append(thead);
    const body = node("tbody");
    table.append(body);
    for (const p of profiles) {
      const id = String(p.id);
      if (!/^[0-9]+$/.test(id)) continue;
      const row = node("tr", { class: "profile-row" + (id === selected ? " selected" : ""), "data-profile-id": id });
      const link = node("a", { href: "/profiles/" + id, class: "profile-link" }, when(p.started_at_us));
      const first = node("td");
      first.append(link);
      row.append(first);
      row.append(node("td", null, p.service));
      row.append(node("td", null, p.host));
      row.append(node("td", { class: "num" }, p.pid));
      row.append(node("td", null, p.reason));
      row.append(node("td", { class: "num" }, Number(p.duration_s || 0).toFixed(1)));
      row.append(node("td", { class: "num" }, p.samples));
      row.append(node("td", null, Array.isArray(p.routes) ? p.routes.join(", ") : ""));
      link.addEventListener("click", (event) => {
        event.preventDefault();
        history.pushState(null, "", "/profiles/" + id);
        window.dispatchEvent(new PopStateEvent("popstate"));
      });
      body.append(row);
    }
    return table;
  }

  function showProfile(box, profile, query) {
    emptied(box);
    const routes = routesOf(profile);
    const traces = (Array.isArray(profile.traces) ? profile.traces : []).filter((t) => t && TRACE_ID.test(String(t.trace_id)));
    const controls = node("div", { class: "toolbar flame-controls" });
    const routeField = node("label", { class: "field" }, "route");
    const routeSelect = node("select", { id: "route", name: "route" });
    routeSelect.append(node("option", { value: "" }, "all routes"));
    for (const route of routes) routeSelect.append(node("option", { value: route }, route));
    routeField.append(routeSelect);
    const traceField = node("label", { class: "field" }, "trace");
    const traceInput = node("input", { id: "trace", name: "trace", type: "text", list: "flame-traces", placeholder: traces.length ? "trace id" : "no trace labels", autocomplete: "off" });
    const list = node("datalist", { id: "flame-traces" });
    for (const t of traces) list.append(node("option", { value: t.trace_id }, t.route + " · " + t.samples + " samples"));
    traceField.append(traceInput, list);
    const reset = node("button", { id: "flame-reset", type: "button" }, "reset zoom");
    controls.append(routeField, traceField, reset);
    const summary = node("p", { class: "summary", id: "flame-summary" });
    const chart = node("svg:svg", { id: "flame", class: "flame chart", role: "img", width: "100%", preserveAspectRatio: "none" });
    const title = node("h2", null, profile.service + " · pid " + profile.pid + " · " + profile.reason);
    const facts = node("p", { class: "summary" },
      Number(profile.samples || 0) + " samples in " + Number(profile.duration_s || 0).toFixed(1) + " s at up to " + profile.rate_hz + " Hz" +
      (profile.sampler_cpu_share !== undefined ? " · sampler CPU " + (100 * Number(profile.sampler_cpu_share)).toFixed(2) + "%" : "") +
      (profile.stacks_left_out ? " · " + profile.stacks_left_out + " rarer stacks left out" : ""));
    box.append(title, facts, controls, summary, chart);

    routeSelect.value = routes.includes(query.get("route") || "") ? query.get("route") || "" : "";
    traceInput.value = TRACE_ID.test(query.get("trace") || "") ? query.get("trace") : "";

    let tree = null;
    const zoom = (n) => draw(chart, tree, n, zoom);
    const render = () => {
      const route = routeSelect.value;
      const trace = TRACE_ID.test(traceInput.value.trim()) ? traceInput.value.trim().toLowerCase() : "";
      const rows = stacksFor(profile, route, trace);
      tree = buildTree(rows, trace ? "trace " + trace : route ? ROUTE_HEAD + route : "all");
      summary.textContent = tree.value + (tree.value === 1 ? " sample" : " samples") +
        (trace ? " of trace " + trace : route ? " of route " + route : " of every route") +
        (trace && !rows.length ? ": no stacks of this trace in the profile" : "");
      chart.setAttribute("data-route", route);
      chart.setAttribute("data-trace", trace);
      zoom(tree);
      const params = new URLSearchParams(location.search);
      for (const [key, value] of [["route", route], ["trace", trace]]) {
        if (value) params.set(key, value);
        else params.delete(key);
      }
      const search = params.toString();
      history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
    };
    routeSelect.addEventListener("change", () => {
      traceInput.value = "";
      render();
    });
    traceInput.addEventListener("input", () => {
      const text = traceInput.value.trim();
      if (!text || TRACE_ID.test(text)) render();
    });
    reset.addEventListener("click", () => zoom(tree));
    render();
  }

  pages.profiles = async function (root, params) {
    document.title = "Profiles · tracer";
    const query = (params && params.query) || new URLSearchParams(location.search);
    root.append(node("h1", null, "CPU profiles"));
    let listing;
    try {
      listing = await getJson("/api/profiles" + (query.get("service") ? "?service=" + encodeURIComponent(query.get("service")) : ""));
    } catch (error) {
      say("Could not load the profiles: " + error.message);
      return;
    }
    const profiles = Array.isArray(listing && listing.profiles) ? listing.profiles : [];
    if (!profiles.length) {
      say("No profiles yet: tracer.profile(), the profile signal or GET /debug/profile send them (docs/profiler.md).", "info");
    } else {
      say("");
    }
    const wanted = params && params.id ? String(params.id) : profiles.length ? String(profiles[0].id) : null;
    root.append(profilesTable(profiles, wanted));
    const box = node("section", { class: "flame-box" });
    root.append(box);
    if (!wanted) return;
    let profile;
    try {
      profile = await getJson("/api/profiles/" + encodeURIComponent(wanted));
    } catch (error) {
      say("Could not load profile " + wanted + ": " + error.message);
      return;
    }
    showProfile(box, profile || {}, query);
  };

  // For tests and other scripts: the pure parts.
  pages.profiles.parseCollapsed = parseCollapsed;
  pages.profiles.buildTree = buildTree;
})();
