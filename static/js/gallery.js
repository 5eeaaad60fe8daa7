// The history's gallery (templates/predictions/history.html), enhanced: a count of the
// ticked pictures, "Select all shown", a delete confirmation that says how many, and the
// next page's tiles appended as the person scrolls down (the "Older" link stays the
// fallback without JavaScript, and for keyboards: it is a plain link).
(function () {
  const form = document.getElementById("selection");
  if (!form) return;
  const count = document.getElementById("selection-count");
  const selectAll = document.getElementById("select-all");
  const deleteButton = form.querySelector("button[value=delete]");
  const actions = form.querySelectorAll("button[type=submit]");
  const boxes = () => Array.from(document.querySelectorAll("input[type=checkbox][form=selection]"));

  function update() {
    const ticked = boxes().filter((box) => box.checked);
    const n = ticked.length;
    count.textContent = n ? n + " selected" : "Tick pictures to act on several at once.";
    actions.forEach((button) => { button.disabled = n === 0; });
    deleteButton.dataset.confirm = "Delete " + (n === 1 ? "this prediction" : "these " + n + " predictions")
      + " and " + (n === 1 ? "its image" : "their images") + "? This cannot be undone.";
    boxes().forEach((box) => {
      const tile = box.closest(".card, tr");
      if (tile) tile.classList.toggle("selected", box.checked);
    });
    const all = boxes();
    selectAll.textContent = all.length && all.every((box) => box.checked) ? "Select none" : "Select all shown";
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches && event.target.matches("input[type=checkbox][form=selection]")) update();
  });
  selectAll.hidden = false;
  selectAll.addEventListener("click", () => {
    const all = boxes();
    const tick = !all.every((box) => box.checked);
    all.forEach((box) => { box.checked = tick; });
    update();
    window.imagerec.announce(count.textContent);
  });
  update();

  // Infinite scroll (grid only): fetch the next page, append its tiles, move its pager here.
  const gallery = document.getElementById("gallery");
  if (!gallery || !("IntersectionObserver" in window)) return;
  let loading = false;
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) more();
  }, { rootMargin: "600px 0px" });

  function watchPager() {
    const older = document.querySelector(".pager a.older");
    if (older) observer.observe(older);
  }

  async function more() {
    const older = document.querySelector(".pager a.older");
    if (!older || loading) return;
    loading = true;
    observer.unobserve(older);
    try {
      const response = await fetch(older.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const tiles = page.querySelectorAll("#gallery > .card");
      tiles.forEach((tile) => {
        const adopted = document.importNode(tile, true);
        gallery.append(adopted);
        if (window.imagerec.watch) window.imagerec.watch(adopted);
      });
      const pager = document.querySelector(".pager");
      const next = page.querySelector(".pager");
      if (pager && next) {
        // The "Newer" link of later pages is not needed: every newer tile is above.
        next.querySelectorAll("a[rel=prev]").forEach((link) => link.remove());
        pager.replaceWith(document.importNode(next, true));
      }
      window.imagerec.announce(tiles.length + " more pictures loaded");
      update();
    } finally {
      loading = false;
      watchPager();
    }
  }
  watchPager();
})();
