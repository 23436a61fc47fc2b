// One alert: the detection boxes drawn over the snapshot (a canvas: the CSP allows no inline styles),
// and the workflow actions posted to the JSON API with the session's CSRF token.
(function () {
  "use strict";
  var section = document.querySelector(".alert-detail");
  if (!section) { return; }
  var id = section.dataset.alertId;
  var img = document.getElementById("snapshot");
  var canvas = document.getElementById("boxes");
  var data = window.BK.jsonData("alert-boxes") || { boxes: [] };

  function draw() {
    if (!img || !canvas || !img.naturalWidth) { return; }
    var w = img.clientWidth, h = img.clientHeight;
    canvas.width = w;
    canvas.height = h;
    var frame = data.frame || [img.naturalWidth, img.naturalHeight];
    var sx = w / frame[0], sy = h / frame[1];
    var g = canvas.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.lineWidth = 2;
    g.font = "13px sans-serif";
    data.boxes.forEach(function (b) {
      var x = b.box[0] * sx, y = b.box[1] * sy, bw = (b.box[2] - b.box[0]) * sx, bh = (b.box[3] - b.box[1]) * sy;
      g.strokeStyle = "#ff3b30";
      g.strokeRect(x, y, bw, bh);
      var text = b.label + " " + Math.round(b.score * 100) + "%";
      g.fillStyle = "#ff3b30";
      g.fillRect(x, Math.max(0, y - 18), g.measureText(text).width + 8, 18);
      g.fillStyle = "#fff";
      g.fillText(text, x + 4, Math.max(13, y - 5));
    });
  }
  if (img) {
    if (img.complete) { draw(); } else { img.addEventListener("load", draw); }
    window.addEventListener("resize", draw);
  }

  var error = document.getElementById("action-error");
  function fail(err) {
    error.textContent = err.message;
    error.hidden = false;
  }
  function when(local) {  // a datetime-local value is Beijing time
    return local ? local + ":00+08:00" : "";
  }
  var post = {
    deadline: function (f) {
      return window.BK.api("/api/v1/alerts/" + encodeURIComponent(id) + "/deadline", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ deadline: when(f.deadline.value), note: f.note.value }) });
    },
    approve: function (f) {
      return window.BK.api("/api/v1/alerts/" + encodeURIComponent(id) + "/review", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ decision: "approve", note: f.note.value }) });
    },
    reject: function (f) {
      return window.BK.api("/api/v1/alerts/" + encodeURIComponent(id) + "/review", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ decision: "reject", note: f.note.value, deadline: when(f.deadline.value) }) });
    },
    rectify: function (f) {
      var body = new FormData();
      body.append("note", f.note.value);
      body.append("photo", f.photo.files[0]);
      return window.BK.api("/api/v1/alerts/" + encodeURIComponent(id) + "/rectification", { method: "POST", body: body });
    }
  };
  // 误报反馈: a collect_mark command to the box (it keeps the alert's frame if its camera collects examples);
  // its answer is awaited for a little while and shown
  var mark = document.getElementById("mark-false");
  var markResult = document.getElementById("mark-result");
  function said(text, bad) {
    markResult.textContent = text;
    markResult.className = "notice " + (bad ? "notice-error" : "notice-ok");
    markResult.hidden = false;
  }
  function follow(path, tries) {
    return window.BK.api(path).then(function (cmd) {
      if (cmd.state === "ok") { return said("边缘盒已留存这张画面作为误报样本。"); }
      if (cmd.state === "failed") { return said("边缘盒未留存: " + cmd.error, true); }
      if (cmd.state === "not_sent" || cmd.state === "expired" || tries <= 0) {
        mark.disabled = false;
        return said("边缘盒没有应答(可能不在线), 请稍后再试。", true);
      }
      return new Promise(function (ok) { setTimeout(ok, 1000); }).then(function () { return follow(path, tries - 1); });
    });
  }
  if (mark) {
    mark.addEventListener("click", function () {
      var device = encodeURIComponent(mark.dataset.device);
      mark.disabled = true;
      said("已发送, 等待边缘盒应答…");
      window.BK.api("/api/v1/devices/" + device + "/commands", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: "collect_mark", args: { alert_id: id } }) })
        .then(function (cmd) { return follow("/api/v1/devices/" + device + "/commands/" + encodeURIComponent(cmd.id), 15); })
        .catch(function (err) {
          mark.disabled = false;
          said(err.status === 503 ? "边缘盒不在线, 未发送; 请稍后再试。" : "发送失败: " + err.message, true);
        });
    });
  }

  document.querySelectorAll("form[data-action]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      post[form.dataset.action](form).then(function () { window.location.reload(); })
        .catch(function (err) { button.disabled = false; fail(err); });
    });
  });
}());
