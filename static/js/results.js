// Refresh each pending result card until its prediction is final.
(function () {
  async function poll(card) {
    try {
      const response = await fetch(card.dataset.pollUrl, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        const holder = document.createElement("div");
        holder.innerHTML = (await response.text()).trim();
        const fresh = holder.firstElementChild;
        card.replaceWith(fresh);
        card = fresh;
      }
    } catch (error) {
      // A network hiccup: try again on the next tick.
    }
    if (card.dataset.pending === "true") setTimeout(() => poll(card), 1000);
  }
  document.querySelectorAll(".card[data-pending=true]").forEach((card) => setTimeout(() => poll(card), 500));
})();
