// raspc report: draws the data embedded in #raspc-data (no network, no libraries).
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("raspc-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const LAYER_COLORS = ["#8ecae6", "#ffb703", "#90be6d", "#f28482", "#b5a3e6", "#f6bd60", "#84a59d",
    "#e9c46a", "#a8dadc", "#e5989b", "#9bc1bc", "#cdb4db"];
  const EMBED_COLOR = "#e7ecef", NONE_COLOR = "#ffffff";
  const MAX_ROWS = 256;          // directions drawn per group before "show more"
  const MAX_MATRIX_CELLS = 3600; // a circuit larger than this is listed, not drawn

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function layerColor(layer) {
    if (layer === null || layer === undefined) return NONE_COLOR;
    return layer < 0 ? EMBED_COLOR : LAYER_COLORS[layer % LAYER_COLORS.length];
  }
  // white -> blue for positive, white -> red for negative, relative to `scale`
  function heat(v, scale) {
    if (!scale || v === 0) return "#ffffff";
    const t = Math.max(-1, Math.min(1, v / scale));
    const a = Math.abs(t);
    const [r, g, b] = t > 0 ? [33, 102, 172] : [178, 24, 43];
    const mix = (c) => Math.round(255 + (c - 255) * a);
    return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
  }
  function textColor(v, scale) { return scale && Math.abs(v / scale) > 0.6 ? "#fff" : "#1d232b"; }
  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1000 || a < 0.001) return v.toExponential(1);
    return (Math.round(v * 1000) / 1000).toString();
  }
  const tooltip = el("div", { id: "tooltip" });
  document.body.append(tooltip);
  function tip(e, text) {
    e.addEventListener("mousemove", (ev) => {
      tooltip.textContent = text; tooltip.style.display = "block";
      tooltip.style.left = (ev.clientX + 12) + "px"; tooltip.style.top = (ev.clientY + 12) + "px";
    });
    e.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  }

  // ------------------------------------------------------------------ header
  function renderHeader() {
    document.getElementById("title").textContent = DATA.title;
    const chips = document.getElementById("chips");
    for (const [k, v] of DATA.summary) chips.append(el("span", { class: "chip" }, k + " ", el("b", { text: v })));
    const notes = document.getElementById("notes");
    for (const n of DATA.notes) notes.append(el("div", { class: "note", text: n }));
  }

  // ------------------------------------------------------------------ program graph
  function layout(nodes, inputsOf) {
    // columns by longest path from a source; rows in definition order
    const depth = {};
    for (const n of nodes) {
      const ins = inputsOf(n).filter((i) => i in depth);
      depth[n.id] = ins.length ? 1 + Math.max(...ins.map((i) => depth[i])) : 0;
    }
    const cols = {};
    for (const n of nodes) (cols[depth[n.id]] = cols[depth[n.id]] || []).push(n);
    return { depth, cols };
  }

  function renderProgram() {
    const box = document.getElementById("program-graph");
    const P = DATA.program;
    if (!P) { box.append(el("p", { class: "hint", text: "This file carries no program graph (compile with raspc to store one)." })); return; }
    const nodes = P.nodes.map((n) => Object.assign({ id: n.label }, n));
    const { depth, cols } = layout(nodes, (n) => n.inputs);
    // top to bottom by dependency depth; each level centred
    const W = 150, H = 40, GX = 18, GY = 34;
    const pos = {};
    let maxRow = 0;
    for (const list of Object.values(cols)) maxRow = Math.max(maxRow, list.length);
    const width = 32 + maxRow * (W + GX) - GX;
    for (const [c, list] of Object.entries(cols)) {
      const x0 = (width - (list.length * (W + GX) - GX)) / 2;
      list.forEach((n, r) => { pos[n.id] = { x: x0 + r * (W + GX), y: 16 + Number(c) * (H + GY) }; });
    }
    const nlevels = Object.keys(cols).length;
    const s = svg("svg", { width, height: 32 + nlevels * (H + GY) - GY, id: "program-svg" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa5b1" }));
    defs.append(marker); s.append(defs);
    const edgeEls = [];
    for (const n of nodes) for (const i of n.inputs) {
      if (!(i in pos)) continue;
      const a = pos[i], b = pos[n.id];
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y, my = (y1 + y2) / 2;
      // an edge over more than one level bends out to the side, around the nodes between
      const span = depth[n.id] - depth[i];
      const side = x2 >= x1 ? -1 : 1, off = span > 1 ? side * (W * 0.9 + 10 * (span - 2)) : 0;
      const d = span > 1 ? `M ${x1} ${y1} C ${x1 + off} ${y1 + GY}, ${x2 + off} ${y2 - GY}, ${x2} ${y2}`
        : `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2}`;
      const p = svg("path", { class: "edge", d, "marker-end": "url(#arrow)" });
      p.dataset.from = i; p.dataset.to = n.id; edgeEls.push(p); s.append(p);
    }
    for (const n of nodes) {
      const g = svg("g", { class: "node", "data-label": n.label, transform: `translate(${pos[n.id].x},${pos[n.id].y})` });
      const layer = n.blocks.length ? Math.min(...n.blocks.map((b) => b.layer)) : (n.embedded ? -1 : null);
      const fill = n.kind === "selector" ? "#f1f3f5" : layerColor(layer);
      const kinds = new Set(n.blocks.map((b) => b.kind));
      const stroke = kinds.has("head") && kinds.has("mlp") ? "#6a4c93" : kinds.has("head") ? "#1d4e89" : kinds.has("mlp") ? "#2b7a3d" : "#8d99ae";
      const dash = n.kind === "selector" ? "4 3" : (n.blocks.length || n.embedded ? "" : "2 2");
      g.append(svg("rect", { width: W, height: H, rx: n.kind === "selector" ? 14 : 5, fill, stroke, "stroke-dasharray": dash }));
      const t1 = svg("text", { x: 8, y: 16 }); t1.textContent = n.label.length > 21 ? n.label.slice(0, 20) + "…" : n.label; t1.setAttribute("font-weight", n.label === P.output ? "700" : "500");
      const sub = n.kind === "selector" ? n.op + (n.detail ? " · " + n.detail.replace("predicate ", "") : "")
        : n.op + " · " + (n.encoding || "") + (n.blocks.length ? " · L" + [...new Set(n.blocks.map((b) => b.layer))].join(",") : "");
      const t2 = svg("text", { x: 8, y: 32, fill: "#4a5561" }); t2.textContent = sub.length > 25 ? sub.slice(0, 24) + "…" : sub;
      g.append(t1, t2);
      g.addEventListener("click", () => selectNode(n, g, edgeEls));
      s.append(g);
    }
    box.append(s);
    const legend = document.getElementById("program-legend");
    legend.append(el("span", {}, el("span", { class: "sw", style: `background:${EMBED_COLOR}` }), "embedding"));
    const layers = [...new Set(DATA.blocks.map((b) => b.layer))].sort((a, b) => a - b);
    for (const l of layers) legend.append(el("span", {}, el("span", { class: "sw", style: `background:${layerColor(l)}` }), "layer " + l));
    legend.append(el("span", {}, "border: ", el("b", { text: "blue" }), " head, ", el("b", { text: "green" }), " MLP, ", el("b", { text: "purple" }), " both; dashed: selector / folded into another block"));
  }

  function selectNode(n, g, edgeEls) {
    document.querySelectorAll("#program-svg .node.selected").forEach((x) => x.classList.remove("selected"));
    g.classList.add("selected");
    for (const e of edgeEls) e.classList.toggle("hl", e.dataset.to === n.label || e.dataset.from === n.label);
    const d = document.getElementById("node-details");
    d.innerHTML = "";
    d.append(el("h3", { text: n.label + (n.label === DATA.program.output ? "  (output)" : "") }));
    const dl = el("dl");
    const row = (k, v) => { dl.append(el("dt", { text: k }), el("dd", {}, v)); };
    row("op", n.op + (n.detail ? " (" + n.detail + ")" : ""));
    if (n.kind === "sop") {
      row("encoding", n.encoding);
      const vals = n.n_values === null ? "not finite" : n.values.join(", ") + (n.n_values > n.values.length ? ` … (${n.n_values} values)` : ` (${n.n_values})`);
      row("value set", vals);
    }
    row("source", n.src || (["tokens", "indices", "length"].includes(n.label) ? "built in" : "—"));
    row("inputs", n.inputs.length ? n.inputs.join(", ") : "—");
    row("computed by", n.blocks.length ? n.blocks.map((b) => `L${b.layer} ${b.kind} ${b.name}`).join("; ") : (n.embedded ? "the embedding" : (n.kind === "selector" ? "the heads that use it" : "no block of its own (folded by the passes)")));
    if (n.dims.length) {
      const first = DATA.labels[n.dims[0]], last = DATA.labels[n.dims[n.dims.length - 1]];
      row("residual", `${n.dims.length} dims, ${n.dims[0]}–${n.dims[n.dims.length - 1]} (${first} … ${last})`);
    } else row("residual", n.kind === "selector" ? "none (a selector is an attention pattern)" : "none");
    d.append(dl);
    if (n.dims.length) {
      d.append(el("button", { class: "small", text: "show in the residual stream", onclick: () => revealGroup(n.label) }));
    }
  }

  // ------------------------------------------------------------------ layers
  function renderLayers() {
    const t = document.getElementById("layers-table");
    const groupsOf = (dims) => [...new Set(dims.map((d) => groupOfDim[d]))].join(", ");
    const head = el("tr", {}, ...["layer", "block", "kind", "computes", "reads", "writes", "width", "params"].map((h) => el("th", { text: h })));
    t.append(head);
    for (const b of DATA.blocks) {
      const reads = Object.entries(b.reads).map(([via, dims]) => (via === "in" ? "" : via.toUpperCase() + ": ") + groupsOf(dims)).join("; ");
      t.append(el("tr", {}, el("td", { class: "num", text: b.layer }), el("td", { class: "mono", text: b.name }),
        el("td", { text: b.kind === "head" ? "attention head" : "MLP" }), el("td", { class: "mono", text: b.sop }),
        el("td", { class: "mono", text: reads }), el("td", { class: "mono", text: groupsOf(b.writes) }),
        el("td", { class: "num", text: b.width + (b.kind === "head" ? " (d_head)" : " hidden") }), el("td", { class: "num", text: b.params.toLocaleString("en") })));
    }
    t.append(el("tr", {}, el("td"), el("td", { text: "total (with embeddings)" }), el("td"), el("td"), el("td"), el("td"),
      el("td", { class: "num", text: DATA.d_model + " (d_model)" }), el("td", { class: "num", text: DATA.params.toLocaleString("en") })));
  }

  // ------------------------------------------------------------------ residual stream
  const groupOfDim = [];
  DATA.groups.forEach((g, gi) => g.dims.forEach((d) => { groupOfDim[d] = g.name; }));
  let currentBoundary = DATA.boundaries.length - 1;
  const expanded = new Set();
  let hideZero = DATA.d_model > 200;

  function denseBoundary(b) {
    const T = DATA.input.tokens.length;
    const rows = new Map();  // dim -> Float32Array(T)
    for (const [d, p, v] of b.nz) { if (!rows.has(d)) rows.set(d, new Float32Array(T)); rows.get(d)[p] = v; }
    return rows;
  }

  function renderResidual() {
    const tabs = document.getElementById("boundary-tabs");
    tabs.innerHTML = "";
    DATA.boundaries.forEach((b, i) => {
      tabs.append(el("button", { class: i === currentBoundary ? "active" : "", text: b.name, onclick: () => { currentBoundary = i; renderResidual(); } }));
    });
    const box = document.getElementById("residual-heatmap");
    box.innerHTML = "";
    if (!DATA.boundaries.length) return;
    const rows = denseBoundary(DATA.boundaries[currentBoundary]);
    const T = DATA.input.tokens.length;
    const table = el("table", { class: "heatmap", id: "residual-table" });
    const hdr = el("tr", {}, el("th", { class: "row", text: "direction \\ position" }));
    DATA.input.tokens.forEach((tok, i) => hdr.append(el("th", { class: "col", text: `${i}:${tok}` })));
    table.append(hdr);
    for (const g of DATA.groups) {
      const live = g.dims.filter((d) => rows.has(d));
      if (hideZero && !live.length) continue;
      let scale = 0;
      for (const d of g.dims) if (rows.has(d)) for (const v of rows.get(d)) scale = Math.max(scale, Math.abs(v));
      const open = expanded.has(g.name);
      const tr = el("tr", { class: "group", "data-group": g.name });
      tr.append(el("th", { class: "row", text: `${open ? "▾" : "▸"} ${g.name} (${g.dims.length})`, onclick: () => { open ? expanded.delete(g.name) : expanded.add(g.name); renderResidual(); } }));
      for (let p = 0; p < T; p++) {
        // collapsed: the s-op's value here (its active `name:value` direction, e.g. "2" for hist:2),
        // else, for a numerical s-op or helper directions, the strongest number
        const own = live.filter((d) => DATA.labels[d].startsWith(g.name + ":"));
        let best = -1, bestV = 0;
        for (const d of (own.length ? own : live)) { const v = rows.get(d)[p]; if (Math.abs(v) > Math.abs(bestV)) { best = d; bestV = v; } }
        const valueDir = own.length > 0 && best >= 0 && bestV > 0.5;
        const text = best < 0 || (own.length && !valueDir) ? "·" : (valueDir ? DATA.labels[best].slice(g.name.length + 1) : fmt(bestV));
        const td = el("td", { style: `background:${heat(bestV, scale)};color:${textColor(bestV, scale)}`, text });
        tip(td, best < 0 ? `${g.name} @ ${p}: all 0` : `${DATA.labels[best]} @ ${p}:${DATA.input.tokens[p]} = ${fmt(bestV)}`);
        tr.append(td);
      }
      table.append(tr);
      if (!open) continue;
      const dims = hideZero ? live : g.dims;
      const limit = g.shown || MAX_ROWS;
      for (const d of dims.slice(0, limit)) {
        const r = el("tr", { class: "dir", "data-dim": d });
        r.append(el("th", { class: "row", text: DATA.labels[d], title: DATA.labels[d] }));
        const vals = rows.get(d) || new Float32Array(T);
        for (let p = 0; p < T; p++) {
          const td = el("td", { style: `background:${heat(vals[p], scale)};color:${textColor(vals[p], scale)}`, text: vals[p] === 0 ? "" : fmt(vals[p]) });
          tip(td, `${DATA.labels[d]} @ ${p}:${DATA.input.tokens[p]} = ${fmt(vals[p])}`);
          r.append(td);
        }
        table.append(r);
      }
      if (dims.length > limit) {
        const more = el("tr", { class: "more" }, el("th", { class: "row" }, el("button", { class: "small", text: `show ${Math.min(MAX_ROWS, dims.length - limit)} more of ${dims.length}`, onclick: () => { g.shown = limit + MAX_ROWS; renderResidual(); } })));
        table.append(more);
      }
    }
    box.append(table);
  }

  function revealGroup(name) {
    expanded.add(name);
    renderResidual();
    const tr = document.querySelector(`#residual-table tr.group[data-group="${CSS.escape(name)}"]`);
    if (tr) { tr.classList.add("hl"); tr.scrollIntoView({ block: "center" }); }
  }

  // ------------------------------------------------------------------ heads
  function matrixTable(rowLabels, colLabels, get, id) {
    let scale = 0;
    for (let i = 0; i < rowLabels.length; i++) for (let j = 0; j < colLabels.length; j++) scale = Math.max(scale, Math.abs(get(i, j)));
    const many = colLabels.length > 8 && Math.max(...colLabels.map((c) => c.length)) > 5;
    const t = el("table", { class: "heatmap" + (many ? " many" : ""), ...(id ? { id } : {}) });
    const hdr = el("tr", {}, el("th"));
    for (const c of colLabels) hdr.append(el("th", { class: "col", text: c }));
    t.append(hdr);
    rowLabels.forEach((r, i) => {
      const tr = el("tr", {}, el("th", { class: "row", text: r, title: r }));
      colLabels.forEach((c, j) => {
        const v = get(i, j);
        const td = el("td", { style: `background:${heat(v, scale)};color:${textColor(v, scale)}`, text: v === 0 ? "" : fmt(v) });
        tip(td, `${r} → ${c}: ${fmt(v)}`);
        tr.append(td);
      });
      t.append(tr);
    });
    return t;
  }

  function circuitView(c, what) {
    const box = el("div", {});
    box.append(el("h4", { text: what }));
    if (!c.entries.length) { box.append(el("p", { class: "hint", text: "all zero" })); return box; }
    const rows = c.rows.map((d) => DATA.labels[d]), cols = c.cols.map((d) => DATA.labels[d]);
    if (rows.length * cols.length <= MAX_MATRIX_CELLS) {
      const m = new Map(c.entries.map(([r, k, v]) => [r + "," + k, v]));
      box.append(el("div", { class: "scroll" }, matrixTable(rows, cols, (i, j) => m.get(c.rows[i] + "," + c.cols[j]) || 0)));
    } else {
      const t = el("table", { class: "entries mono" });
      for (const [r, k, v] of c.entries.slice(0, 200)) t.append(el("tr", {}, el("td", { text: DATA.labels[r] }), el("td", { text: "→" }), el("td", { text: DATA.labels[k] }), el("td", { text: fmt(v) })));
      box.append(el("p", { class: "hint", text: `${rows.length} × ${cols.length} non-zero rows × columns: the ${Math.min(200, c.entries.length)} largest of ${c.total} entries` }), el("div", { class: "scroll" }, t));
    }
    if (c.truncated) box.append(el("p", { class: "hint", text: `only the ${c.entries.length} largest entries are stored` }));
    return box;
  }

  function renderHeads() {
    const box = document.getElementById("head-panels");
    if (!DATA.heads.length) { box.append(el("p", { class: "hint", text: "This model has no attention heads." })); return; }
    DATA.heads.forEach((h, i) => {
      const panel = el("details", { class: "head-panel", "data-head": h.name });
      panel.append(el("summary", {}, h.name, el("span", { class: "muted", text: `computes ${h.sop} · scale ${fmt(h.scale)} · d_head ${h.width}` })));
      const body = el("div", { class: "head-body" });
      panel.append(body);
      let drawn = false;
      const draw = () => {
        if (drawn) return; drawn = true;
        if (h.pattern) {
          const toks = DATA.input.tokens.map((t, p) => `${p}:${t}`);
          const pat = el("div", {}, el("h4", { text: "attention pattern (query ↓, key →)" }), matrixTable(toks, toks, (q, k) => h.pattern[q][k], null));
          pat.querySelector("table").classList.add("pattern");
          body.append(pat);
        }
        body.append(circuitView(h.qk, "QK circuit (query direction → key direction)"));
        body.append(circuitView(h.ov, "OV circuit (key direction → written direction)"));
      };
      panel.addEventListener("toggle", () => { if (panel.open) draw(); });
      if (i < 4 && DATA.d_model <= 400) { panel.open = true; draw(); }
      box.append(panel);
    });
  }

  // ------------------------------------------------------------------ circuit graph
  function renderCircuit() {
    const C = DATA.circuit;
    const box = document.getElementById("circuit-graph");
    const cols = {};
    const colOf = (n) => n.kind === "embed" ? 0 : n.kind === "readout" ? 1e6 : 1 + 2 * n.layer + (n.kind === "mlp" ? 1 : 0);
    for (const n of C.nodes) (cols[colOf(n)] = cols[colOf(n)] || []).push(n);
    const W = 150, H = 36, GX = 70, GY = 18;
    const pos = {};
    let maxRows = 0;
    const colKeys = Object.keys(cols).map(Number).sort((a, b) => a - b);
    colKeys.forEach((c, ci) => { cols[c].forEach((n, r) => { pos[n.name] = { x: 16 + ci * (W + GX), y: 16 + r * (H + GY) }; }); maxRows = Math.max(maxRows, cols[c].length); });
    const s = svg("svg", { width: 32 + colKeys.length * (W + GX) - GX, height: 32 + maxRows * (H + GY) - GY, id: "circuit-svg" });
    const VIA = { Q: "#d1495b", K: "#edae49", V: "#00798c", mlp_in: "#66a182", readout: "#6c757d" };
    for (const e of C.edges) {
      const a = pos[e.from], b = pos[e.to];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      const p = svg("path", { class: "edge", d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, stroke: VIA[e.via] || "#999", style: `stroke:${VIA[e.via] || "#999"}` });
      s.append(p);
    }
    for (const n of C.nodes) {
      const g = svg("g", { class: "node", transform: `translate(${pos[n.name].x},${pos[n.name].y})` });
      g.append(svg("rect", { width: W, height: H, rx: 5, fill: layerColor(n.kind === "embed" ? -1 : n.layer), stroke: n.kind === "head" ? "#1d4e89" : n.kind === "mlp" ? "#2b7a3d" : "#8d99ae" }));
      const t1 = svg("text", { x: 7, y: 15 }); t1.textContent = n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name;
      const t2 = svg("text", { x: 7, y: 29, fill: "#4a5561" }); t2.textContent = (n.kind === "embed" ? "embedding" : n.kind) + (n.sop ? " · " + n.sop : (n.label && n.kind === "embed" ? " · " + n.label : ""));
      g.append(t1, t2);
      s.append(g);
    }
    box.append(s);
    const legend = document.getElementById("circuit-legend");
    for (const [k, c] of Object.entries(VIA)) legend.append(el("span", {}, el("span", { class: "sw", style: `background:${c}` }), k === "mlp_in" ? "MLP input" : k === "readout" ? "read out" : k + " input"));
    const t = document.getElementById("composition-table");
    if (!C.composition.length) { t.append(el("tr", {}, el("td", { text: "No two heads compose directly (every path between heads passes through an MLP or the embedding)." }))); return; }
    t.append(el("tr", {}, ...["kind", "earlier head", "later head", "score"].map((h) => el("th", { text: h }))));
    for (const [kind, a, b, sc] of C.composition) t.append(el("tr", {}, el("td", { text: kind + "-composition" }), el("td", { class: "mono", text: a }), el("td", { class: "mono", text: b }), el("td", { class: "num", text: sc.toFixed(3) })));
  }

  // ------------------------------------------------------------------ input / output
  function renderIO() {
    const box = document.getElementById("io");
    const t = matrixTable(["input", "output"], DATA.input.tokens.map((t, i) => String(i)), () => 0);
    t.querySelectorAll("tr").forEach((tr, r) => {
      if (r === 0) return;
      tr.querySelectorAll("td").forEach((td, p) => { td.textContent = r === 1 ? DATA.input.tokens[p] : DATA.input.decoded[p]; });
    });
    box.append(t);
  }

  const hideBox = document.getElementById("hide-zero");
  hideBox.checked = hideZero;
  hideBox.addEventListener("change", () => { hideZero = hideBox.checked; renderResidual(); });

  renderHeader();
  renderIO();
  renderProgram();
  renderLayers();
  renderResidual();
  renderHeads();
  renderCircuit();
  document.body.dataset.rendered = "true";
})();
