// Mends what Swagger UI renders into #swagger-ui, as it renders it (a MutationObserver: an
// operation opened or a response shown is new markup), for axe-core's rules:
// - nested-interactive: each operation's summary is a <button> holding a deep link (<a href>).
//   The link loses its href (so it is no longer a control inside a control); the button
//   still opens the operation and Swagger UI still puts the operation in the URL.
// - scrollable-region-focusable: example and response bodies scroll inside a <pre>; each
//   becomes focusable, so the keyboard can scroll it.
// A static file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  if (!root) return;

  function mend() {
    root.querySelectorAll(".opblock-summary-control a[href]").forEach((link) => {
      link.removeAttribute("href");
    });
    root.querySelectorAll(".highlight-code > pre, pre.microlight").forEach((box) => {
      if (!box.hasAttribute("tabindex")) box.setAttribute("tabindex", "0");
    });
  }

  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    window.requestAnimationFrame(() => {
      queued = false;
      mend();
    });
  }).observe(root, { childList: true, subtree: true });
  mend();
})();
