// The explanation section of a prediction's page (templates/predictions/_explain.html).
// Swap the overlay in once the worker has computed it (without JavaScript: the Refresh link).
(function () {
  var holder = document.querySelector("[data-explanation-poll]");
  if (!holder) return;
  function poll() {
    fetch(holder.dataset.explanationPoll, { credentials: "same-origin" }).then(function (response) {
      if (response.status === 202) return setTimeout(poll, 1500);
      if (response.status !== 200) return window.location.reload();
      var image = document.createElement("img");
      image.className = "explanation-overlay";
      image.src = holder.dataset.explanationPoll;
      image.alt = holder.dataset.alt;
      holder.replaceWith(image);
      // The class's button gets the mark a reloaded page gives a computed explanation.
      var pressed = document.querySelector(".explain-classes [aria-pressed=true]");
      if (pressed && pressed.textContent.indexOf("✓") < 0) pressed.append(" ✓");
    }, function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 1000);
})();
