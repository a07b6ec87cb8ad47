// mechscope's page viewer: shading from data attributes, circuit-edge hover, attention patterns.
// Static (shipped in the package); pages pass it data only through data- attributes and
// <script type="application/json"> blocks, never as code.
(function () {
  "use strict";
  function shade(root) {
    root.querySelectorAll("[data-shade]").forEach(function (el) {
      var rgb = (el.getAttribute("data-rgb") || "43,108,176").split(",").map(Number);
      var alpha = Math.max(0, Math.min(1, Number(el.getAttribute("data-shade")) || 0));
      el.style.background = "rgba(" + rgb.join(",") + "," + alpha + ")";
    });
  }
  // keep the strongest share of edges: items carry data-abs; returns how many stay visible
  function strongest(items, share, show) {
    var sorted = items.map(function (x) { return x.abs; }).sort(function (a, b) { return b - a; });
    var n = Math.max(1, Math.ceil(share * sorted.length)), cut = sorted.length ? sorted[Math.min(n, sorted.length) - 1] : 0;
    var kept = 0;
    items.forEach(function (x) { var on = x.abs >= cut; show(x, on); if (on) kept += 1; });
    return kept;
  }
  function graph(root) {
    var info = root.querySelector(".graph-info");
    var slider = root.querySelector("input.graph-threshold"), count = root.querySelector(".graph-count");
    var groups = Array.prototype.map.call(root.querySelectorAll(".edge-group"), function (g) {
      return {el: g, abs: Number(g.getAttribute("data-abs")) || 0};
    });
    function filter() {
      var kept = strongest(groups, Number(slider.value) / 100, function (x, on) { x.el.style.display = on ? "" : "none"; });
      count.textContent = kept + " of " + groups.length + " edges";
    }
    if (slider) { slider.addEventListener("input", filter); filter(); }
    root.querySelectorAll(".edge").forEach(function (e) {
      var line = e.previousElementSibling;
      e.addEventListener("mouseenter", function () {
        info.textContent = e.getAttribute("data-label");
        line.setAttribute("stroke-opacity", "1");
      });
      e.addEventListener("mouseleave", function () { line.setAttribute("stroke-opacity", "0.7"); });
    });
  }
  function attention(root) {
    var d = JSON.parse(root.querySelector("script.attn-data").textContent), head = 0;
    var toks = root.querySelectorAll(".tok"), info = root.querySelector(".attn-info");
    function weights(i) {  // a dense row, or each query's strongest keys
      if (d.pattern) return d.pattern[head][i];
      var row = new Array(d.tokens.length).fill(0), keys = d.keys[head][i], w = d.weights[head][i];
      for (var m = 0; m < keys.length; m++) row[keys[m]] = w[m];
      return row;
    }
    function show(i) {
      var row = weights(i), best = 0;
      toks.forEach(function (t, j) {
        var w = j < row.length ? row[j] : 0;
        if (w > row[best]) best = j;
        t.style.background = "rgba(220,60,40," + w + ")";
        t.style.outline = j === i ? "1px solid #333" : "";
      });
      info.textContent = "head " + head + ": " + JSON.stringify(d.tokens[i]) + " attends most to " +
        JSON.stringify(d.tokens[best]) + " (" + row[best].toFixed(2) + ")";
    }
    toks.forEach(function (t) { t.addEventListener("mouseenter", function () { show(Number(t.getAttribute("data-i"))); }); });
    root.querySelectorAll("button.head").forEach(function (b) {
      b.addEventListener("click", function () {
        head = Number(b.getAttribute("data-head"));
        root.querySelector(".cur").textContent = head;
      });
    });
  }
  // attribution graphs: where each node goes. Columns are the prompt's positions, spread over the box's width;
  // rows are the layers that hold a node (tokens at the bottom, the output on top); the nodes of one cell share
  // its column's width, most influential first, wrapping into more lines when they do not fit one.
  var NODE = 12, GAP = 5, LINE = NODE + GAP, GUTTER = 56;
  function placeNodes(d, width) {
    var P = d.tokens.length, colW = Math.max(4 * LINE, (width - GUTTER) / P), perLine = Math.max(1, Math.floor(0.92 * colW / LINE));
    var cells = {}, lines = {};
    d.nodes.forEach(function (n) { var k = n.pos + ":" + n.layer; (cells[k] = cells[k] || []).push(n); });
    Object.keys(cells).forEach(function (k) {
      var layer = cells[k][0].layer;
      lines[layer] = Math.max(lines[layer] || 1, Math.ceil(cells[k].length / perLine));
    });
    var layers = Object.keys(lines).map(Number).sort(function (a, b) { return a - b; });
    var base = {}, y = 0;  // a row's lowest line, counted up from the tokens
    layers.forEach(function (l) { base[l] = y; y += lines[l] * LINE + 18; });
    var at = {};
    Object.keys(cells).forEach(function (k) {
      var ns = cells[k].slice().sort(function (a, b) { return b.influence - a.influence; });
      ns.forEach(function (n, i) {
        var line = Math.floor(i / perLine), inLine = Math.min(perLine, ns.length - line * perLine), j = i % perLine;
        at[n.id] = {x: GUTTER + (n.pos + 0.5) * colW + (j - (inLine - 1) / 2) * LINE, y: -(base[n.layer] + line * LINE)};
      });
    });
    var rows = layers.map(function (l) {
      return {layer: l, y: -(base[l] + (lines[l] - 1) * LINE / 2),
              label: l < 0 ? "tokens" : (l >= d.n_layers ? "output" : "L" + l)};
    });
    return {at: at, rows: rows, width: GUTTER + P * colW, height: y};
  }
  function nodeLabel(n) {
    var text = n.explanation ? n.explanation.explanation : (n.card && n.card.label) || n.label;
    return text.length > 40 ? text.slice(0, 39) + "…" : text;
  }
  function agraph(root) {
    var d = JSON.parse(root.querySelector("script.agraph-data").textContent);
    var info = root.querySelector(".agraph-info"), slider = root.querySelector("input.agraph-threshold");
    var count = root.querySelector(".agraph-count"), pinned = null, box = root.querySelector(".cy");
    if (typeof cytoscape !== "function") { info.textContent = "The graph viewer script did not load."; return; }
    var placed = placeNodes(d, box.clientWidth || 900);
    box.style.height = Math.round(Math.min(900, Math.max(360, placed.height + 60))) + "px";
    var els = [], top = 1e-12;
    placed.rows.forEach(function (r) {
      els.push({group: "nodes", data: {id: "row:" + r.layer, label: r.label}, position: {x: 10, y: r.y}, classes: "axis",
                selectable: false, grabbable: false});
    });
    d.supernodes.forEach(function (s) { els.push({group: "nodes", data: {id: "sn:" + s[0], label: s[0], kind: "super"}, classes: "super"}); });
    d.nodes.forEach(function (n) {
      var data = {id: n.id, label: n.kind === "feature" ? nodeLabel(n) : n.label, kind: n.kind};
      if (n.parent) data.parent = "sn:" + n.parent;
      els.push({group: "nodes", data: data, position: placed.at[n.id], classes: n.kind});
    });
    d.edges.forEach(function (e) { top = Math.max(top, Math.abs(e.w)); });
    d.edges.forEach(function (e, i) {
      els.push({group: "edges", data: {id: "e" + i, source: e.s, target: e.t, w: e.w,
        width: 0.4 + 5 * Math.abs(e.w) / top}, classes: e.w >= 0 ? "pos" : "neg"});
    });
    var byId = {};
    d.nodes.forEach(function (n) { byId[n.id] = n; });
    var cy = cytoscape({
      container: box, elements: els, layout: {name: "preset", fit: false}, wheelSensitivity: 0.3, minZoom: 0.05, maxZoom: 6,
      style: [
        {selector: "node", style: {"width": NODE, "height": NODE, "label": "data(label)", "font-size": 7, "text-valign": "top",
          "background-color": "#dd6b20", "color": "#333", "min-zoomed-font-size": 10, "text-max-width": 90, "text-wrap": "ellipsis"}},
        {selector: "node.axis", style: {"width": 1, "height": 1, "background-opacity": 0, "font-size": 9, "color": "#718096",
          "text-valign": "center", "text-halign": "right", "events": "no", "min-zoomed-font-size": 0}},
        {selector: "node.error", style: {"shape": "rectangle", "background-color": "#718096"}},
        {selector: "node.token", style: {"background-color": "#2f855a", "text-valign": "bottom", "font-size": 9, "min-zoomed-font-size": 0}},
        {selector: "node.target", style: {"background-color": "#6b46c1", "font-size": 9, "min-zoomed-font-size": 0,
          "text-rotation": -0.6, "text-halign": "right", "text-margin-x": -2}},
        {selector: "node.super", style: {"background-opacity": 0.08, "background-color": "#dd6b20", "border-width": 1,
          "border-color": "#dd6b20", "label": "data(label)", "text-valign": "top", "font-size": 9, "shape": "round-rectangle"}},
        {selector: "edge", style: {"width": "data(width)", "curve-style": "straight", "opacity": 0.55,
          "target-arrow-shape": "triangle", "arrow-scale": 0.5}},
        {selector: "edge.pos", style: {"line-color": "#2b6cb0", "target-arrow-color": "#2b6cb0"}},
        {selector: "edge.neg", style: {"line-color": "#c53030", "target-arrow-color": "#c53030"}},
        {selector: ".faded", style: {"opacity": 0.08}},
        {selector: ".lit", style: {"opacity": 1}}
      ]
    });
    root._cy = cy;
    function view() {  // the whole graph where it fits the box; else its top (the output) at full size
      if (placed.height + 60 <= box.clientHeight) cy.fit(cy.nodes(), 24);
      else { cy.zoom(Math.min(1, box.clientWidth / (placed.width + 40))); cy.pan({x: 12, y: 40 + cy.zoom() * placed.height}); }
    }
    view();
    root.querySelectorAll("button.agraph-fit").forEach(function (b) { b.addEventListener("click", function () { cy.fit(cy.nodes(), 24); }); });
    var figure = root.querySelector("img.agraph-figure");
    if (figure) figure.hidden = true;  // the static figure is the fallback where no script runs
    function describe(n) {
      var lines = [n.label + (n.kind === "feature" ? "  activation " + n.activation : "") + "  influence " + n.influence];
      if (n.explanation) {
        var sc = n.explanation.scores || {};
        lines.push("“" + n.explanation.explanation + "”" + Object.keys(sc).map(function (k) {
          return "  " + k + " " + sc[k].toFixed(2); }).join(""));
      }
      var c = n.card;
      if (c) {
        lines.push(c.label);
        (c.top || []).slice(0, 3).forEach(function (ex) {
          var toks = ex.tokens.slice();
          toks[ex.peak] = "[" + toks[ex.peak] + "]";
          lines.push("  " + ex.act.toFixed(2) + "  " + toks.join(""));
        });
        lines.push("  promotes " + (c.promoted || []).map(function (p) { return JSON.stringify(p[0]); }).join(" "));
      }
      return lines.join("\n");
    }
    function show(text) { if (!pinned) info.textContent = text; }
    cy.on("mouseover", "node", function (evt) {
      var n = byId[evt.target.id()];
      if (n) show(describe(n)); else show("supernode " + evt.target.data("label"));
    });
    cy.on("tap", "node", function (evt) {
      var node = evt.target, n = byId[node.id()];
      pinned = null;
      cy.elements().addClass("faded").removeClass("lit");
      var hood = node.closedNeighborhood().union(node.descendants()).union(node.descendants().closedNeighborhood());
      hood.removeClass("faded").addClass("lit");
      info.textContent = (n ? describe(n) : "supernode " + node.data("label")) + "\ninputs " + node.incomers("node").length +
        ", outputs " + node.outgoers("node").length;
      pinned = node.id();
    });
    cy.on("tap", "edge", function (evt) {
      var e = evt.target, key = e.data("source") + "→" + e.data("target"), a = d.attention[key];
      var lines = [e.data("source") + " → " + e.data("target") + ": " + Number(e.data("w")).toPrecision(3)];
      if (a) {
        lines.push("carried by heads (OV share of the edge):");
        a.heads.forEach(function (h) { lines.push("  " + h[0] + "  " + Number(h[1]).toPrecision(3)); });
        if (a.rest !== undefined) lines.push("  other paths  " + Number(a.rest).toPrecision(3));
        Object.keys(a.qk || {}).forEach(function (h) {
          var q = a.qk[h];
          lines.push(h + " attends there because (score " + Number(q.score).toPrecision(3) + "):");
          lines.push("  query side: " + q.query.map(function (x) { return x[0] + " " + Number(x[1]).toPrecision(2); }).join(", "));
          lines.push("  key side:   " + q.key.map(function (x) { return x[0] + " " + Number(x[1]).toPrecision(2); }).join(", "));
        });
      } else if (byId[e.data("source")] && byId[e.data("target")] && byId[e.data("source")].pos !== byId[e.data("target")].pos) {
        lines.push("(no attention explanation stored for this edge)");
      }
      pinned = key;
      info.textContent = lines.join("\n");
    });
    cy.on("tap", function (evt) {
      if (evt.target === cy) { pinned = null; cy.elements().removeClass("faded lit"); info.textContent = "Hover a node."; }
    });
    var items = cy.edges().map(function (e) { return {el: e, abs: Math.abs(e.data("w"))}; });
    function filter() {
      var kept = strongest(items, Number(slider.value) / 100, function (x, on) { x.el.style("display", on ? "element" : "none"); });
      count.textContent = kept + " of " + items.length + " edges" +
        (d.edges_total > items.length ? " (the strongest of " + d.edges_total + " kept by pruning)" : "");
    }
    slider.addEventListener("input", filter);
    filter();
  }
  // the library: compare is enabled with exactly two specimens ticked; a third tick drops the oldest
  function library(form) {
    var button = form.querySelector("button.compare-picked"), order = [];
    function update() { button.disabled = order.length !== 2; }
    form.querySelectorAll("input[name=pick]").forEach(function (box) {
      box.addEventListener("change", function () {
        order = order.filter(function (b) { return b !== box; });
        if (box.checked) order.push(box);
        if (order.length > 2) { order.shift().checked = false; }
        update();
      });
    });
    update();
  }
  function tellHeight() {  // inside a notebook's output frame: its height, for the cell to fit it
    if (window.parent === window) return;
    var send = function () {
      var body = document.body;  // its content's height (the document's is never below the frame's own)
      var bottom = body.getBoundingClientRect().bottom + parseFloat(getComputedStyle(body).marginBottom || "0");
      window.parent.postMessage({"mechscope-height": Math.ceil(bottom)}, "*");
    };
    send();
    window.addEventListener("load", send);
    if (window.ResizeObserver) new ResizeObserver(send).observe(document.body);
  }
  function start() {
    tellHeight();
    shade(document);
    document.querySelectorAll("form.library").forEach(library);
    document.querySelectorAll("div.graph").forEach(graph);
    document.querySelectorAll("section.attention").forEach(attention);
    document.querySelectorAll("section.agraph").forEach(agraph);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
