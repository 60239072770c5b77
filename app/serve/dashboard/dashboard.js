// tailcut dashboard: polls dashboard/stats every second and draws it. No library, no build step.
// Every figure shown is an element with data-stat="PATH" whose data-value holds the raw value
// (its text is the same value), and #dash carries the snapshot's sequence number in data-seq,
// so a test can compare the page with the JSON. Charts are SVG polylines (a lone point is a
// circle); each chart's data-points counts the points drawn.
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var W = 600, H = 220, PAD_L = 46, PAD_R = 8, PAD_T = 8, PAD_B = 20;
  var dash = document.getElementById("dash");
  var statusEl = document.getElementById("status");

  function last(arr) { return arr.length ? arr[arr.length - 1] : 0; }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A figure marked data-format="ms3" (the latency percentiles) is shown with three decimals,
  // the stats JSON's precision (microseconds), so every latency reads alike: parsed JSON numbers
  // lose their trailing zeros (409.600 arrives as 409.6).
  function show(e, v) {
    var s = v === null || v === undefined ? "null" : String(v);
    if (s !== "null" && typeof v === "number" && e.getAttribute("data-format") === "ms3")
      s = v.toFixed(3);
    e.setAttribute("data-value", s);
    e.textContent = s === "null" ? "\u2013" : s;
  }

  // The values the static data-stat elements name.
  function lookup(view, path) {
    var v = view;
    var parts = path.split(".");
    for (var i = 0; i < parts.length; i++) {
      if (v === null || v === undefined) return null;
      v = v[parts[i]];
    }
    return v;
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) { tr.appendChild(c); });
    return tr;
  }

  function cell(path, v) {
    var td = el("td", {"data-stat": path, "data-dyn": "1"});
    show(td, v);
    return td;
  }

  function fillTables(s) {
    var n = s.window_s;
    var body = document.getElementById("requests-body");
    body.textContent = "";
    var hist = {};
    s.history.requests.forEach(function (r) { hist[r.endpoint + "." + r.status] = r.per_second; });
    s.window.requests.forEach(function (r) {
      var key = r.endpoint + "." + r.status;
      var tdStatus = el("td", {}, String(r.status));
      if (r.status === "other" || r.status >= 400) tdStatus.className = "bad";
      body.appendChild(row([el("td", {}, r.endpoint), tdStatus,
                            cell("last.requests." + key, hist[key][n - 1]),
                            cell("window.requests." + key + ".count", r.count)]));
    });
    if (!s.window.requests.length)
      body.appendChild(row([el("td", {colspan: "4"}, "no requests in the last 5 minutes")]));

    body = document.getElementById("attempts-body");
    body.textContent = "";
    Object.keys(s.window.attempts).forEach(function (k) {
      body.appendChild(row([el("td", {}, k.replace(/_/g, " ")),
                            cell("last.attempts." + k, last(s.history.attempts[k])),
                            cell("window.attempts." + k, s.window.attempts[k])]));
    });
    body = document.getElementById("hedges-body");
    body.textContent = "";
    Object.keys(s.window.hedges).forEach(function (k) {
      body.appendChild(row([el("td", {}, k.replace(/_/g, " ")),
                            cell("last.hedges." + k, last(s.history.hedges[k])),
                            cell("window.hedges." + k, s.window.hedges[k])]));
    });
  }

  // Every replica of both sets: its state, attempts/s and success ratio over the last second,
  // its average latency (the one its choice reads) and its attempts in flight; and above the
  // table, each set's count of replicas by state, its panics and failed DNS resolutions.
  function fillReplicas(s) {
    var body = document.getElementById("replicas-body");
    body.textContent = "";
    s.replicas.forEach(function (r, i) {
      var p = "replicas." + i + ".";
      var label = cell(p + "replica", r.replica), state = cell(p + "state", r.state);
      label.className = "l";
      state.className = r.state === "available" ? "l" : "l bad";
      body.appendChild(row([cell(p + "set", r.set), label, state,
                            cell(p + "attempts_per_s", r.attempts_per_s),
                            cell(p + "success_ratio", r.success_ratio),
                            cell(p + "average_ms", r.average_ms),
                            cell(p + "in_flight", r.in_flight)]));
    });
    if (!s.replicas.length)
      body.appendChild(row([el("td", {colspan: "7"}, "no replicas")]));
    var sets = document.getElementById("replica-sets");
    sets.textContent = "";
    var counts = ["available", "ejected", "probing", "panics", "dns_failures"];
    Object.keys(s.replica_sets).forEach(function (name) {
      var c = s.replica_sets[name];
      if (!c) return; // no such upstream (metadata lookups off)
      sets.appendChild(document.createTextNode(name + ": "));
      counts.forEach(function (k, j) {
        var sp = el("span", {"data-stat": "replica_sets." + name + "." + k, "data-dyn": "1"});
        show(sp, c[k]);
        sets.appendChild(sp);
        sets.appendChild(document.createTextNode(" " + k.replace(/_/g, " ") +
                                                 (j + 1 < counts.length ? ", " : ". ")));
      });
    });
  }

  function fillBudget(s) {
    var b = s.now.budget, big = document.getElementById("budget");
    var sub = document.getElementById("budget-sub");
    big.textContent = "";
    sub.textContent = "";
    if (!b) {
      big.textContent = "off";
      return;
    }
    var used = el("span", {"data-stat": "now.budget.extra_attempts", "data-dyn": "1"});
    var allowed = el("span", {"data-stat": "now.budget.allowed", "data-dyn": "1"});
    var pct = el("span", {"data-stat": "now.budget.percent", "data-dyn": "1"});
    var denied = el("span", {"data-stat": "now.budget.denied", "data-dyn": "1"});
    var smart = el("span", {"data-stat": "now.budget.smart_requests", "data-dyn": "1"});
    show(used, b.extra_attempts);
    show(allowed, b.allowed);
    show(pct, b.percent);
    show(denied, b.denied);
    show(smart, b.smart_requests);
    big.appendChild(used);
    big.appendChild(document.createTextNode(" / "));
    big.appendChild(allowed);
    sub.appendChild(document.createTextNode("extras allowed last s ("));
    sub.appendChild(pct);
    sub.appendChild(document.createTextNode("% of "));
    sub.appendChild(smart);
    sub.appendChild(document.createTextNode(" smart + 1); "));
    sub.appendChild(denied);
    sub.appendChild(document.createTextNode(" denied"));
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++)
      if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtTick(v) {
    if (v >= 1000) return (v / 1000) + "k";
    return String(Math.round(v * 100) / 100);
  }

  // series: [{cls, values}], values oldest first, null = no value (a gap in the line).
  function chart(id, series, n) {
    var root = document.getElementById(id);
    while (root.firstChild) root.removeChild(root.firstChild);
    var max = 0;
    series.forEach(function (s) {
      s.values.forEach(function (v) { if (v !== null && v > max) max = v; });
    });
    max = niceMax(max);
    var pw = W - PAD_L - PAD_R, ph = H - PAD_T - PAD_B;
    for (var g = 0; g <= 4; g++) {
      var y = PAD_T + ph - ph * g / 4;
      root.appendChild(svg("line", {x1: PAD_L, x2: W - PAD_R, y1: y, y2: y, "class": "grid"}));
      root.appendChild(svg("text", {x: PAD_L - 4, y: y + 4, "text-anchor": "end", "class": "axis"},
                           fmtTick(max * g / 4)));
    }
    for (var m = 0; m <= 5; m++) {
      var x = PAD_L + pw * m / 5;
      root.appendChild(svg("text", {x: x, y: H - 5, "text-anchor": m === 0 ? "start" : m === 5 ? "end" : "middle",
                                    "class": "axis"}, m === 5 ? "now" : "-" + (5 - m) + " min"));
    }
    var points = 0;
    series.forEach(function (s) {
      var run = [];
      function flush() {
        if (run.length === 1) { // a lone second: a dot, as a line needs two
          var xy = run[0].split(",");
          root.appendChild(svg("circle", {cx: xy[0], cy: xy[1], r: 2.5, "class": s.cls + " dot",
                                          "data-series": s.name}));
          points += 1;
        } else if (run.length) {
          root.appendChild(svg("polyline", {points: run.join(" "), "class": s.cls,
                                            "data-series": s.name}));
          points += run.length;
        }
        run = [];
      }
      s.values.forEach(function (v, i) {
        if (v === null) { flush(); return; }
        var px = PAD_L + (n > 1 ? pw * i / (n - 1) : 0);
        var py = PAD_T + ph - ph * v / max;
        run.push(px.toFixed(1) + "," + py.toFixed(1));
      });
      flush();
    });
    root.setAttribute("data-points", String(points));
  }

  function keys(id, names) {
    var k = document.getElementById(id);
    k.textContent = "";
    names.forEach(function (nm, i) {
      k.appendChild(el("i", {"class": "k s" + (i % 9)}, nm));
      k.appendChild(document.createTextNode(" "));
    });
  }

  function drawCharts(s) {
    var n = s.window_s, h = s.history;
    chart("chart-latency", ["p50", "p90", "p99", "p999"].map(function (q) {
      return {name: q, cls: q, values: h.latency_ms[q]};
    }), n);
    var byEp = {}, order = [];
    h.requests.forEach(function (r) {
      if (!byEp[r.endpoint]) { byEp[r.endpoint] = new Array(n).fill(0); order.push(r.endpoint); }
      r.per_second.forEach(function (v, i) { byEp[r.endpoint][i] += v; });
    });
    keys("req-keys", order);
    chart("chart-requests", order.map(function (ep, i) {
      return {name: ep, cls: "s" + (i % 9), values: byEp[ep]};
    }), n);
    chart("chart-hedges", ["fired", "won", "denied"].map(function (k) {
      return {name: k, cls: k, values: h.hedges[k]};
    }), n);
    var outcomes = Object.keys(h.attempts).filter(function (k) { return s.window.attempts[k] > 0; });
    keys("att-keys", outcomes);
    chart("chart-attempts", outcomes.map(function (k, i) {
      return {name: k, cls: "s" + (i % 9), values: h.attempts[k]};
    }), n);
  }

  function render(s) {
    var total = 0;
    s.history.requests.forEach(function (r) { total += last(r.per_second); });
    var view = {now: s.now, window: s.window, last: {requests_total: total}};
    fillBudget(s);
    fillTables(s);
    fillReplicas(s);
    var figures = document.querySelectorAll("[data-stat]");
    for (var i = 0; i < figures.length; i++) {
      if (!figures[i].hasAttribute("data-dyn")) // the tables' and budget's own are set above
        show(figures[i], lookup(view, figures[i].getAttribute("data-stat")));
    }
    drawCharts(s);
    var up = s.uptime_s;
    statusEl.setAttribute("data-state", "ok");
    statusEl.textContent = "seq " + s.seq + " \u00b7 " + new Date(s.time_ms).toLocaleTimeString() +
      " \u00b7 up " + Math.floor(up / 60) + "m " + (up % 60) + "s \u00b7 " + s.workers +
      (s.workers === 1 ? " worker" : " workers");
    // proof for tests that the stylesheet applied under the page's Content-Security-Policy
    var tiles = document.querySelector(".tiles");
    dash.setAttribute("data-css", getComputedStyle(tiles).display === "grid" ? "1" : "0");
    dash.setAttribute("data-seq", String(s.seq));
    dash.setAttribute("data-loaded", "1");
  }

  function poll() {
    fetch("dashboard/stats", {cache: "no-store"})
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (e) {
        statusEl.setAttribute("data-state", "error");
        statusEl.textContent = "cannot read dashboard/stats (" + e.message + "); retrying";
      })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
