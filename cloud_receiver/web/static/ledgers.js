// 自律台账 pages: the create form of a ledger, the correction / in-place edit and comment forms of an entry,
// and the whole-shift 晨检 screen. Everything posts to the JSON API with window.BK.api (CSRF header); the
// API's 400/422 message (it names the field) is shown next to the form and that field is marked.
(function () {
  "use strict";
  var BK = window.BK;

  function mark(el) {  // the element that shows a field as wrong: a hidden photo field's box
    return el.type === "hidden" ? el.closest(".photo-field") || el : el;
  }

  function showError(form, err) {
    var box = form.querySelector(".form-error");
    var msg = err.message || String(err);
    box.textContent = "保存失败: " + msg;
    box.hidden = false;
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    var named = /^(?:data\.|checks\.(\d+)\.)?([a-z][a-z0-9_]*)(?:\.(\d+)\.([a-z][a-z0-9_]*))?/.exec(msg);
    if (named) {
      var scope = form;
      if (named[1] !== undefined) { scope = form.querySelectorAll(".shift-person")[Number(named[1])] || form; }
      var input = scope.querySelector('[name="' + named[2] + '"]');
      if (input) {
        var shown = mark(input);
        var label = input.id && form.querySelector('label[for="' + input.id + '"]');
        if (input.dataset.type === "items") {  // items.3.quantity: that row's input
          label = input.querySelector("legend");
          var row = named[3] !== undefined && input.querySelectorAll(".item-row")[Number(named[3])];
          var cell = row && row.querySelector('[data-item="' + named[4] + '"]');
          if (cell) { shown = cell; }
        } else if (shown !== input) {
          label = shown.querySelector("label");
        }
        shown.setAttribute("aria-invalid", "true");
        (shown.querySelector(".photo-input") || shown).focus();
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

  function words(value) { return value ? value.split(" ").filter(Boolean) : []; }

  function itemsOf(fieldset) {  // a purchase's rows; a row with nothing typed in (a unit only) is skipped
    var items = [];
    fieldset.querySelectorAll(".item-row").forEach(function (row) {
      var item = {};
      row.querySelectorAll("[data-item]").forEach(function (el) {
        var value = el.value.trim();
        if (value !== "") { item[el.dataset.item] = el.dataset.type === "number" ? Number(value) : value; }
      });
      if (Object.keys(item).some(function (k) { return k !== "unit"; })) { items.push(item); }
    });
    return items;
  }

  function collect(form, names) {  // the form's fields as the ledger's JSON body
    var body = {};
    names.forEach(function (name) {
      var el = form.querySelector('[name="' + name + '"]');
      if (!el) { return; }
      var type = el.dataset.type;
      if (type === "bool") { body[name] = el.checked; return; }
      if (type === "items") { body[name] = itemsOf(el); return; }
      if (type === "photos") { body[name] = words(el.value); return; }
      if (type === "lines") {
        body[name] = el.value.split(/[\n、,，;；]+/).map(function (v) { return v.trim(); }).filter(Boolean);
        return;
      }
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
      var type = el.dataset.type, value = data[name];
      if (type === "bool") { el.checked = Boolean(value); } else if (type === "datetime") {
        el.value = value ? toLocalInput(value) : "";
      } else if (type === "items") {
        el.querySelector(".item-rows").textContent = "";
        (value || []).forEach(function (item) { addItem(el, item); });
      } else if (type === "photo" || type === "photos") {
        setPhotos(el.closest(".photo-field"), [].concat(value || []));
      } else if (type === "lines") { el.value = (value || []).join("\n"); } else {
        el.value = value === null ? "" : value;
      }
    });
  }

  // -- a purchase's item rows (from the fieldset's <template>) ---------------------------------------
  function addItem(fieldset, item) {
    var row = fieldset.querySelector(".item-template").content.firstElementChild.cloneNode(true);
    row.querySelectorAll("[data-item]").forEach(function (el) {
      var value = item && item[el.dataset.item];
      if (value !== undefined && value !== null) { el.value = value; }
    });
    row.querySelector(".item-remove").addEventListener("click", function () {
      row.remove();
      if (!fieldset.querySelector(".item-row")) { addItem(fieldset); }
    });
    fieldset.querySelector(".item-rows").appendChild(row);
    return row;
  }

  function setupItems(form) {
    form.querySelectorAll('[data-type="items"]').forEach(function (fieldset) {
      if (!fieldset.querySelector(".item-row")) { addItem(fieldset); }
      fieldset.querySelector(".item-add").addEventListener("click", function () {
        addItem(fieldset).querySelector("input").focus();
      });
    });
  }

  // -- photos: uploaded as soon as they are picked; the form sends their sha256s ---------------------
  var MAX_SIDE = 2560;  // a phone photo larger than the upload limit is scaled to this and sent as JPEG

  function asJpeg(file, limit) {  // a JPEG under the limit as it is; a PNG or a larger one re-encoded
    if (file.type === "image/jpeg" && file.size <= limit) { return Promise.resolve(file); }
    return new Promise(function (resolve, reject) {
      var img = new Image();
      var url = URL.createObjectURL(file);
      img.onload = function () {
        URL.revokeObjectURL(url);
        var scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
        var canvas = document.createElement("canvas");
        canvas.width = Math.round(img.naturalWidth * scale);
        canvas.height = Math.round(img.naturalHeight * scale);
        var g = canvas.getContext("2d");
        g.fillStyle = "#fff";
        g.fillRect(0, 0, canvas.width, canvas.height);
        g.drawImage(img, 0, 0, canvas.width, canvas.height);
        canvas.toBlob(function (blob) { return blob ? resolve(blob) : reject(new Error("无法转换照片")); },
          "image/jpeg", 0.85);
      };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("只能上传 JPEG 或 PNG 照片")); };
      img.src = url;
    });
  }

  function setPhotos(box, shas) {
    var hidden = box.querySelector('input[type="hidden"]');
    hidden.value = shas.join(" ");
    var list = box.querySelector(".photo-list");
    list.textContent = "";
    shas.forEach(function (sha) {
      var li = document.createElement("li");
      var img = document.createElement("img");
      img.src = "/api/v1/media/" + sha;
      img.alt = "已上传的照片";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button-small photo-remove";
      remove.textContent = "移除";
      remove.addEventListener("click", function () {
        setPhotos(box, words(hidden.value).filter(function (s) { return s !== sha; }));
      });
      li.appendChild(img);
      li.appendChild(remove);
      list.appendChild(li);
    });
  }

  function setupPhotos(form, config) {
    form.querySelectorAll(".photo-field").forEach(function (box) {
      var input = box.querySelector(".photo-input");
      var status = box.querySelector(".photo-status");
      var hidden = box.querySelector('input[type="hidden"]');
      var multiple = box.dataset.multiple === "true";
      input.addEventListener("change", function () {
        var files = Array.prototype.slice.call(input.files);
        if (!files.length) { return; }
        box.classList.add("uploading");
        form.querySelectorAll('button[type="submit"]').forEach(function (b) { b.disabled = true; });
        status.textContent = "正在上传 " + files.length + " 张照片…";
        var url = "/api/v1/canteens/" + encodeURIComponent(config.canteen) + "/ledger-photos";
        Promise.all(files.map(function (file) {
          return asJpeg(file, config.photo_max_bytes).then(function (jpeg) {
            var body = new FormData();
            body.append("photo", jpeg, "photo.jpg");
            return BK.api(url, { method: "POST", body: body });
          });
        })).then(function (answers) {
          var got = answers.map(function (a) { return a.sha256; });
          var shas = multiple ? words(hidden.value).concat(got) : got.slice(-1);
          setPhotos(box, shas.filter(function (s, i) { return shas.indexOf(s) === i; }));
          status.textContent = "";
          box.removeAttribute("aria-invalid");
        }).catch(function (err) {
          status.textContent = "照片上传失败: " + (err.message || err);
          box.setAttribute("aria-invalid", "true");
        }).then(function () {
          input.value = "";
          box.classList.remove("uploading");
          if (!form.querySelector(".photo-field.uploading")) {
            form.querySelectorAll('button[type="submit"]').forEach(function (b) { b.disabled = false; });
          }
        });
      });
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
    document.querySelectorAll(".ledger-form").forEach(function (form) {
      setupItems(form);
      setupPhotos(form, cfg);
    });
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
