/* metrogate console: draws the point page's charts from its JSON block with ECharts.
   Everything it draws comes from the server (downsampled there); nothing is fetched.
   Live pages (body data-live="N") reload every N seconds while visible and while
   nobody is using them (typing in a form, zooming a chart). */
(function () {
  "use strict";
  var live = parseFloat(document.body.getAttribute("data-live") || "0");
  if (live > 0) {
    var touched = 0;
    ["input", "mousedown", "wheel", "keydown", "touchstart"].forEach(function (ev) {
      document.addEventListener(ev, function () { touched = Date.now(); }, { passive: true });
    });
    window.setInterval(function () {
      var a = document.activeElement;
      var typing = a && (a.tagName === "INPUT" || a.tagName === "SELECT");
      if (!document.hidden && !typing && Date.now() - touched > live * 1000) {
        window.location.reload();
      }
    }, live * 1000);
  }
}());
(function () {
  "use strict";
  var block = document.getElementById("point-data");
  if (!block || typeof echarts === "undefined") { return; }
  var d = JSON.parse(block.textContent);
  var L = d.labels;
  window.metrogateCharts = {};

  function line(name, y, color, dash) {
    return { name: name, yAxis: y, lineStyle: { color: color, type: dash || "solid", width: 1.5 },
             label: { formatter: name + " " + y, position: "insideEndTop" } };
  }

  function base(title) {
    return {
      animation: false,
      grid: { left: 70, right: 110, top: 30, bottom: 60 },
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      xAxis: { type: "time" },
      yAxis: { type: "value", scale: true, name: title },
      dataZoom: [{ type: "inside" }, { type: "slider", height: 18, bottom: 8 }],
      series: []
    };
  }

  // value chart: readings (or bucket means with their min–max), limits, guard band, verdicts
  var vEl = document.getElementById("value-chart");
  if (vEl) {
    var opt = base(d.unit);
    // the specification limits stay in view, however far the values are from them
    opt.yAxis.min = function (v) { return d.lower !== null ? Math.min(v.min, d.lower) : v.min; };
    opt.yAxis.max = function (v) { return d.upper !== null ? Math.max(v.max, d.upper) : v.max; };
    var marks = [];
    if (d.lower !== null) { marks.push(line(L.lower, d.lower, "#a4001d", "solid")); }
    if (d.upper !== null) { marks.push(line(L.upper, d.upper, "#a4001d", "solid")); }
    var areas = [];
    if (d.U !== null && d.U > 0) {
      if (d.lower !== null) { areas.push([{ name: L.guard, yAxis: d.lower }, { yAxis: d.lower + d.U }]); }
      if (d.upper !== null) { areas.push([{ name: L.guard, yAxis: d.upper - d.U }, { yAxis: d.upper }]); }
    }
    opt.series.push({
      id: "value", name: L.value, type: "line", showSymbol: d.samples.length < 200,
      symbolSize: 4, lineStyle: { width: 1.2, color: "#12355b" }, itemStyle: { color: "#12355b" },
      data: d.samples.map(function (s) { return [s[0], s[1]]; }),
      markLine: { silent: true, symbol: "none", data: marks },
      markArea: { silent: true, itemStyle: { color: "rgba(230, 160, 0, 0.18)" }, data: areas }
    });
    if (!d.raw) {
      opt.series.push({ id: "min", name: L.minmax, type: "line", showSymbol: false,
        lineStyle: { width: 0.6, color: "#8fa6bf", type: "dashed" },
        data: d.samples.map(function (s) { return [s[0], s[2]]; }) });
      opt.series.push({ id: "max", name: L.minmax, type: "line", showSymbol: false,
        lineStyle: { width: 0.6, color: "#8fa6bf", type: "dashed" },
        data: d.samples.map(function (s) { return [s[0], s[3]]; }) });
    }
    var fails = d.markers.filter(function (m) { return m[2] === "fail"; });
    var conds = d.markers.filter(function (m) { return m[2].indexOf("conditional") === 0; });
    opt.series.push({ id: "fail", name: L.fail, type: "scatter", symbol: "diamond", symbolSize: 10, z: 5,
      itemStyle: { color: "#a4001d" }, data: fails.map(function (m) { return [m[0], m[1]]; }) });
    opt.series.push({ id: "conditional", name: L.conditional, type: "scatter", symbol: "triangle",
      symbolSize: 10, z: 5, itemStyle: { color: "#e08a00" },
      data: conds.map(function (m) { return [m[0], m[1]]; }) });
    var vChart = echarts.init(vEl, null, { renderer: "canvas" });
    vChart.setOption(opt);
    window.metrogateCharts.value = vChart;
  }

  // control chart: statistic, centre line, control limits, Nelson violations by rule number
  var cEl = document.getElementById("control-chart");
  var c = d.chart;
  if (cEl && c.points.length) {
    var copt = base("");
    var cl = [];
    if (c.centre !== null) { cl.push(line(L.centre, +c.centre.toPrecision(6), "#0b6b2b", "solid")); }
    if (c.ucl !== null) { cl.push(line(L.ucl, +c.ucl.toPrecision(6), "#a4001d", "dashed")); }
    if (c.lcl !== null) { cl.push(line(L.lcl, +c.lcl.toPrecision(6), "#a4001d", "dashed")); }
    copt.series.push({ id: "statistic", name: c.kind, type: "line", symbolSize: 4,
      showSymbol: c.points.length < 200, lineStyle: { width: 1.2, color: "#12355b" },
      itemStyle: { color: "#12355b" }, data: c.points,
      markLine: { silent: true, symbol: "none", data: cl } });
    copt.series.push({ id: "violations", name: L.rule.replace("{n}", "1–8"), type: "scatter",
      symbolSize: 10, itemStyle: { color: "#a4001d" },
      label: { show: true, position: "top", fontSize: 10, color: "#a4001d",
               formatter: function (p) { return "N" + p.data[2].join(","); } },
      data: c.violations.map(function (v) { return [v[0], v[1], v[2]]; }) });
    var cChart = echarts.init(cEl, null, { renderer: "canvas" });
    cChart.setOption(copt);
    window.metrogateCharts.control = cChart;
  }

  var rEl = document.getElementById("range-chart");
  if (rEl && c.ranges.length) {
    var ropt = base("R");
    var rl = [];
    if (c.r_centre !== null) { rl.push(line(L.centre, +c.r_centre.toPrecision(6), "#0b6b2b")); }
    if (c.r_ucl !== null) { rl.push(line(L.ucl, +c.r_ucl.toPrecision(6), "#a4001d", "dashed")); }
    ropt.series.push({ id: "range", name: L.range, type: "line", symbolSize: 4, data: c.ranges,
      markLine: { silent: true, symbol: "none", data: rl } });
    var rChart = echarts.init(rEl, null, { renderer: "canvas" });
    rChart.setOption(ropt);
    window.metrogateCharts.range = rChart;
  }

  window.addEventListener("resize", function () {
    Object.keys(window.metrogateCharts).forEach(function (k) { window.metrogateCharts[k].resize(); });
  });
  document.documentElement.setAttribute("data-charts", "drawn");
}());
