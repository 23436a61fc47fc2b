// BrightKitchen web console: what every page shares. Loaded with `defer` from base.html; no inline
// scripts anywhere (the pages' CSP runs only this origin's files). Pages add their own files in the
// `scripts` block and use window.BK:
//   BK.csrfToken()          the session's CSRF token (from <meta name="csrf-token">)
//   BK.api(path, options)   fetch on /api/v1 with the session cookie; a write carries X-CSRF-Token;
//                           resolves to the parsed JSON, rejects with an Error whose message is the API's
//   BK.jsonData(id)         the parsed content of a <script type="application/json" id="..."> block
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function api(path, options) {
    var opts = Object.assign({ credentials: "same-origin" }, options || {});
    var method = (opts.method || "GET").toUpperCase();
    var headers = new Headers(opts.headers || {});
    headers.set("Accept", "application/json");
    if (method !== "GET" && method !== "HEAD") {
      headers.set("X-CSRF-Token", csrfToken());
    }
    opts.headers = headers;
    return fetch(path, opts).then(function (resp) {
      if (resp.status === 401) {  // the session ended: log in again, then come back here
        window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      }
      return resp.json().catch(function () { return {}; }).then(function (body) {
        if (!resp.ok) {
          var err = new Error((body.error && body.error.message) || ("HTTP " + resp.status));
          err.status = resp.status;
          throw err;
        }
        return body;
      });
    });
  }

  function jsonData(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function setupNav() {
    var bar = document.querySelector(".topbar");
    var toggle = bar && bar.querySelector(".nav-toggle");
    if (!toggle) {
      return;
    }
    toggle.addEventListener("click", function () {
      var open = bar.getAttribute("data-nav-open") !== "true";
      bar.setAttribute("data-nav-open", String(open));
      toggle.setAttribute("aria-expanded", String(open));
    });
  }

  window.BK = { csrfToken: csrfToken, api: api, jsonData: jsonData };
  setupNav();
})();
