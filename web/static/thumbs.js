// A thumbnail that cannot be shown (the file is not a picture, or is gone) leaves an empty box,
// not the browser's broken-image icon.
(function () {
  function hide(img) { img.classList.add("missing"); img.alt = ""; }
  for (const img of document.querySelectorAll("img.thumb")) {
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) hide(img);
    else img.addEventListener("error", () => hide(img));
  }
})();
