// 预警 list: new alerts arrive over the alert stream (server-sent events with the session cookie) and
// are added at the top when they match the page's filters, with a badge and a short sound.
(function () {
  "use strict";
  var rows = document.getElementById("alert-rows");
  var badge = document.getElementById("new-badge");
  var state = document.getElementById("live-state");
  if (!rows || !window.EventSource) { return; }
  var filters = window.BK.jsonData("alert-filters") || {};
  var fresh = 0;

  function matches(a) {
    if (filters.canteen && a.canteen_id !== filters.canteen) { return false; }
    if (filters.type && filters.type.split(",").indexOf(a.type) < 0) { return false; }
    if (filters.status && a.status !== filters.status) { return false; }
    if (filters.region && (a.jurisdiction || "").indexOf(filters.region) !== 0) { return false; }
    return !filters.until && !filters.cursor;  // a list that ends in the past gets nothing new
  }

  function beep() {
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var osc = ctx.createOscillator();
      var gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.1;
      osc.connect(gain);
      gain.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.2);
    } catch (err) { /* a browser that refuses sound before a click: the badge still shows */ }
  }

  function cell(label, content, href) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = content;
      td.appendChild(a);
    } else {
      td.textContent = content;
    }
    return td;
  }

  function localTime(iso) {
    var d = new Date(iso);
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function add(a) {
    var old = rows.querySelector('tr[data-id="' + CSS.escape(a.id) + '"]');
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", a.id);
    tr.className = "status-" + a.status + " fresh";
    var href = "/alerts/" + encodeURIComponent(a.id);
    tr.appendChild(cell("时间", localTime(a.started_at), href));
    tr.appendChild(cell("学校", a.canteen_name || a.canteen_id || "—"));
    tr.appendChild(cell("摄像头", a.camera_id));
    tr.appendChild(cell("类型", a.type_name, href));
    var st = cell("状态", "");
    var pill = document.createElement("span");
    pill.className = "pill pill-" + a.status;
    pill.textContent = a.status;
    st.appendChild(pill);
    tr.appendChild(st);
    tr.appendChild(cell("整改期限", a.deadline ? localTime(a.deadline) : "—"));
    if (old) { old.replaceWith(tr); return false; }
    var empty = rows.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    rows.insertBefore(tr, rows.firstChild);
    return true;
  }

  var source = new EventSource("/api/v1/alerts/stream");
  source.addEventListener("open", function () { state.textContent = "实时推送已连接"; });
  source.addEventListener("error", function () { state.textContent = "实时推送重连中…"; });
  source.addEventListener("resync", function () { state.textContent = "有预警未能实时显示, 请刷新页面"; });
  function onAlert(event) {
    var a = JSON.parse(event.data);
    if (!matches(a)) { return; }
    if (add(a) && event.type === "alert") {
      fresh += 1;
      badge.textContent = "新 " + fresh;
      badge.hidden = false;
      document.title = "(" + fresh + ") " + document.title.replace(/^\(\d+\) /, "");
      beep();
    }
  }
  source.addEventListener("alert", onAlert);
  source.addEventListener("alert_update", onAlert);
}());
