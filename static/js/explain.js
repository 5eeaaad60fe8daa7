// "Where the model looked" on a prediction's page (templates/predictions/_explain.html).
// Without JavaScript each class button posts and the page returns with that overlay.
// Here: the button asks in the background, the overlay is fetched once computed and laid
// over the photo, the page never reloads and focus stays on the pressed button; a slider
// sets how strongly the heat map covers the photo.
(function () {
  const section = document.getElementById("explain");
  const form = section && section.querySelector(".explain-classes");
  const stack = document.getElementById("photo-stack");
  if (!form || !stack || !window.fetch) return;
  const statusBox = document.getElementById("explain-status");
  const strength = document.getElementById("overlay-strength");
  const slider = document.getElementById("overlay-opacity");
  const shown = document.getElementById("overlay-opacity-value");
  const baseUrl = section.dataset.overlayUrl;
  let wanted = ""; // the class last asked for: a slower answer for an earlier click is dropped

  function overlay() { return stack.querySelector("img.explanation-overlay"); }

  function applyOpacity() {
    const image = overlay();
    shown.textContent = slider.value + " %";
    if (image) image.style.opacity = String(Number(slider.value) / 100); // CSSOM: allowed by the CSP
  }

  function say(text, kind) {
    const line = document.createElement("p");
    line.className = kind || "muted";
    line.textContent = text;
    statusBox.replaceChildren(line);
  }

  function press(button) {
    form.querySelectorAll("button[name=class_id]").forEach((other) => {
      other.setAttribute("aria-pressed", other === button ? "true" : "false");
    });
  }

  function show(button, url) {
    let image = overlay();
    if (!image) {
      image = document.createElement("img");
      image.className = "explanation-overlay";
      stack.append(image);
    }
    image.alt = "Heat map of where the model looked for " + button.dataset.label;
    image.src = url;
    strength.hidden = false;
    applyOpacity();
    const mark = button.querySelector(".mark");
    if (mark) mark.textContent = " ✓";
    say("Heat map of " + button.dataset.label + " shown over the photo.");
  }

  function poll(button, url, delay) {
    if (wanted !== button.value) return;
    fetch(url, { credentials: "same-origin" }).then((response) => {
      if (wanted !== button.value) return;
      if (response.status === 202) return setTimeout(() => poll(button, url, Math.min(delay * 1.4, 3000)), delay);
      if (response.status === 200) return show(button, url);
      return response.text()
        .then((text) => say(text || "The heat map could not be computed.", "error"));
    }, () => setTimeout(() => poll(button, url, 3000), 3000));
  }

  form.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (!button || button.name !== "class_id") return;
    event.preventDefault();
    wanted = button.value;
    press(button); // the button keeps the focus: nothing reloads, nothing is disabled
    const url = baseUrl + "?class_id=" + encodeURIComponent(button.value);
    const query = new URLSearchParams(window.location.search);
    query.set("explain", button.value);
    window.history.replaceState(null, "", "?" + query.toString() + window.location.hash);
    const existing = overlay();
    if (existing && button.querySelector(".mark") && button.querySelector(".mark").textContent.trim()) {
      return show(button, url); // computed before: no need to ask again
    }
    if (existing) existing.remove();
    strength.hidden = true;
    const line = document.createElement("p");
    line.className = "pending";
    line.innerHTML = '<span class="spinner" aria-hidden="true"></span> ';
    line.append("Computing the heat map for " + button.dataset.label + "…");
    statusBox.replaceChildren(line);
    const body = new FormData(form);
    body.set("class_id", button.value);
    fetch(form.action, { method: "POST", body: body, credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then((response) => {
        if (response.status === 202) return poll(button, url, 700);
        return response.text().then((text) => say(text || "The heat map could not be asked for.", "error"));
      }, () => say("The connection failed; try again.", "error"));
  });

  slider.addEventListener("input", applyOpacity);
  if (overlay()) { strength.hidden = false; applyOpacity(); }
  // A page opened while the heat map was being computed (the no-script path): poll it.
  const holder = statusBox.querySelector("[data-explanation-poll]");
  const pressed = form.querySelector("button[aria-pressed=true]");
  if (holder && pressed) { wanted = pressed.value; setTimeout(() => poll(pressed, holder.dataset.explanationPoll, 800), 500); }
})();
