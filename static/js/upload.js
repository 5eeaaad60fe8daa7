// The upload page, enhanced: pick or drop many images, see previews, check type and
// size before sending, send each file on its own with a progress bar, show each result
// as it finishes, and keep every file that was refused so it can be fixed or removed.
// Without JavaScript the form posts all files at once and the server answers with a page.
(function () {
  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  if (!form || !zone || !window.XMLHttpRequest || !window.FormData) return;
  const input = zone.querySelector("input[type=file]");
  const previews = document.getElementById("previews");
  const errors = document.getElementById("upload-errors");
  const submit = document.getElementById("submit");
  const clear = document.getElementById("clear-selection");
  const status = document.getElementById("upload-status");
  const results = document.getElementById("upload-results");
  const cards = document.getElementById("upload-cards");
  const maxBytes = Number(form.dataset.maxBytes);
  const maxFiles = Number(form.dataset.maxFiles);
  const types = form.dataset.types.split(" ");
  const extensions = form.dataset.extensions.split(" ");
  const CONCURRENCY = 2;
  let items = []; // {file, element, progress, note, error, sent}
  let sending = false;

  document.querySelectorAll(".no-js-note").forEach((note) => note.remove());
  zone.classList.add("enhanced");

  function sizeText(bytes) {
    const mb = bytes / 1048576;
    return mb >= 0.1 ? mb.toFixed(1).replace(/\.0$/, "") + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
  }

  function problem(file) {
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    const typeOk = file.type ? types.includes(file.type) : extensions.includes(extension);
    if (!typeOk) return "not a supported image type (" + (file.type || "." + extension) + ")";
    if (file.size > maxBytes) return "the file is " + sizeText(file.size) + "; the limit is " + form.dataset.maxSize;
    if (file.size === 0) return "the file is empty";
    return "";
  }

  // One sentence per refused file, in one place (the list above the previews), each
  // starting with a capital whether the reason came from this script or the server.
  function sentence(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function showErrors() {
    const messages = items.filter((item) => item.error).map((item) => item.file.name + ": " + sentence(item.error));
    errors.querySelector("ul").replaceChildren(...messages.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    errors.hidden = messages.length === 0;
  }

  function refresh() {
    const pending = items.filter((item) => !item.sent);
    const valid = pending.filter((item) => !item.error);
    submit.disabled = sending || valid.length === 0;
    submit.textContent = sending ? "Sending…" : valid.length > 1 ? "Classify " + valid.length + " images" : "Classify";
    clear.hidden = sending || pending.length === 0;
    form.setAttribute("aria-busy", sending ? "true" : "false");
    showErrors();
  }

  function render(item) {
    const li = document.createElement("li");
    li.className = "preview";
    const placeholder = document.createElement("span");
    placeholder.className = "no-preview";
    placeholder.textContent = "No preview";
    let img = placeholder;
    if (!item.error) {
      img = document.createElement("img");
      img.alt = "";
      img.src = URL.createObjectURL(item.file);
      img.onload = () => URL.revokeObjectURL(img.src);
      img.onerror = () => { URL.revokeObjectURL(img.src); img.replaceWith(placeholder); };
    }
    const name = document.createElement("span");
    name.className = "preview-name";
    name.textContent = item.file.name;
    name.title = item.file.name;
    const note = document.createElement("span");
    note.className = "preview-note";
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.hidden = true;
    progress.setAttribute("aria-label", "Upload of " + item.file.name);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + item.file.name);
    remove.addEventListener("click", () => {
      // Focus goes to the next preview's Remove (else the previous one's, else the file
      // control), never lost with the removed button.
      const next = li.nextElementSibling || li.previousElementSibling;
      items = items.filter((other) => other !== item);
      li.remove();
      refresh();
      const target = next && next.querySelector(".remove:not([hidden])");
      (target || input).focus();
    });
    li.append(img, name, progress, note, remove);
    Object.assign(item, { element: li, progress: progress, note: note, remove: remove });
    setNote(item);
    previews.append(li);
  }

  function setNote(item) {
    item.element.classList.toggle("invalid", Boolean(item.error));
    // The reason is in the error list; the preview only says it was refused.
    item.note.textContent = item.error ? "Refused (see above)" : item.sent ? "Sent" : sizeText(item.file.size);
  }

  function add(files) {
    for (const file of files) {
      if (items.some((item) => !item.sent && item.file.name === file.name && item.file.size === file.size
          && item.file.lastModified === file.lastModified)) continue;
      const item = { file: file, error: problem(file), sent: false };
      if (!item.error && items.filter((other) => !other.sent && !other.error).length >= maxFiles) {
        item.error = "more than " + maxFiles + " images at a time; send these first";
      }
      render(item);
      items.push(item);
    }
    input.value = ""; // the list above is the selection; the input only adds to it
    refresh();
  }

  function send(item) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
      data.append("top_k", form.querySelector("[name=top_k]").value);
      data.append("images", item.file, item.file.name);
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("X-Requested-With", "fetch");
      item.progress.hidden = false;
      item.progress.value = 0;
      item.remove.hidden = true;
      item.note.textContent = "Sending…";
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) item.progress.value = Math.round((100 * event.loaded) / event.total);
      });
      request.addEventListener("load", () => {
        const holder = document.createElement("div");
        holder.innerHTML = request.responseText;
        const newCards = holder.querySelectorAll(".card");
        if (request.status < 300 && newCards.length) {
          item.sent = true;
          item.progress.value = 100;
          results.hidden = false;
          newCards.forEach((card) => {
            cards.prepend(card);
            window.imagerec.enhance(card);
            window.imagerec.watch(card);
          });
          setTimeout(() => item.element.remove(), 1500);
        } else {
          const refusal = holder.querySelector(".upload-error") || holder.querySelector(".errorlist li");
          item.error = refusal ? refusal.textContent.replace(item.file.name + ": ", "")
            : request.status === 403 ? "your session ended: log in again" : "the server answered " + request.status;
          item.progress.hidden = true;
          item.remove.hidden = false;
        }
        setNote(item);
        resolve();
      });
      request.addEventListener("error", () => {
        item.error = "the connection failed; try again";
        item.progress.hidden = true;
        item.remove.hidden = false;
        setNote(item);
        resolve();
      });
      request.send(data);
    });
  }

  async function sendAll() {
    const queue = items.filter((item) => !item.sent && !item.error);
    if (!queue.length || sending) return;
    sending = true;
    refresh();
    status.textContent = "Sending " + queue.length + " image" + (queue.length === 1 ? "" : "s") + "…";
    const workers = Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
      while (queue.length) await send(queue.shift());
    });
    await Promise.all(workers);
    sending = false;
    const sent = items.filter((item) => item.sent).length;
    const refused = items.filter((item) => item.error).length;
    items = items.filter((item) => !item.sent);
    status.textContent = sent + " sent" + (refused ? ", " + refused + " refused (see above)" : "") + ". Results appear below as they finish.";
    window.imagerec.announce(status.textContent);
    refresh();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendAll();
  });
  input.addEventListener("change", () => add(input.files));
  clear.addEventListener("click", () => {
    items = items.filter((item) => item.sent);
    previews.replaceChildren(...items.map((item) => item.element));
    refresh();
  });
  ["dragenter", "dragover"].forEach((name) =>
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((name) =>
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (event) => add(event.dataTransfer.files));
  // Files chosen before this script ran (a quick pick while the page loads, or a
  // selection the browser restored on "back") had their change event already: take them.
  if (input.files.length) add(input.files);
  else refresh();
})();
