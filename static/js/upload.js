// Drag-and-drop onto the file input, with a preview of each chosen image.
(function () {
  const zone = document.getElementById("dropzone");
  const input = zone && zone.querySelector("input[type=file]");
  const previews = document.getElementById("previews");
  if (!zone || !input) return;

  function showPreviews(files) {
    previews.replaceChildren();
    for (const file of files) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = file.name;
      img.src = URL.createObjectURL(file);
      const caption = document.createElement("figcaption");
      caption.textContent = file.name;
      figure.append(img, caption);
      previews.append(figure);
    }
  }

  input.addEventListener("change", () => showPreviews(input.files));
  ["dragenter", "dragover"].forEach((name) =>
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((name) =>
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (event) => {
    input.files = event.dataTransfer.files;
    showPreviews(input.files);
  });
})();
