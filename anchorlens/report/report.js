/* anchorlens report: draws the page from the JSON embedded in #report-data.
 * No library, no network. The Python side (anchorlens/report/html.py) has already computed colour
 * ranges, graph edges and display-normalised matrices; this script only draws and handles hovering. */
(function () {
  "use strict";

  var D = JSON.parse(document.getElementById("report-data").textContent);
  var N = D.meta.n_sentences;
  var S = D.sentences;
  var METRIC_NAMES = Object.keys(D.metrics);
  var CAT_COLOR = {};
  D.categories.forEach(function (c) { CAT_COLOR[c.name] = c.color; });

  var state = { metric: D.default_metric, mode: D.default_metric ? "metric" : "category", focus: null };
  var redrawers = [];  // functions called when the metric or the focused sentence changes

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "–";
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return (Math.round(v * 1000) / 1000).toString();
  }
  // Ends of a colour scale; values beyond them are drawn in the end colour ("≤" / "≥" says so).
  function lowLabel(spec) { return (spec.clipped_low ? "≤ " : "") + fmt(spec.vmin); }
  function highLabel(spec) { return (spec.clipped_high ? "≥ " : "") + fmt(spec.vmax); }
  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }
  function catColor(i) { var c = S.category[i]; return c ? CAT_COLOR[c] : D.unlabelled_color; }
  function catName(i) { return S.category[i] || "unlabelled"; }
  function notComputed(container, what, how) {
    container.innerHTML = "";
    container.appendChild(el("div", { cls: "not-computed" }, [
      el("strong", { text: "Not computed. " }), document.createTextNode(what + (how ? " " + how : ""))
    ]));
  }

  // ------------------------------------------------------------------ colours

  function hexToRgb(hex) {
    var h = hex.replace("#", "");
    return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
  }
  function mix(a, b, t) { return [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * t); }); }
  function rgb(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }
  function ramp(stops, t) {  // stops: [[pos, [r,g,b]], ...] with pos ascending in [0, 1]
    t = Math.max(0, Math.min(1, t));
    for (var k = 1; k < stops.length; k++) {
      if (t <= stops[k][0]) {
        var a = stops[k - 1], b = stops[k];
        return mix(a[1], b[1], (t - a[0]) / (b[0] - a[0] || 1));
      }
    }
    return stops[stops.length - 1][1];
  }
  var VIRIDIS = [[0, [68, 1, 84]], [0.25, [59, 82, 139]], [0.5, [33, 145, 140]], [0.75, [94, 201, 98]], [1, [253, 231, 37]]];
  var RDBU = [[0, [33, 102, 172]], [0.25, [103, 169, 207]], [0.5, [247, 247, 247]], [0.75, [239, 138, 98]], [1, [178, 24, 43]]];
  // Sentence backgrounds stay light so that the text remains readable.
  var WHITE = [255, 255, 255], WARM = [232, 106, 51], COOL = [58, 128, 196];

  function heatColor(v, spec) {  // a heatmap cell
    if (v === null) return [243, 244, 246];
    if (spec.kind === "diverging") return ramp(RDBU, 0.5 + 0.5 * v / spec.vmax);
    return ramp(VIRIDIS, (v - spec.vmin) / (spec.vmax - spec.vmin));
  }
  function sentenceColor(v, spec) {  // a sentence background for a metric value
    if (v === null) return [238, 238, 238];
    if (spec.kind === "diverging") {
      var t = Math.min(1, Math.abs(v) / spec.vmax);
      return mix(WHITE, v < 0 ? COOL : WARM, 0.8 * t);
    }
    var s = Math.max(0, Math.min(1, (v - spec.vmin) / (spec.vmax - spec.vmin)));
    return mix(WHITE, WARM, 0.8 * s);
  }
  function gradientCss(kind, light) {
    var stops = [];
    for (var k = 0; k <= 10; k++) {
      var t = k / 10, c;
      if (light) c = kind === "diverging" ? (t < 0.5 ? mix(WHITE, COOL, 0.8 * (1 - 2 * t)) : mix(WHITE, WARM, 0.8 * (2 * t - 1))) : mix(WHITE, WARM, 0.8 * t);
      else c = ramp(kind === "diverging" ? RDBU : VIRIDIS, t);
      stops.push(rgb(c) + " " + (t * 100) + "%");
    }
    return "linear-gradient(to right, " + stops.join(", ") + ")";
  }

  // ------------------------------------------------------------------ tooltip

  var tip = document.getElementById("tooltip");
  function showTip(evt, content) {
    tip.innerHTML = "";
    tip.appendChild(content);
    tip.hidden = false;
    moveTip(evt);
  }
  function moveTip(evt) {
    if (tip.hidden) return;
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = evt.clientX + pad, y = evt.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, evt.clientX - w - pad);
    if (y + h > window.innerHeight - 4) y = Math.max(4, evt.clientY - h - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  function interval(spec, i) {  // " [low, high]" when the metric carries a confidence interval
    if (!spec.low || spec.low[i] === null || spec.high[i] === null) return "";
    return " [" + fmt(spec.low[i]) + ", " + fmt(spec.high[i]) + "]";
  }

  function sentenceTip(i) {
    var box = el("div");
    box.appendChild(el("div", { cls: "head" }, [
      el("span", { cls: "swatch", style: "background:" + catColor(i) }),
      document.createTextNode("Sentence " + i + " · " + catName(i))
    ]));
    box.appendChild(el("div", { cls: "text", text: clip(S.text[i], 320) }));
    var table = el("table");
    METRIC_NAMES.forEach(function (name) {
      var row = el("tr", name === state.metric ? { cls: "sel" } : null, [
        el("td", { text: name }), el("td", { cls: "v", text: fmt(D.metrics[name].values[i]) + interval(D.metrics[name], i) })
      ]);
      table.appendChild(row);
    });
    if (METRIC_NAMES.length) box.appendChild(table);
    Object.keys(D.labels).forEach(function (name) {
      if (D.labels[name][i]) box.appendChild(el("div", { cls: "sub", text: name + ": " + clip(D.labels[name][i], 200) }));
    });
    var t = S.tokens[i];
    box.appendChild(el("div", { cls: "sub", text: "tokens " + t[0] + "–" + t[1] + " (" + (t[1] - t[0]) + ")" }));
    return box;
  }

  function setFocus(i) {
    state.focus = i;
    redrawers.forEach(function (f) { f("focus"); });
  }
  function jumpTo(i) {
    var span = document.querySelector('.sentence[data-i="' + i + '"]');
    if (!span) return;
    span.scrollIntoView({ block: "center" });
    span.classList.remove("flash");
    void span.offsetWidth;  // restart the animation
    span.classList.add("flash");
  }

  // ------------------------------------------------------------------ header

  function renderSummary() {
    var m = D.meta, box = document.getElementById("summary");
    box.appendChild(el("h1", { text: m.title }));
    var meta = el("div", { cls: "meta" });
    [
      m.model_name ? "model: " + m.model_name : null,
      N + " sentences",
      m.n_tokens + " tokens (" + m.n_prompt_tokens + " in the prompt)",
      "split: " + m.style,
      METRIC_NAMES.length + " per-sentence metrics"
    ].forEach(function (t) { if (t) meta.appendChild(el("span", { text: t })); });
    box.appendChild(meta);
    if (m.problem) box.appendChild(el("div", { cls: "problem", text: m.problem }));
    if (m.answer) box.appendChild(el("p", { cls: "answer" }, [document.createTextNode("Answer: "), el("code", { text: m.answer })]));
    document.getElementById("footer").textContent =
      "Made by anchorlens " + m.version + ". Self-contained: works offline, loads nothing. All data is in report.json; figures as PNG files next to this page.";
  }

  function renderNotes() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-note]"), function (p) {
      var note = D.notes[p.getAttribute("data-note")];
      if (note) p.textContent = note;
    });
    if (D.notes.summary) document.getElementById("summary").appendChild(el("p", { cls: "note", text: D.notes.summary }));
  }

  // ------------------------------------------------------------------ controls and legends

  function renderControls() {
    var select = document.getElementById("metric-select");
    var mode = document.getElementById("colour-mode");
    METRIC_NAMES.forEach(function (name) { select.appendChild(el("option", { value: name, text: name })); });
    if (!METRIC_NAMES.length) {
      select.appendChild(el("option", { value: "", text: "(no metrics)" }));
      select.disabled = true;
      mode.value = "category";
      mode.disabled = true;
    } else {
      select.value = state.metric;
      mode.value = state.mode;
    }
    select.addEventListener("change", function () { state.metric = select.value; redrawers.forEach(function (f) { f("metric"); }); });
    mode.addEventListener("change", function () { state.mode = mode.value; redrawers.forEach(function (f) { f("metric"); }); });

    var legend = document.getElementById("category-legend");
    D.categories.forEach(function (c) {
      legend.appendChild(el("span", { cls: "item", "data-category": c.name }, [
        el("span", { cls: "swatch", style: "background:" + c.color }), document.createTextNode(c.name.replace(/_/g, " "))
      ]));
    });
    legend.appendChild(el("span", { cls: "item" }, [
      el("span", { cls: "swatch", style: "background:" + D.unlabelled_color }), document.createTextNode(D.has_categories ? "unlabelled" : "unlabelled (no categories given)")
    ]));

    var scale = document.getElementById("metric-scale");
    redrawers.push(function () {
      scale.innerHTML = "";
      if (state.mode !== "metric" || !state.metric) {
        scale.appendChild(el("span", { text: "Background: category; underline: category." }));
        return;
      }
      var spec = D.metrics[state.metric];
      scale.appendChild(el("span", { cls: "name", text: state.metric }));
      scale.appendChild(el("span", { text: lowLabel(spec) }));
      scale.appendChild(el("span", { cls: "bar", style: "background:" + gradientCss(spec.kind, true) }));
      scale.appendChild(el("span", { text: highLabel(spec) }));
      scale.appendChild(el("span", { text: "· underline: category" }));
    });
  }

  // ------------------------------------------------------------------ the chain of thought

  function renderCot() {
    var box = document.getElementById("cot-text");
    var spans = [];
    var frag = document.createDocumentFragment();
    for (var i = 0; i < N; i++) {
      if (i > 0) frag.appendChild(S.breaks[i] === 2 ? el("span", { cls: "para" }) : S.breaks[i] === 1 ? el("br") : document.createTextNode(" "));
      frag.appendChild(el("span", { cls: "idx", text: String(i) }));
      var span = el("span", { cls: "sentence", "data-i": String(i), tabindex: "0", text: S.text[i] });
      spans.push(span);
      frag.appendChild(span);
    }
    box.appendChild(frag);
    function over(evt) {
      var t = evt.target.closest && evt.target.closest(".sentence");
      if (!t) return;
      var i = +t.getAttribute("data-i");
      showTip(evt, sentenceTip(i));
      setFocus(i);
    }
    box.addEventListener("mouseover", over);
    box.addEventListener("focusin", function (evt) {
      var r = evt.target.getBoundingClientRect();
      over({ target: evt.target, clientX: r.left, clientY: r.bottom });
    });
    box.addEventListener("mousemove", moveTip);
    box.addEventListener("mouseleave", function () { hideTip(); setFocus(null); });
    box.addEventListener("focusout", hideTip);

    var lastFocus = null;
    redrawers.push(function (why) {
      if (why === "focus") {
        if (lastFocus !== null && spans[lastFocus]) spans[lastFocus].classList.remove("focus");
        if (state.focus !== null) spans[state.focus].classList.add("focus");
        lastFocus = state.focus;
        return;
      }
      var spec = state.metric ? D.metrics[state.metric] : null;
      for (var i = 0; i < N; i++) {
        var cat = catColor(i);
        if (state.mode === "metric" && spec) {
          spans[i].style.background = rgb(sentenceColor(spec.values[i], spec));
        } else {
          spans[i].style.background = rgb(mix(WHITE, hexToRgb(cat), S.category[i] ? 0.45 : 0.25));
        }
        spans[i].style.borderBottomColor = cat;
      }
    });
  }

  // ------------------------------------------------------------------ importance bars

  function renderBars() {
    var box = document.querySelector('[data-section="importance"]');
    if (!METRIC_NAMES.length) {
      notComputed(box, "No per-sentence metrics were given.", "Resampling (anchorlens analyze --rollouts N) or receiver heads provide them.");
      return;
    }
    box.appendChild(el("p", { cls: "explain", text: "One bar per sentence for the selected metric, coloured by category. Hover a bar for its sentence; click to find it in the text." }));
    var wrap = el("div", { cls: "bars-wrap" });
    var canvas = el("canvas", { role: "img", "aria-label": "importance per sentence" });
    wrap.appendChild(canvas);
    box.appendChild(wrap);
    var title = el("h3");
    var list = el("ol", { cls: "top-list" });
    box.appendChild(title);
    box.appendChild(list);
    var H = 200, M = { l: 52, r: 10, t: 10, b: 24 };
    var geom = null;

    function draw() {
      var name = state.metric, spec = D.metrics[name];
      var W = Math.max(320, wrap.clientWidth);
      var dpr = window.devicePixelRatio || 1;
      canvas.width = W * dpr; canvas.height = H * dpr;
      canvas.style.width = W + "px"; canvas.style.height = H + "px";
      var ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, W, H);
      var vals = spec.values;
      var lo = 0, hi = 0;
      vals.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      if (spec.low) spec.low.concat(spec.high).forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      if (hi === lo) hi = lo + 1;
      var plotW = W - M.l - M.r, plotH = H - M.t - M.b;
      var bw = plotW / N;
      var y = function (v) { return M.t + plotH * (hi - v) / (hi - lo); };
      geom = { bw: bw, left: M.l };
      // axes and grid
      ctx.strokeStyle = "#e3e6eb"; ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right";
      [hi, (hi + lo) / 2, lo].forEach(function (v) {
        ctx.beginPath(); ctx.moveTo(M.l, y(v) + 0.5); ctx.lineTo(W - M.r, y(v) + 0.5); ctx.stroke();
        ctx.fillText(fmt(v), M.l - 6, y(v) + 4);
      });
      for (var i = 0; i < N; i++) {
        var v = vals[i];
        if (v === null) continue;
        ctx.fillStyle = catColor(i);
        var top = Math.min(y(v), y(0)), h = Math.max(1, Math.abs(y(v) - y(0)));
        ctx.fillRect(M.l + i * bw + (bw > 3 ? 0.5 : 0), top, Math.max(1, bw - (bw > 3 ? 1 : 0)), h);
      }
      ctx.strokeStyle = "#444"; ctx.beginPath(); ctx.moveTo(M.l, y(0) + 0.5); ctx.lineTo(W - M.r, y(0) + 0.5); ctx.stroke();
      if (spec.low) {  // 95% intervals as whiskers
        ctx.strokeStyle = "#1f2a3c";
        for (var j = 0; j < N; j++) {
          if (spec.low[j] === null || spec.high[j] === null) continue;
          var cx = M.l + (j + 0.5) * bw;
          ctx.beginPath(); ctx.moveTo(cx + 0.5, y(spec.low[j])); ctx.lineTo(cx + 0.5, y(spec.high[j])); ctx.stroke();
        }
      }
      if (state.focus !== null) {
        ctx.strokeStyle = "#1f2a3c"; ctx.lineWidth = 2;
        ctx.strokeRect(M.l + state.focus * bw, M.t, Math.max(2, bw), plotH);
        ctx.lineWidth = 1;
      }
      // sentence index ticks
      ctx.fillStyle = "#6b7280"; ctx.textAlign = "center";
      var step = Math.max(1, Math.ceil(N / Math.max(1, Math.floor(plotW / 40))));
      for (var k = 0; k < N; k += step) ctx.fillText(String(k), M.l + (k + 0.5) * bw, H - 8);
    }
    function drawList() {
      var name = state.metric, vals = D.metrics[name].values;
      var order = [];
      for (var i = 0; i < N; i++) if (vals[i] !== null) order.push(i);
      order.sort(function (a, b) { return vals[b] - vals[a] || a - b; });
      title.textContent = "Highest " + name;
      list.innerHTML = "";
      order.slice(0, 10).forEach(function (i) {
        var li = el("li", { "data-i": String(i) }, [
          el("span", { cls: "val", text: fmt(vals[i]) }),
          el("span", { cls: "swatch", style: "background:" + catColor(i) }),
          el("span", { cls: "txt", text: "#" + i + " " + S.text[i] })
        ]);
        li.addEventListener("click", function () { jumpTo(i); });
        list.appendChild(li);
      });
    }
    function index(evt) {
      var r = canvas.getBoundingClientRect();
      var i = Math.floor((evt.clientX - r.left - geom.left) / geom.bw);
      return i >= 0 && i < N ? i : null;
    }
    canvas.addEventListener("mousemove", function (evt) {
      var i = index(evt);
      if (i === null) { hideTip(); return; }
      if (state.focus !== i) { showTip(evt, sentenceTip(i)); setFocus(i); } else moveTip(evt);
    });
    canvas.addEventListener("mouseleave", function () { hideTip(); setFocus(null); });
    canvas.addEventListener("click", function (evt) { var i = index(evt); if (i !== null) jumpTo(i); });
    redrawers.push(function (why) { if (state.metric) { draw(); if (why !== "focus") drawList(); } });
    window.addEventListener("resize", function () { if (state.metric) draw(); });
  }

  // ------------------------------------------------------------------ sentence graph

  function renderGraph() {
    var box = document.querySelector('[data-section="graph"]');
    var G = D.graph;
    if (!G) {
      notComputed(box, "The sentence graph needs a suppression matrix or a counterfactual matrix; neither was given.", "");
      return;
    }
    var kinds = [
      { key: "suppression", cls: "supp", color: "var(--supp)", side: -1,
        label: "suppression (above): masking sentence j changes sentence i's next-token predictions (log KL above its row mean)" },
      { key: "counterfactual", cls: "cf", color: "var(--cf)", side: 1,
        label: "counterfactual (below): resampling sentence i changes whether sentence j appears" }
    ];
    var controls = el("div", { cls: "graph-controls" });
    var slider = el("input", { type: "range", min: "0", value: "0", "aria-label": "edges per kind" });
    var count = el("span");
    controls.appendChild(el("label", null, [document.createTextNode("Strongest edges per kind: "), slider, document.createTextNode(" "), count]));
    kinds.forEach(function (k) {
      var has = G[k.key] !== null;
      controls.appendChild(el("span", null, [
        el("span", { cls: "key-line", style: "border-color:" + k.color + (has ? "" : ";opacity:.3") }),
        document.createTextNode(has ? k.label : k.key + ": not computed")
      ]));
    });
    box.appendChild(controls);
    box.appendChild(el("p", { cls: "explain", text: "Nodes are sentences in order, coloured by category and sized by the selected metric. Arcs run from the earlier sentence to the later one; hover a node to see its edges." }));
    var maxEdges = Math.max(G.suppression ? G.suppression.length : 0, G.counterfactual ? G.counterfactual.length : 0);
    slider.max = String(maxEdges);
    slider.value = String(Math.min(G.default_edges, maxEdges));

    var scroll = el("div", { cls: "graph-scroll" });
    box.appendChild(scroll);
    var root = svg("svg", { role: "img", "aria-label": "sentence graph" });
    scroll.appendChild(root);
    var H = 380, AX = H / 2, PAD = 16;
    var edgeLayer = svg("g"), nodeLayer = svg("g"), labelLayer = svg("g");
    root.appendChild(edgeLayer); root.appendChild(svg("line", { "class": "axis" })); root.appendChild(nodeLayer); root.appendChild(labelLayer);
    var nodes = [], edgesBy = [], x = [];

    function layout() {
      var W = Math.max(scroll.clientWidth || 900, N * 7 + 2 * PAD);
      root.setAttribute("width", W); root.setAttribute("height", H); root.setAttribute("viewBox", "0 0 " + W + " " + H);
      x = [];
      for (var i = 0; i < N; i++) x.push(N === 1 ? W / 2 : PAD + i * (W - 2 * PAD) / (N - 1));
      var axis = root.querySelector("line");
      axis.setAttribute("class", "axis");
      axis.setAttribute("x1", PAD); axis.setAttribute("x2", W - PAD); axis.setAttribute("y1", AX); axis.setAttribute("y2", AX);
      labelLayer.innerHTML = "";
      var step = Math.max(1, Math.ceil(N / Math.floor(W / 45)));
      for (var k = 0; k < N; k += step) {
        var t = svg("text", { x: x[k], y: H - 4, "text-anchor": "middle" });
        t.textContent = String(k);
        labelLayer.appendChild(t);
      }
    }
    function drawEdges() {
      edgeLayer.innerHTML = "";
      edgesBy = [];
      for (var i = 0; i < N; i++) edgesBy.push([]);
      var shown = +slider.value;
      count.textContent = String(shown);
      kinds.forEach(function (k) {
        var list = G[k.key];
        if (!list) return;
        var top = list.slice(0, shown);
        if (!top.length) return;
        var wmax = top[0][2], wmin = top[top.length - 1][2];
        top.forEach(function (e) {
          var a = e[0], b = e[1], r = (x[b] - x[a]) / 2;
          var ry = Math.min(r, AX - 12);
          var t = wmax > wmin ? (e[2] - wmin) / (wmax - wmin) : 1;
          var path = svg("path", {
            "class": "edge " + k.cls,
            d: "M" + x[a] + "," + AX + " A" + r + "," + ry + " 0 0 " + (k.side < 0 ? 1 : 0) + " " + x[b] + "," + AX,
            "stroke-width": (0.8 + 2.6 * t).toFixed(2),
            opacity: (0.3 + 0.5 * t).toFixed(2),
            "data-from": a, "data-to": b
          });
          edgeLayer.appendChild(path);
          edgesBy[a].push(path); edgesBy[b].push(path);
        });
      });
    }
    function drawNodes() {
      nodeLayer.innerHTML = "";
      nodes = [];
      var spec = state.metric ? D.metrics[state.metric] : null;
      var top = spec ? Math.max(Math.abs(spec.vmin), Math.abs(spec.vmax)) || 1 : 1;
      for (var i = 0; i < N; i++) {
        var v = spec ? spec.values[i] : null;
        var size = v === null ? 3 : 3 + 5 * Math.min(1, Math.abs(v) / top);
        var c = svg("circle", { "class": "node", cx: x[i], cy: AX, r: size.toFixed(2), fill: catColor(i), "data-i": i });
        nodeLayer.appendChild(c);
        nodes.push(c);
      }
    }
    nodeLayer.addEventListener("mouseover", function (evt) {
      var t = evt.target;
      if (!t.hasAttribute || !t.hasAttribute("data-i")) return;
      var i = +t.getAttribute("data-i");
      showTip(evt, sentenceTip(i));
      setFocus(i);
    });
    nodeLayer.addEventListener("mousemove", moveTip);
    nodeLayer.addEventListener("mouseout", function () { hideTip(); setFocus(null); });
    nodeLayer.addEventListener("click", function (evt) {
      var t = evt.target;
      if (t.hasAttribute && t.hasAttribute("data-i")) jumpTo(+t.getAttribute("data-i"));
    });
    slider.addEventListener("input", drawEdges);
    var lastFocus = null;
    redrawers.push(function (why) {
      if (why !== "focus") { drawNodes(); return; }
      if (lastFocus !== null) {
        if (nodes[lastFocus]) nodes[lastFocus].classList.remove("focus");
        (edgesBy[lastFocus] || []).forEach(function (p) { p.classList.remove("on"); });
      }
      root.classList.toggle("dim", state.focus !== null && (edgesBy[state.focus] || []).length > 0);
      if (state.focus !== null) {
        nodes[state.focus].classList.add("focus");
        edgesBy[state.focus].forEach(function (p) { p.classList.add("on"); });
      }
      lastFocus = state.focus;
    });
    layout();
    drawEdges();
    drawNodes();
    window.addEventListener("resize", function () { layout(); drawEdges(); drawNodes(); });
  }

  // ------------------------------------------------------------------ attribution graph

  var ATTR_COLOR = { feature: "#e08a1e", error: "#8d96a3", token: "#4c9a52", logit: "#7b4ea3" };
  var ATTR_KIND = { feature: "transcoder feature", error: "MLP reconstruction error", token: "token embedding", logit: "logit" };

  function attributionTip(n) {
    var box = el("div");
    var title = n.kind === "logit" ? n.label : n.kind === "feature" ? "L" + n.layer + " feature " + n.feature
      : n.kind === "error" ? "error L" + n.layer : "token";
    box.appendChild(el("div", { cls: "head" }, [
      el("span", { cls: "swatch", style: "background:" + ATTR_COLOR[n.kind] }), document.createTextNode(title)
    ]));
    var table = el("table");
    var rows = [["kind", ATTR_KIND[n.kind] || n.kind], ["position", n.pos], ["token", JSON.stringify(n.token)]];
    if (n.layer !== undefined) rows.push(["layer", n.layer]);
    if (n.feature !== undefined) rows.push(["feature", n.feature]);
    if (n.activation !== undefined) rows.push(["activation", fmt(n.activation)]);
    if (n.probability !== undefined) rows.push(["probability", fmt(n.probability)]);
    if (n.influence !== undefined) rows.push(["cumulative influence", fmt(n.influence)]);
    rows.push(["node id", n.id]);
    rows.forEach(function (r) {
      table.appendChild(el("tr", null, [el("td", { text: r[0] }), el("td", { cls: "v", text: String(r[1]) })]));
    });
    box.appendChild(table);
    return box;
  }

  function renderAttribution() {
    var box = document.querySelector('[data-section="attribution"]');
    var G = D.attribution;
    if (!G) {
      notComputed(box, "No attribution graph was given.", "It needs transcoders (anchorlens analyze --transcoders PATH).");
      return;
    }
    box.appendChild(el("p", { cls: "explain", text:
      "The pruned attribution graph of the prediction after " + JSON.stringify(clip(G.prompt, 160)) +
      ": token embeddings at the bottom, each layer's transcoder features (orange) and MLP errors (grey) by layer " +
      "and position, the logits on top. Edges: direct effects, blue positive, red negative, width by |weight| (" +
      G.edges.length + " strongest of " + G.n_links + "). Hover a node for its feature and token." }));
    var scroll = el("div", { cls: "attr-scroll" });
    box.appendChild(scroll);
    var root = svg("svg", { role: "img", "aria-label": "attribution graph" });
    scroll.appendChild(root);
    var M = { l: 52, r: 16, t: 96, b: 64 };  // room above for the logits' slanted labels
    var rowH = Math.max(12, Math.min(64, 640 / G.rows));
    var W = Math.min(6000, Math.max(scroll.clientWidth || 900, G.slots * 11 + M.l + M.r));  // ~11 px per node slot
    var H = M.t + M.b + rowH * (G.rows - 1);
    root.setAttribute("width", W); root.setAttribute("height", H); root.setAttribute("viewBox", "0 0 " + W + " " + H);
    var pw = W - M.l - M.r;
    function px(n) { return M.l + n.x * pw; }
    function py(n) { return M.t + (G.rows - 1 - n.row) * rowH; }
    var grid = svg("g"), edgeLayer = svg("g"), nodeLayer = svg("g"), labelLayer = svg("g");
    [grid, edgeLayer, nodeLayer, labelLayer].forEach(function (g) { root.appendChild(g); });
    for (var r = 0; r < G.rows; r++) {
      var y = M.t + (G.rows - 1 - r) * rowH;
      grid.appendChild(svg("line", { "class": "rowline", x1: M.l, x2: W - M.r, y1: y, y2: y }));
      var name = r === 0 ? "emb" : r === G.rows - 1 ? "logits" : "L" + (r - 1);
      var step = Math.max(1, Math.ceil(14 / rowH));
      if (r === 0 || r === G.rows - 1 || (r - 1) % step === 0) {
        var t = svg("text", { x: M.l - 6, y: y + 3.5, "text-anchor": "end" }); t.textContent = name; grid.appendChild(t);
      }
    }
    G.tokens.forEach(function (tok, p) {
      var x = M.l + 0.5 * (G.column_edges[p] + G.column_edges[p + 1]) * pw, y = H - M.b + 14;
      var t = svg("text", { x: x, y: y, "text-anchor": "end", transform: "rotate(-40 " + x + " " + y + ")" });
      t.textContent = clip(JSON.stringify(tok).slice(1, -1), 14);
      grid.appendChild(t);
    });
    var edgesBy = G.nodes.map(function () { return []; });
    G.edges.forEach(function (e) {
      var s = G.nodes[e[0]], t = G.nodes[e[1]], w = e[2], a = Math.abs(w) / G.max_weight;
      var line = svg("line", { "class": "aedge", x1: px(s).toFixed(1), y1: py(s).toFixed(1), x2: px(t).toFixed(1),
        y2: py(t).toFixed(1), stroke: w >= 0 ? "#2b6cb0" : "#c53030", "stroke-width": (0.4 + 3.2 * a).toFixed(2),
        "stroke-opacity": (0.15 + 0.6 * a).toFixed(2), "data-weight": w });
      edgeLayer.appendChild(line);
      edgesBy[e[0]].push(line); edgesBy[e[1]].push(line);
    });
    var circles = [];
    G.nodes.forEach(function (n, i) {
      var x = px(n), y = py(n), shape;
      if (n.kind === "feature" || n.kind === "logit") {
        var rad = n.kind === "logit" ? 4 + 6 * Math.sqrt(n.probability || 0) : 4;
        shape = svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: rad.toFixed(2) });
      } else {
        shape = svg("rect", { x: (x - 4).toFixed(1), y: (y - 4).toFixed(1), width: 8, height: 8 });
      }
      shape.setAttribute("class", "anode " + n.kind);
      shape.setAttribute("fill", ATTR_COLOR[n.kind]);
      shape.setAttribute("data-n", i);
      nodeLayer.appendChild(shape);
      circles.push(shape);
      if (n.kind === "logit") {
        var t = svg("text", { x: x + 3, y: y - 12, "text-anchor": "start", transform: "rotate(-55 " + (x + 3) + " " + (y - 12) + ")" });
        t.textContent = clip(n.label.replace(/^Output /, ""), 22);
        labelLayer.appendChild(t);
      }
    });
    var focused = null;
    function focus(i) {
      if (focused !== null) {
        circles[focused].classList.remove("focus");
        edgesBy[focused].forEach(function (l) { l.classList.remove("on"); });
      }
      focused = i;
      root.classList.toggle("dim", i !== null && edgesBy[i].length > 0);
      if (i !== null) {
        circles[i].classList.add("focus");
        edgesBy[i].forEach(function (l) { l.classList.add("on"); });
      }
    }
    nodeLayer.addEventListener("mouseover", function (evt) {
      var t = evt.target;
      if (!t.hasAttribute || !t.hasAttribute("data-n")) return;
      var i = +t.getAttribute("data-n");
      showTip(evt, attributionTip(G.nodes[i]));
      focus(i);
    });
    nodeLayer.addEventListener("mousemove", moveTip);
    nodeLayer.addEventListener("mouseout", function () { hideTip(); focus(null); });
    var legend = el("div", { cls: "legend" });
    Object.keys(ATTR_COLOR).forEach(function (k) {
      legend.appendChild(el("span", { cls: "item" }, [
        el("span", { cls: "swatch", style: "background:" + ATTR_COLOR[k] }), document.createTextNode(ATTR_KIND[k])
      ]));
    });
    box.appendChild(legend);
  }

  // ------------------------------------------------------------------ heatmaps

  var HEATMAP_TEXT = {
    receiver: ["Receiver heads", "No receiver-head analysis was given.", "It needs one forward pass with attention patterns."],
    head_attention: ["Attention of the top receiver head", "No sentence attention matrix was given.", ""],
    suppression: ["Attention suppression matrix", "No suppression matrix was given.", "It needs one forward pass per sentence."],
    counterfactual: ["Counterfactual matrix", "No counterfactual sentence-to-sentence matrix was given.", "It needs resampling rollouts."],
    flow: ["Information flow between sentences", "No information-flow matrix was given.", "It needs one forward pass (information flow routes)."]
  };

  function renderHeatmap(key) {
    var box = document.querySelector('[data-section="' + key + '"]');
    var spec = D.heatmaps[key];
    var text = HEATMAP_TEXT[key];
    if (!spec) {
      box.appendChild(el("h3", { text: text[0] }));
      var holder = el("div");
      box.appendChild(holder);
      notComputed(holder, text[1], text[2]);
      return;
    }
    box.classList.add("heatmap");
    box.appendChild(el("h3", { text: spec.title }));
    var rows = spec.values.length, cols = rows ? spec.values[0].length : 0;
    var M = { l: 46, r: 8, t: 6, b: 34 };
    var maxW = Math.min(520, Math.max(240, box.clientWidth - M.l - M.r));
    var maxH = 460;
    var cell = Math.min(spec.sentence_axes ? maxW / cols : 26, maxW / cols, maxH / rows);
    if (!spec.sentence_axes) cell = Math.max(6, Math.floor(cell));
    var pw = cell * cols, ph = cell * rows;
    var W = Math.ceil(pw + M.l + M.r), H = Math.ceil(ph + M.t + M.b);
    var canvas = el("canvas", { role: "img", "aria-label": spec.title, "data-rows": rows, "data-cols": cols });
    var dpr = window.devicePixelRatio || 1;
    canvas.width = W * dpr; canvas.height = H * dpr;
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    box.appendChild(canvas);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    // One pixel per cell off screen, then scaled: fast for 300 x 300 and sharp at any size.
    var off = document.createElement("canvas");
    off.width = cols; off.height = rows;
    var octx = off.getContext("2d");
    var img = octx.createImageData(cols, rows);
    for (var r = 0; r < rows; r++) for (var c = 0; c < cols; c++) {
      var color = heatColor(spec.values[r][c], spec), p = 4 * (r * cols + c);
      img.data[p] = color[0]; img.data[p + 1] = color[1]; img.data[p + 2] = color[2]; img.data[p + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = cell < 1;
    ctx.drawImage(off, M.l, M.t, pw, ph);
    ctx.strokeStyle = "#9aa3af"; ctx.strokeRect(M.l - 0.5, M.t - 0.5, pw + 1, ph + 1);
    (spec.highlight || []).forEach(function (h, rank) {
      ctx.strokeStyle = rank === 0 ? "#ff2d55" : "#ffffff";
      ctx.lineWidth = rank === 0 ? 2.5 : 1.5;
      ctx.strokeRect(M.l + h[1] * cell + 1, M.t + h[0] * cell + 1, cell - 2, cell - 2);
    });
    ctx.lineWidth = 1;
    // axis ticks and labels
    ctx.fillStyle = "#6b7280"; ctx.font = "10.5px system-ui, sans-serif";
    ctx.textAlign = "center";
    var cstep = Math.max(1, Math.ceil(cols / Math.max(1, Math.floor(pw / 34))));
    for (var k = 0; k < cols; k += cstep) ctx.fillText(String(k), M.l + (k + 0.5) * cell, M.t + ph + 12);
    ctx.fillText(spec.x_label, M.l + pw / 2, M.t + ph + 27);
    ctx.textAlign = "right";
    var rstep = Math.max(1, Math.ceil(rows / Math.max(1, Math.floor(ph / 18))));
    for (k = 0; k < rows; k += rstep) ctx.fillText(String(k), M.l - 5, M.t + (k + 0.5) * cell + 3.5);
    ctx.save(); ctx.translate(11, M.t + ph / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText(spec.y_label, 0, 0); ctx.restore();

    box.appendChild(el("div", { cls: "cbar" }, [
      el("span", { text: spec.value_label + ": " + lowLabel(spec) }),
      el("span", { cls: "bar", style: "background:" + gradientCss(spec.kind, false) }),
      el("span", { text: highLabel(spec) })
    ]));
    if (key === "receiver" && D.receiver_heads.length) {
      box.appendChild(el("div", { cls: "heads", text: "Receiver heads (outlined; red = top): " +
        D.receiver_heads.map(function (h) { return "L" + h[0] + "H" + h[1]; }).join(", ") }));
    }
    canvas.addEventListener("mousemove", function (evt) {
      var rect = canvas.getBoundingClientRect();
      var c = Math.floor((evt.clientX - rect.left - M.l) / cell), r = Math.floor((evt.clientY - rect.top - M.t) / cell);
      if (r < 0 || c < 0 || r >= rows || c >= cols) { hideTip(); return; }
      var content = el("div");
      content.appendChild(el("div", { cls: "head", text: spec.row_prefix + r + " × " + spec.col_prefix + c }));
      content.appendChild(el("div", { text: spec.value_label + ": " + fmt(spec.values[r][c]) }));
      if (spec.sentence_axes) {
        content.appendChild(el("div", { cls: "sub", text: spec.y_label + " #" + r + ": " + clip(S.text[r], 120) }));
        content.appendChild(el("div", { cls: "sub", text: spec.x_label + " #" + c + ": " + clip(S.text[c], 120) }));
      }
      showTip(evt, content);
    });
    canvas.addEventListener("mouseleave", hideTip);
  }

  // ------------------------------------------------------------------ go

  renderSummary();
  renderControls();
  renderCot();
  renderBars();
  renderGraph();
  ["receiver", "head_attention", "suppression", "counterfactual", "flow"].forEach(renderHeatmap);
  renderAttribution();
  renderNotes();
  redrawers.forEach(function (f) { f("metric"); });
  document.body.setAttribute("data-rendered", "true");
})();
