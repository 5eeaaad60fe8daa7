// Small enhancements shared by every page; each page works without them.
(function () {
  // Times: the server renders them in the zone of the `tz` cookie (else the server's).
  // Store the browser's zone; on the first page, rewrite the times already shown.
  let zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (error) { zone = ""; }
  const current = (document.cookie.match(/(?:^|;\s*)tz=([^;]*)/) || [])[1];
  // IANA names ("Asia/Tokyo") are cookie-safe as they are: stored unencoded, read as is.
  if (/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone) && current !== zone) {
    document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
    const pad = (n) => String(n).padStart(2, "0");
    document.querySelectorAll("time[datetime]").forEach((element) => {
      const moment = new Date(element.getAttribute("datetime"));
      if (isNaN(moment)) return;
      const day = moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate());
      const text = element.textContent.trim().length > 10 ? day + " " + pad(moment.getHours()) + ":" + pad(moment.getMinutes()) : day;
      element.textContent = text;
      element.title = text + " (" + zone + ")";
    });
    document.querySelectorAll("[data-time-zone]").forEach((element) => { element.textContent = zone; });
  }

  function enhance(root) {
    // Buttons that destroy something ask first (the form still posts without JavaScript).
    root.querySelectorAll("[data-confirm]").forEach((button) => {
      if (button.dataset.confirmBound) return;
      button.dataset.confirmBound = "1";
      button.addEventListener("click", (event) => {
        if (!window.confirm(button.dataset.confirm)) event.preventDefault();
      });
    });
    // Copy buttons: shown only where the clipboard is available.
    root.querySelectorAll("[data-copy-target]").forEach((button) => {
      const target = document.getElementById(button.dataset.copyTarget);
      if (!target || !navigator.clipboard || button.dataset.copyBound) return;
      button.dataset.copyBound = "1";
      button.hidden = false;
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(target.textContent.trim());
          button.textContent = "Copied";
          window.imagerec.announce("Copied to the clipboard");
        } catch (error) {
          button.textContent = "Copy failed: select the text";
        }
        setTimeout(() => { button.textContent = button.dataset.label || "Copy"; }, 2000);
      });
    });
  }

  window.imagerec = Object.assign(window.imagerec || {}, {
    enhance: enhance,
    announce: function (text) {
      const region = document.getElementById("announcer");
      if (!region) return;
      region.textContent = "";
      setTimeout(() => { region.textContent = text; }, 50);
    },
  });
  // Keyboard focus kept after an action: a form posts, the server answers with a redirect
  // to the same page at the element acted on (#review-…, #row-…, #explain); focus it, so
  // the next Tab continues from there instead of from the top of the page.
  function focusTarget() {
    if (!window.location.hash || window.location.hash.length < 2) return;
    let target = null;
    try { target = document.getElementById(decodeURIComponent(window.location.hash.slice(1))); } catch (error) { return; }
    if (!target) return;
    if (!target.matches("a, button, input, select, textarea, summary, [tabindex]")) target.setAttribute("tabindex", "-1");
    target.focus({ preventScroll: false });
  }

  document.addEventListener("DOMContentLoaded", () => { enhance(document); focusTarget(); });
})();
