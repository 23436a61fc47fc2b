// Live view: fragmented MP4 from the live WebSocket into a <video> through Media Source Extensions.
// The first text message names the codec; every binary message is an MP4 piece (init segment or one
// frame's fragment) appended in order. Playback is kept within a second of the live edge.
// window.bkLive exposes what the page measured (first frame after the click, in ms) for tests.
(function () {
  "use strict";
  var video = document.getElementById("live-video");
  var button = document.getElementById("live-start");
  var status = document.getElementById("live-status");
  if (!video || !button) { return; }
  window.bkLive = { firstFrameMs: null, pieces: 0, error: null };

  function say(text) { status.textContent = text; }

  function start() {
    button.hidden = true;
    say("正在连接摄像头…");
    var clicked = performance.now();
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + location.host + "/api/v1/live/" + encodeURIComponent(video.dataset.device) +
      "/" + encodeURIComponent(video.dataset.camera);
    var ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    var source = new MediaSource();
    var buffer = null;
    var codec = null;
    var queue = [];
    video.src = URL.createObjectURL(source);

    function pump() {
      if (!buffer || buffer.updating || queue.length === 0) { return; }
      try {
        buffer.appendBuffer(queue.shift());
      } catch (err) {
        window.bkLive.error = String(err);
        say("播放出错: " + err.message);
      }
    }

    function open() {
      if (buffer || source.readyState !== "open" || !codec) { return; }
      buffer = source.addSourceBuffer('video/mp4; codecs="' + codec + '"');
      buffer.mode = "sequence";  // frames back to back: a restarted encoder (timestamps from 0) plays on
      buffer.addEventListener("updateend", function () {
        var ranges = video.buffered;
        if (ranges.length) {
          var end = ranges.end(ranges.length - 1);
          if (end - video.currentTime > 1.5) { video.currentTime = Math.max(ranges.start(ranges.length - 1), end - 0.3); }
          if (video.paused) { video.play().catch(function () {}); }
          if (!buffer.updating && video.currentTime - ranges.start(0) > 30) {
            buffer.remove(ranges.start(0), video.currentTime - 10);  // keep memory bounded
          }
        }
        pump();
      });
      pump();
    }

    function firstFrame() {
      if (window.bkLive.firstFrameMs === null) {
        window.bkLive.firstFrameMs = Math.round(performance.now() - clicked);
        say("直播中");
      }
    }
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(firstFrame);
    } else {
      video.addEventListener("playing", firstFrame, { once: true });
    }

    source.addEventListener("sourceopen", open);
    ws.onmessage = function (event) {
      if (typeof event.data === "string") {
        var msg = JSON.parse(event.data);
        if (msg.error) { window.bkLive.error = msg.error; say(msg.error); return; }
        codec = msg.codec;
        open();
        return;
      }
      window.bkLive.pieces += 1;
      queue.push(event.data);
      pump();
    };
    ws.onclose = function () {
      if (window.bkLive.firstFrameMs === null && !window.bkLive.error) { say("连接已断开, 请刷新页面重试。"); }
    };
  }

  button.addEventListener("click", start);
}());
