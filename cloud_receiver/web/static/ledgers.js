// 自律台账 pages: the create form of a ledger, the correction / in-place edit and comment forms of an entry,
// and the whole-shift 晨检 screen. Everything posts to the JSON API with window.BK.api (CSRF header); the
// API's 400/422 message (it names the field) is shown next to the form and that field is marked.
(function () {
  "use strict";
  var BK = window.BK;

  function showError(form, err) {
    var box = form.querySelector(".form-error");
    var msg = err.message || String(err);
    box.textContent = "保存失败: " + msg;
    box.hidden = false;
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    var named = /^(?:data\.|checks\.(\d+)\.)?([a-z_]+)/.exec(msg);
    if (named) {
      var scope = form;
      if (named[1] !== undefined) { scope = form.querySelectorAll(".shift-person")[Number(named[1])] || form; }
      var input = scope.querySelector('[name="' + named[2] + '"]');
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
        var label = input.id && form.querySelector('label[for="' + input.id + '"]');
        if (label) { box.textContent = "保存失败: " + label.textContent.replace("*", "").trim() + " — " + msg; }
      }
    }
  }

  function clearError(form) {
    var box = form.querySelector(".form-error");
    if (box) { box.hidden = true; }
  }

  function twoDigits(n) { return (n < 10 ? "0" : "") + n; }

  function toLocalInput(value) {  // an RFC 3339 time as a Beijing datetime-local value
    var d = new Date(new Date(value).getTime() + 8 * 3600 * 1000);
    return d.getUTCFullYear() + "-" + twoDigits(d.getUTCMonth() + 1) + "-" + twoDigits(d.getUTCDate()) + "T" +
      twoDigits(d.getUTCHours()) + ":" + twoDigits(d.getUTCMinutes());
  }

  function collect(form, names) {  // the form's fields as the ledger's JSON body
    var body = {};
    names.forEach(function (name) {
      var el = form.querySelector('[name="' + name + '"]');
      if (!el) { return; }
      var type = el.dataset.type;
      if (type === "bool") { body[name] = el.checked; return; }
      var value = el.value.trim();
      if (value === "") { return; }  // optional and empty: the model's default
      if (type === "number") { body[name] = Number(value); } else if (type === "datetime") {
        body[name] = value + ":00+08:00";
      } else { body[name] = value; }
    });
    return body;
  }

  function fill(form, names, data) {
    names.forEach(function (name) {
      var el = form.querySelector('[name="' + name + '"]');
      if (!el || !(name in data)) { return; }
      if (el.dataset.type === "bool") { el.checked = Boolean(data[name]); } else if (el.dataset.type === "datetime") {
        el.value = data[name] ? toLocalInput(data[name]) : "";
      } else { el.value = data[name] === null ? "" : data[name]; }
    });
  }

  function submitting(form, promise, done) {
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    clearError(form);
    promise.then(done).catch(function (err) {
      buttons.forEach(function (b) { b.disabled = false; });
      showError(form, err);
    });
  }

  function post(path, body, method) {
    return BK.api(path, { method: method || "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
  }

  var cfg = BK.jsonData("ledger-form");
  if (cfg) {
    var base = "/api/v1/canteens/" + encodeURIComponent(cfg.canteen) + "/ledgers/" + cfg.kind;
    var create = document.getElementById("create-form");
    if (create) {
      create.addEventListener("submit", function (event) {
        event.preventDefault();
        submitting(create, post(base, collect(create, cfg.fields)), function () { window.location.reload(); });
      });
    }
    var correct = document.getElementById("correct-form");
    if (correct) {
      fill(correct, cfg.fields, cfg.data);
      var entry = base + "/" + encodeURIComponent(cfg.rid);
      correct.addEventListener("submit", function (event) {
        event.preventDefault();
        var reason = correct.querySelector('[name="reason"]').value.trim();
        if (!reason) { showError(correct, new Error("reason: 请填写更正原因")); return; }
        submitting(correct, post(entry + "/revisions", { reason: reason, data: collect(correct, cfg.fields) }),
          function () { window.location.reload(); });
      });
      var inPlace = document.getElementById("edit-in-place");
      if (inPlace) {
        inPlace.addEventListener("click", function () {
          submitting(correct, post(entry, collect(correct, cfg.fields), "PUT"), function () { window.location.reload(); });
        });
      }
    }
    document.querySelectorAll('form[data-mode="comment"]').forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var entryPath = base + "/" + encodeURIComponent(cfg.rid) + "/comments";
        submitting(form, post(entryPath, { text: form.text.value }), function () { window.location.reload(); });
      });
    });
  }

  // the whole shift: 可上岗 is unticked when a symptom is ticked or the temperature reaches the fever line
  var shift = BK.jsonData("ledger-shift");
  var shiftForm = document.getElementById("shift-form");
  if (shift && shiftForm) {
    var SIGNS = ["hand_wound", "diarrhea", "fever", "cough"];
    var people = Array.prototype.slice.call(shiftForm.querySelectorAll(".shift-person"));
    people.forEach(function (row) {
      function unfit() {
        var t = Number(row.querySelector('[name="temperature_c"]').value);
        return t >= shift.fever || SIGNS.some(function (s) { return row.querySelector('[name="' + s + '"]').checked; });
      }
      function update() {
        var bad = unfit();
        if (bad) { row.querySelector('[name="fit_to_work"]').checked = false; }
        row.classList.toggle("unfit", bad);
      }
      row.querySelectorAll("input").forEach(function (el) {
        if (el.name !== "fit_to_work") { el.addEventListener("input", update); el.addEventListener("change", update); }
      });
    });
    shiftForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var checks = people.map(function (row) {
        var c = { staff_id: row.dataset.staffId, temperature_c: Number(row.querySelector('[name="temperature_c"]').value) };
        SIGNS.concat(["fit_to_work"]).forEach(function (s) { c[s] = row.querySelector('[name="' + s + '"]').checked; });
        return c;
      });
      var body = { day: shiftForm.day.value, checked_by: shiftForm.checked_by.value.trim(), checks: checks };
      var done = document.getElementById("shift-done");
      done.hidden = true;
      submitting(shiftForm, post("/api/v1/canteens/" + encodeURIComponent(shift.canteen) + "/morning-checks", body),
        function (answer) {
          shiftForm.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
          done.textContent = "已提交 " + answer.items.length + " 人的晨检 (" + body.day + ")。";
          done.hidden = false;
        });
    });
  }
}());
