// The public page's report form: a character count, a photo checked before it is sent, one submit at a time.
// The form works without this script (the server checks everything again).
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
