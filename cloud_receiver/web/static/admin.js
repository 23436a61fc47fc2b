// BrightKitchen console, /admin pages (admin_base.html loads it with `defer`, after console.js).
// - forms with data-confirm="…" ask before they post (停用, 吊销);
// - buttons with data-copy="<element id>" copy a show-once secret (only where the Clipboard API exists);
// - on a device page, every command still pending (data-poll-device + data-poll-command) is polled at
//   GET /api/v1/devices/{id}/commands/{cid} until the box answers; its badge and result text follow.
//   State names come from the page (<script type="application/json" id="command-states">).
(function () {
  "use strict";

  var POLL_FIRST_MS = 1000;
  var POLL_MAX_MS = 5000;
  var POLL_LIMIT = 120;  // then the page's own reload shows the final state

  function setupConfirm() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  }

  function setupCopy() {
    if (!navigator.clipboard || !window.isSecureContext) {
      return;  // the secret stays selectable by hand
    }
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) {
        return;
      }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "已复制";
        }, function () {
          button.textContent = "复制失败, 请手动选择";
        });
      });
    });
  }

  // the same words as admin_devices.command_summary on the server
  function summary(view) {
    var data = view.data || {};
    if (view.state === "failed" || view.state === "not_sent") {
      return view.error || "";
    }
    if (view.state !== "ok") {
      return "";
    }
    if (view.name === "status") {
      return "程序版本 " + (data.version || "-") + " · 配置版本 " + (data.config_version || "初始配置") +
        (data.config_on_trial ? " (试用中)" : "") + " · 摄像头在线 " +
        (data.cameras_online === undefined ? "-" : data.cameras_online) + "/" +
        (data.cameras === undefined ? "-" : data.cameras);
    }
    if (view.name === "config_push") {
      return "设备已接受配置, 正在重启试用; 摄像头未能全部上线时会自动回滚 (见“问题”)。";
    }
    return "";
  }

  function show(view, states) {
    var id = view.id;
    document.querySelectorAll('[data-poll-command="' + id + '"]').forEach(function (badge) {
      badge.textContent = states[view.state] || view.state;
      badge.className = "tag state state-" + view.state;
    });
    var text = summary(view);
    document.querySelectorAll('[data-summary-for="' + id + '"]').forEach(function (cell) {
      cell.textContent = text || (cell.tagName === "TD" ? "-" : "");
    });
    if (view.name === "status" && view.state === "ok" && view.data) {
      var config = document.getElementById("config-version");
      if (config) {
        config.textContent = (view.data.config_version || "初始配置") + (view.data.config_on_trial ? " (试用中)" : "");
      }
    }
  }

  function poll(device, command, states) {
    var tries = 0;
    var delay = POLL_FIRST_MS;
    function once() {
      tries += 1;
      window.BK.api("/api/v1/devices/" + encodeURIComponent(device) + "/commands/" + encodeURIComponent(command))
        .then(function (view) {
          show(view, states);
          if (view.state === "pending" && tries < POLL_LIMIT) {
            delay = Math.min(POLL_MAX_MS, Math.round(delay * 1.3));
            window.setTimeout(once, delay);
          }
        }, function () {
          if (tries < POLL_LIMIT) {
            window.setTimeout(once, POLL_MAX_MS);
          }
        });
    }
    window.setTimeout(once, delay);
  }

  function setupPolling() {
    var badges = document.querySelectorAll("[data-poll-command]");
    if (!badges.length || !window.BK) {
      return;
    }
    var states = window.BK.jsonData("command-states") || {};
    var seen = {};
    badges.forEach(function (badge) {
      var command = badge.getAttribute("data-poll-command");
      if (!seen[command]) {
        seen[command] = true;
        poll(badge.getAttribute("data-poll-device"), command, states);
      }
    });
  }

  setupConfirm();
  setupCopy();
  setupPolling();
})();
