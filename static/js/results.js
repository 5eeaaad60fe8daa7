// Refresh each pending result until its prediction is final, then announce it.
// Cards (results and upload pages) are replaced by the fresh card; the detail page reloads.
(function () {
  function announce(text) {
    const region = document.getElementById("announcer");
    if (!region || !text) return;
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50);
  }

  async function poll(element, delay) {
    let fresh = null;
    try {
      const response = await fetch(element.dataset.pollUrl, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        const holder = document.createElement("div");
        holder.innerHTML = (await response.text()).trim();
        fresh = holder.firstElementChild;
      }
    } catch (error) {
      // A network hiccup: try again on the next tick.
    }
    if (fresh && fresh.dataset.pending !== "true") {
      announce("Result ready. " + (fresh.dataset.summary || ""));
      if (element.dataset.reloadWhenFinal === "true") {
        window.location.reload();
        return;
      }
      element.replaceWith(fresh);
      if (window.imagerec && window.imagerec.enhance) window.imagerec.enhance(fresh);
      return;
    }
    setTimeout(() => poll(element, Math.min(delay * 1.3, 3000)), delay);
  }

  function watch(element) {
    if (element.dataset.pending === "true") setTimeout(() => poll(element, 800), 500);
  }

  window.imagerec = Object.assign(window.imagerec || {}, { watch: watch, announce: announce });
  document.querySelectorAll("[data-poll-url][data-pending=true]").forEach(watch);
})();
