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
  function graph(root) {
    var info = root.querySelector(".graph-info");
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
    function show(i) {
      var row = d.pattern[head][i], best = 0;
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
  function start() {
    shade(document);
    document.querySelectorAll("form.library").forEach(library);
    document.querySelectorAll("div.graph").forEach(graph);
    document.querySelectorAll("section.attention").forEach(attention);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
