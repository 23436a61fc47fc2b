// 回放: ask the box for a range of its recording (`playback` command), show the upload's progress from
// the command's view, then play the clip from the receiver once it has all of it.
(function () {
  "use strict";
  var section = document.querySelector("section.playback");
  var form = document.getElementById("playback-form");
  if (!section || !form) { return; }
  var bar = document.getElementById("playback-progress");
  var status = document.getElementById("playback-status");
  var video = document.getElementById("playback-video");
  var base = "/api/v1/devices/" + encodeURIComponent(section.dataset.device) + "/commands";

  function when(local) {  // the form's times are Beijing time, with or without seconds
    return (local.length === 16 ? local + ":00" : local) + "+08:00";
  }

  function follow(id) {
    window.BK.api(base + "/" + encodeURIComponent(id)).then(function (cmd) {
      if (cmd.state === "failed" || cmd.state === "expired" || cmd.state === "not_sent") {
        status.textContent = "取回失败: " + (cmd.error || cmd.state);
        bar.hidden = true;
        return;
      }
      var up = cmd.upload;
      if (cmd.state === "ok" && up) {
        bar.value = up.bytes ? Math.round(100 * up.received_bytes / up.bytes) : 0;
        status.textContent = up.done ? "已上传, 可以播放" : "上传中 " + bar.value + "%";
        if (up.done) {
          bar.hidden = true;
          video.src = "/api/v1/media/" + up.sha256;
          video.hidden = false;
          return;
        }
      } else {
        status.textContent = "盒子正在截取录像…";
      }
      window.setTimeout(function () { follow(id); }, 1000);
    }).catch(function (err) { status.textContent = "出错: " + err.message; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    video.hidden = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "正在向盒子请求录像…";
    window.BK.api(base, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "playback", camera_id: section.dataset.camera, ttl_s: 120,
        args: { start: when(form.start.value), end: when(form.end.value) } })
    }).then(function (cmd) { follow(cmd.id); })
      .catch(function (err) { bar.hidden = true; status.textContent = "出错: " + err.message; });
  });
}());
