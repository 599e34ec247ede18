// shapetrace sweep report: hovering or focusing a size shows its first break in #size-info.
(function () {
  "use strict";
  const info = document.getElementById("size-info");
  function show(event) {
    const cell = event.target.closest(".cell");
    if (!cell) return;
    const config = cell.closest(".config").dataset.config;
    const outcome = cell.dataset.kind ? cell.dataset.kind + " break at " + cell.dataset.place : "aligned";
    info.textContent = "size " + cell.dataset.size + " · " + config + " · " + outcome;
    info.className = cell.dataset.kind ? "bad" : "ok";
  }
  document.addEventListener("mouseover", show);
  document.addEventListener("focusin", show);
})();
