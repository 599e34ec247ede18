// shapetrace report: select a layer from the diagram, the table or a cause; filter the table.
// Reads the trace (the JSON schema of `--format json`) and the view (drawn nodes, skip partners)
// from the page's application/json script; loads nothing.
(function () {
  "use strict";
  const payload = JSON.parse(document.getElementById("trace-data").textContent);
  const trace = payload.trace;
  const view = payload.view;
  const layers = new Map(trace.layers.map((layer) => [layer.index, layer]));
  const diagram = document.getElementById("diagram");
  const details = document.getElementById("details");
  const table = document.getElementById("layers");
  const rows = Array.from(table.tBodies[0].rows);
  const rowOf = new Map(rows.map((row) => [Number(row.dataset.index), row]));
  const nodeOf = new Map(Array.from(diagram.querySelectorAll("g[data-layer]")).map((g) => [Number(g.dataset.index), g]));

  // --- formatting ---------------------------------------------------------------------
  const shapeText = (shape) => "[" + shape.join(", ") + "]";
  const nameOf = (index) => (index < 0 ? "input" : (layers.get(index).name || layers.get(index).type));
  const integer = (value) => Number(value).toLocaleString("en-US");
  function scaled(value, unit) {
    const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, prefix] of steps) {
      if (Math.abs(value) >= size) return (value / size).toFixed(2) + " " + prefix + unit;
    }
    return String(value) + (unit ? " " + unit : "");
  }
  function costText(key, value) {
    if (typeof value !== "number") return typeof value === "string" ? value : JSON.stringify(value);
    if (key.endsWith("bytes")) return scaled(value, "B");
    if (key.endsWith("flops") || key === "macs") return scaled(value, "");
    return integer(value);
  }
  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
    for (const child of children) node.append(child);
    return node;
  }

  // --- selection ----------------------------------------------------------------------
  function ancestors(index) {
    const chain = [];
    for (let layer = layers.get(index); layer; layer = layers.get(layer.parent)) chain.push(layer.index);
    return chain;
  }
  function clearMarks() {
    for (const marked of document.querySelectorAll(".selected, .partner, .active")) {
      marked.classList.remove("selected", "partner", "active");
    }
  }
  function reveal(g) {
    // Scroll the diagram panel alone, so the page stays where the reader clicked.
    const box = g.getBoundingClientRect();
    const panel = diagram.getBoundingClientRect();
    diagram.scrollBy({
      top: box.top - panel.top - (panel.height - box.height) / 2,
      left: box.left - panel.left - (panel.width - box.width) / 2,
    });
  }
  function select(index, scroll) {
    const layer = layers.get(index);
    if (!layer) return;
    clearMarks();
    const node = view.node_of[index];
    const row = rowOf.get(index);
    if (row) row.classList.add("selected");
    if (node !== null && node !== undefined) {
      const g = nodeOf.get(node);
      if (g) {
        g.classList.add("selected");
        if (scroll) reveal(g);
      }
      if (node !== index && rowOf.get(node)) rowOf.get(node).classList.add("selected");
      for (const partner of view.partners[node] || []) {
        const partnerNode = nodeOf.get(partner);
        if (partnerNode) partnerNode.classList.add("partner");
        if (rowOf.get(partner)) rowOf.get(partner).classList.add("partner");
      }
      const partners = new Set((view.partners[node] || []).map(String));
      for (const edge of diagram.querySelectorAll("g.edge[data-ends]")) {
        const [tail, head] = edge.dataset.ends.split(" ");  // the skip's rungs, not the main path
        if ((tail === String(node) && partners.has(head)) || (head === String(node) && partners.has(tail))) {
          edge.classList.add("active");
        }
      }
    }
    showDetails(layer);
  }

  // --- details ------------------------------------------------------------------------
  const KNOWN = new Set(["index", "name", "type", "depth", "parent", "inputs", "outputs", "params", "status"]);
  function showDetails(layer) {
    details.replaceChildren(element("h2", {}, "Details"));
    const title = element("h3", {}, (layer.name || layer.type) + " ", element("span", { class: "message" }, layer.type));
    if (layer.status !== "ok") title.append(" ", element("span", { class: "status " + layer.status }, layer.status));
    details.append(title);
    const list = element("dl");
    const add = (term, ...value) => list.append(element("dt", {}, term), element("dd", {}, ...value));
    add("call", "#" + layer.index + " · depth " + layer.depth + (layer.parent !== null && layer.parent > 0 ? " · in " + nameOf(layer.parent) : ""));
    add("input" + (layer.inputs.length === 1 ? "" : "s"), element("span", { class: "shape" }, layer.inputs.map(shapeText).join("\n") || "none"));
    add("output" + (layer.outputs.length === 1 ? "" : "s"), element("span", { class: "shape" }, layer.outputs.map(shapeText).join("\n") || "none"));
    add("params", integer(layer.params));
    for (const [key, value] of Object.entries(layer)) {
      if (!KNOWN.has(key) && value !== null && value !== undefined) add(key.replace(/_/g, " "), costText(key, value));
    }
    const inside = (index) => index >= 0 && ancestors(index).includes(layer.index);
    for (const skip of trace.skips) {
      const out = inside(skip.source_index) && !inside(skip.target_index);
      const into = inside(skip.target_index) && !inside(skip.source_index);
      if (out) add("skip to", skip.target + " ", element("span", { class: "shape" }, shapeText(skip.shape)));
      if (into) add("skip from", skip.source + " ", element("span", { class: "shape" }, shapeText(skip.shape)));
    }
    details.append(list);
    for (const brk of trace.breaks) {
      if (!inside(brk.layer_index) && !inside(brk.leaf_index)) continue;
      const block = element("div", { class: "break" }, element("p", {}, element("span", { class: "label" }, brk.kind + " break: "), brk.message));
      if (brk.cause) block.append(element("p", {}, element("span", { class: "label" }, "cause: "), brk.cause));
      if (brk.fix) block.append(element("p", {}, element("span", { class: "label" }, "fix: "), brk.fix));
      details.append(block);
    }
    for (const warning of trace.warnings) {
      if (inside(warning.layer_index)) details.append(element("p", { class: "warning" }, "warning: " + warning.message));
    }
  }

  // --- events -------------------------------------------------------------------------
  diagram.addEventListener("click", (event) => {
    const g = event.target.closest("g[data-layer]");
    if (g) select(Number(g.dataset.index), false);
  });
  diagram.addEventListener("keydown", (event) => {
    const g = event.target.closest("g[data-layer]");
    if (g && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      select(Number(g.dataset.index), false);
    }
  });
  table.tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-index]");
    if (row) select(Number(row.dataset.index), true);
  });
  document.getElementById("causes").addEventListener("click", (event) => {
    const target = event.target.closest("[data-index]");
    if (target) select(Number(target.dataset.index), true);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") clearMarks();
  });

  // --- table: filter and depth --------------------------------------------------------
  const filter = document.getElementById("filter");
  const depth = document.getElementById("depth");
  const count = document.getElementById("row-count");
  function applyFilter() {
    const words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const limit = Number(depth.value);
    let shown = 0;
    for (const row of rows) {
      const text = (row.dataset.name + " " + row.dataset.type).toLowerCase();
      const visible = Number(row.dataset.depth) <= limit && words.every((word) => text.includes(word));
      row.hidden = !visible;
      shown += visible;
    }
    count.textContent = shown + " of " + rows.length + " calls shown";
  }
  filter.addEventListener("input", applyFilter);
  depth.addEventListener("change", applyFilter);
  applyFilter();

  // --- zoom ---------------------------------------------------------------------------
  // Until the reader zooms, the drawing shrinks to the panel's width (never grows past 1:1),
  // and follows the panel when it resizes: a notebook frame is laid out after this script runs.
  const svg = diagram.querySelector("svg");
  if (svg) {
    const natural = svg.viewBox.baseVal.width * 4 / 3; // Graphviz sizes in points; CSS pixels are 3/4 pt
    let scale = 1;
    let manual = false;
    const apply = () => { svg.style.width = (natural * scale) + "px"; };
    const fitting = () => Math.min(1.5, Math.max(0.2, (diagram.clientWidth - 20) / natural));
    const zoom = (id, change) => document.getElementById(id).addEventListener("click", () => {
      manual = true;
      scale = change(scale);
      apply();
    });
    zoom("zoom-in", (value) => value * 1.25);
    zoom("zoom-out", (value) => value / 1.25);
    zoom("zoom-fit", () => fitting());
    zoom("zoom-actual", () => 1);
    const automatic = () => {
      if (manual || diagram.clientWidth === 0) return;
      scale = Math.min(1, fitting());
      apply();
    };
    if (window.ResizeObserver) new ResizeObserver(automatic).observe(diagram);
    automatic();
  }
})();
