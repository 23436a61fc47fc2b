// 大数据 dashboard (templates/dashboard.html): fetches /dashboard/data.json for the region and period in
// #dashboard's data-* attributes and draws the charts with the vendored Apache ECharts (window.echarts,
// loaded before this file). Clicking a bar, point or cell opens /alerts with the matching filters
// (region, since, until as local dates, both included; type, canteen, status). No inline code: the
// page's CSP runs only this origin's files.
// For tests: window.bkDashboard = {ready, error, charts}; every chart box gets data-drawn="true" once
// ECharts has finished rendering it.
(function () {
  "use strict";

  var root = document.getElementById("dashboard");
  var state = { ready: false, error: null, charts: {} };
  window.bkDashboard = state;
  if (!root) {
    return;
  }
  var region = root.dataset.region || "";
  var since = root.dataset.since;
  var until = root.dataset.until;
  var WEEKDAYS = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"];  // rows top to bottom
  var COLORS = { bar: "#1d6fd1", line: "#1d6fd1", pending: "#f0a020", overdue: "#d92d20" };

  function query(params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      if (params[k]) {
        q.set(k, params[k]);
      }
    });
    return q.toString();
  }

  function alertsUrl(extra) {
    var p = Object.assign({ region: region, since: since, until: until }, extra || {});
    return "/alerts?" + query(p);
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "—" : (rate * 100).toFixed(1) + "%";
  }

  function narrow() {
    return root.clientWidth < 600;
  }

  function showError(message) {
    state.error = message;
    var box = document.getElementById("dash-error");
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  }

  // -- the period menu: the date fields matter only for 自定义 ------------------------------------------
  function setupForm() {
    var days = document.getElementById("dash-days");
    if (!days) {
      return;
    }
    var custom = document.querySelectorAll(".dash-custom");
    function toggle() {
      var on = days.value === "custom";
      custom.forEach(function (label) {
        label.hidden = !on;
        label.querySelector("input").disabled = !on;
      });
    }
    days.addEventListener("change", toggle);
    toggle();
  }

  // -- the numbers ----------------------------------------------------------------------------------------
  function fillStats(data) {
    var wf = data.workflow;
    var values = {
      total: String(data.total),
      rectification_rate: percent(wf.rectification_rate),
      rectified: "已整改 " + wf.rectified + " / " + wf.total,
      overdue: String(wf.overdue),
      device_rate: percent(data.devices.online_rate),
      devices: "在线 " + data.devices.online + " / " + data.devices.total + " 台",
      camera_rate: percent(data.cameras.online_rate),
      cameras: "在线 " + data.cameras.online + " / " + data.cameras.total + " 路"
    };
    root.querySelectorAll("[data-stat]").forEach(function (el) {
      el.textContent = values[el.dataset.stat];
    });
    var links = {
      alerts: alertsUrl(),
      overdue: alertsUrl({ status: "逾期" }),
      offline: "/schools?" + query({ region: region, online: "0" })
    };
    root.querySelectorAll("[data-link]").forEach(function (el) {
      if (links[el.dataset.link]) {
        el.href = links[el.dataset.link];
      }
    });
  }

  // -- the charts -----------------------------------------------------------------------------------------
  function base(empty) {
    var option = {
      textStyle: { fontFamily: getComputedStyle(document.body).fontFamily },
      animationDuration: 400,
      tooltip: { trigger: "item", confine: true },
      grid: { left: 8, right: 24, top: 16, bottom: 8, containLabel: true }
    };
    if (empty) {
      option.graphic = { type: "text", left: "center", top: "middle",
                         style: { text: "所选范围内暂无数据", fill: "#5f6b7a", fontSize: 14 } };
    }
    return option;
  }

  // the category axis of horizontal bars: names left of the bars; on a phone above them, at full width
  function namesAxis(labels) {
    if (!narrow()) {
      return { type: "category", data: labels, axisLabel: { width: 150, overflow: "truncate" } };
    }
    return { type: "category", data: labels, z: 3, axisTick: { show: false }, axisLine: { show: false },
             axisLabel: { inside: true, align: "left", verticalAlign: "bottom", padding: [0, 0, 11, 0],
                          color: "#1f2933", width: Math.max(120, root.clientWidth - 80), overflow: "truncate" } };
  }

  // px a horizontal bar chart needs for `rows` bars (a phone puts each name above its bar)
  function barsHeight(rows) {
    return narrow() ? Math.max(200, rows * 50 + 50) : Math.max(220, rows * 34 + 60);
  }

  // horizontal bars, the largest on top; items: [{label, value, ...}]
  function barOption(items, seriesName) {
    var rows = items.slice().reverse();
    return Object.assign(base(items.length === 0), {
      xAxis: { type: "value", minInterval: 1 },
      yAxis: namesAxis(rows.map(function (r) { return r.label; })),
      series: [{ type: "bar", name: seriesName, barWidth: narrow() ? 16 : undefined, barMaxWidth: 22,
                 itemStyle: { color: COLORS.bar }, label: { show: true, position: "right" },
                 data: rows.map(function (r) { return { value: r.value, item: r }; }) }]
    });
  }

  function dayOption(days) {
    var option = Object.assign(base(days.every(function (d) { return d.count === 0; })), {
      tooltip: { trigger: "axis", confine: true },
      xAxis: { type: "category", boundaryGap: false, data: days.map(function (d) { return d.day; }),
               axisLabel: { formatter: function (v) { return v.slice(5); }, hideOverlap: true } },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ type: "line", name: "预警数", smooth: false, showSymbol: days.length <= 92,
                 symbolSize: narrow() ? 5 : 7,
                 itemStyle: { color: COLORS.line }, areaStyle: { opacity: 0.12 },
                 data: days.map(function (d) { return d.count; }) }]
    });
    return option;
  }

  function heatOption(cells) {
    var max = 1;
    var data = cells.map(function (c) {  // [weekday 0=Sunday, hour, n] -> [hour, row, n]
      max = Math.max(max, c[2]);
      return [c[1], (c[0] + 6) % 7, c[2]];
    });
    var hours = [];
    for (var h = 0; h < 24; h++) {
      hours.push(String(h));
    }
    return Object.assign(base(cells.length === 0), {
      grid: { left: 8, right: 12, top: 8, bottom: 56, containLabel: true },
      xAxis: { type: "category", data: hours, splitArea: { show: true },
               axisLabel: { interval: narrow() ? 2 : 0 } },
      yAxis: { type: "category", data: WEEKDAYS, inverse: true, splitArea: { show: true } },
      visualMap: { min: 0, max: max, calculable: false, orient: "horizontal", left: "center", bottom: 0,
                   itemHeight: narrow() ? 120 : 180, text: ["多", "少"],
                   inRange: { color: ["#eef5ff", "#7fb2ee", "#1d6fd1", "#0f2d4a"] } },
      tooltip: { confine: true, formatter: function (p) {
        return WEEKDAYS[p.value[1]] + " " + p.value[0] + ":00–" + p.value[0] + ":59<br>预警 " + p.value[2] + " 条";
      } },
      series: [{ type: "heatmap", name: "预警数", data: data, emphasis: { itemStyle: { borderColor: "#333" } } }]
    });
  }

  function openOption(items) {
    var rows = items.slice().reverse();
    function series(name, color, pick) {
      return { type: "bar", name: name, stack: "open", barWidth: narrow() ? 16 : undefined, barMaxWidth: 22,
               itemStyle: { color: color },
               data: rows.map(function (r) { return { value: pick(r), item: r }; }) };
    }
    return Object.assign(base(items.length === 0), {
      legend: { top: 0, data: ["待整改", "逾期"] },
      grid: { left: 8, right: 24, top: 32, bottom: 8, containLabel: true },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, confine: true },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: namesAxis(rows.map(function (r) { return r.name; })),
      series: [series("待整改", COLORS.pending, function (r) { return r.open - r.overdue; }),
               series("逾期", COLORS.overdue, function (r) { return r.overdue; })]
    });
  }

  // draws chart `name`; `target(params)` is where a click on a bar or cell leads; `height` in px, if set
  function draw(name, option, target, height) {
    var el = root.querySelector('[data-chart="' + name + '"]');
    if (height) {
      el.style.height = height + "px";  // CSSOM, which the CSP allows (unlike a style attribute)
    }
    var chart = window.echarts.init(el, null, { renderer: "canvas" });
    chart.on("finished", function () {
      el.dataset.drawn = "true";
    });
    if (target) {
      chart.on("click", function (params) {
        var url = target(params);
        if (url) {
          window.location.assign(url);
        }
      });
    }
    chart.setOption(option);
    state.charts[name] = chart;
    return chart;
  }

  // a click anywhere in the day chart's plot opens that day (a year's line has no points to aim at)
  function clickDays(chart, days) {
    chart.getZr().on("click", function (e) {
      var point = [e.offsetX, e.offsetY];
      if (!chart.containPixel("grid", point)) {
        return;
      }
      var day = days[Math.round(chart.convertFromPixel({ seriesIndex: 0 }, point)[0])];
      if (day) {
        window.location.assign(alertsUrl({ since: day.day, until: day.day }));
      }
    });
  }

  function drawAll(data) {
    draw("type", barOption(data.by_type.map(function (t) {
      return { label: t.name, value: t.count, type: t.type };
    }), "预警数"), function (p) { return p.data && alertsUrl({ type: p.data.item.type }); },
    barsHeight(data.by_type.length));
    draw("school", barOption(data.by_school.map(function (s) {
      return { label: s.name, value: s.count, canteen: s.canteen_id };
    }), "预警数"), function (p) { return p.data && alertsUrl({ canteen: p.data.item.canteen }); },
    barsHeight(data.by_school.length));
    clickDays(draw("day", dayOption(data.by_day)), data.by_day);
    draw("heat", heatOption(data.heatmap), function () { return alertsUrl(); });
    draw("open", openOption(data.open_top), function (p) {
      var row = p.data && p.data.item;
      return row && alertsUrl({ canteen: row.canteen_id, status: p.seriesIndex === 0 ? "待整改" : "逾期" });
    }, barsHeight(data.open_top.length) + 32);
  }

  // a resize across the phone/desktop width draws again (names move above the bars), else just resizes
  function onResize(data) {
    var wasNarrow = narrow();
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        if (narrow() !== wasNarrow) {
          wasNarrow = narrow();
          Object.keys(state.charts).forEach(function (k) {
            state.charts[k].dispose();
          });
          drawAll(data);
        } else {
          Object.keys(state.charts).forEach(function (k) {
            state.charts[k].resize();
          });
        }
      }, 150);
    });
  }

  setupForm();
  if (!window.echarts) {
    showError("图表组件未能加载, 请刷新页面重试。");
    return;
  }
  window.BK.api(root.dataset.src).then(function (data) {
    fillStats(data);
    drawAll(data);
    state.ready = true;
    onResize(data);
  }).catch(function (err) {
    showError("数据加载失败: " + err.message);
  });
})();
