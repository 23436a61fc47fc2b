// The public page's report form: a character count, a photo checked before it is sent, one submit at a time.
// The form works without this script (the server checks everything again).
// Then 看看后厨: start a look, show the chosen camera's blurred frame and fetch the next one a few seconds
// after each has loaded, until the look ends.
"use strict";

(function () {
  const form = document.querySelector(".pub-form");
  if (!form) return;
  const text = form.querySelector("textarea[name=text]");
  const count = form.querySelector("[data-count-for]");
  const photo = form.querySelector("input[name=photo]");
  const problem = document.getElementById("photo-problem");
  const button = form.querySelector("button[type=submit]");
  const max = Number(text.getAttribute("maxlength"));
  const photoMax = Number(form.dataset.photoMax);

  function showCount() {
    count.textContent = `${text.value.length} / ${max}`;
  }
  text.addEventListener("input", showCount);
  showCount();

  const photoName = document.getElementById("photo-name");
  photo.addEventListener("change", () => {
    problem.textContent = "";
    const file = photo.files && photo.files[0];
    photoName.textContent = file ? file.name : "未选择照片";
    if (!file) return;
    if (file.type && file.type !== "image/jpeg") {
      problem.textContent = "照片只能是 JPEG 格式 (.jpg)。";
    } else if (file.size > photoMax) {
      problem.textContent = `照片不能超过 ${Math.floor(photoMax / 1048576)} MB。`;
    }
    if (problem.textContent) {
      photo.value = "";
      photoName.textContent = "未选择照片";
    }
  });

  const label = button.textContent;
  form.addEventListener("submit", () => {
    button.disabled = true;
    button.textContent = "正在提交…";
  });
  window.addEventListener("pageshow", () => {  // back to a page kept in the history cache
    button.disabled = false;
    button.textContent = label;
  });
})();

(function () {
  const section = document.getElementById("look");
  if (!section) return;
  const button = document.getElementById("look-start");
  const state = document.getElementById("look-state");
  const view = document.getElementById("look-view");
  const cams = document.getElementById("look-cams");
  const img = document.getElementById("look-frame");
  const caption = document.getElementById("look-caption");
  let timer = null;
  let ends = 0;
  let refreshMs = 4000;
  let frameUrl = "";
  let n = 0;
  window.bkLook = {frames: 0, errors: 0};  // what tests read

  function pad(v) { return String(v).padStart(2, "0"); }

  function stop(message) {
    clearTimeout(timer);
    timer = null;
    ends = 0;
    button.disabled = false;
    button.textContent = "看看后厨";
    state.textContent = message;
  }

  function next() {
    clearTimeout(timer);
    if (Date.now() >= ends) {
      stop("本次观看已结束。想再看看, 请再点一次“看看后厨”。");
      return;
    }
    n += 1;
    img.src = `${frameUrl}?n=${n}`;
  }

  img.addEventListener("load", () => {
    if (!ends) return;
    window.bkLook.frames += 1;
    const t = new Date();
    caption.textContent = `画面更新于 ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}` +
      ` · 还可看 ${Math.max(0, Math.round((ends - Date.now()) / 1000))} 秒`;
    state.textContent = "";
    timer = setTimeout(next, refreshMs);
  });
  img.addEventListener("error", () => {
    if (!ends) return;
    window.bkLook.errors += 1;
    state.textContent = "画面暂时没有传回, 稍后自动重试…";
    timer = setTimeout(next, refreshMs);
  });

  function choose(cameras, i) {
    cams.querySelectorAll("button").forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
    frameUrl = cameras[i].frame;
    next();
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "正在连接…";
    state.textContent = "正在连接后厨摄像头…";
    let answer;
    let body = {};
    try {
      answer = await fetch(section.dataset.lookUrl, {cache: "no-store", credentials: "omit"});
      body = await answer.json();
    } catch (err) {
      stop("网络异常, 请稍后再试。");
      return;
    }
    if (!answer.ok || body.state !== "open") {
      stop(body.message || "暂时无法观看, 请稍后再试。");
      state.classList.toggle("closed", body.state === "closed");
      return;
    }
    state.classList.remove("closed");
    refreshMs = body.refresh_s * 1000;
    ends = Date.now() + body.seconds * 1000;
    button.textContent = "观看中";
    cams.replaceChildren(...body.cameras.map((cam, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "pub-look-cam";
      b.textContent = cam.name;
      b.addEventListener("click", () => choose(body.cameras, i));
      return b;
    }));
    cams.hidden = body.cameras.length < 2;
    view.hidden = false;
    choose(body.cameras, 0);
  });
})();
