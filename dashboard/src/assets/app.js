// quern dashboard: confirmations in a dialog, and live pages. Everything
// works without this file: actions then ask on a confirmation page.
"use strict";
document.addEventListener("submit", function (e) {
  var form = e.target;
  var question = form.getAttribute("data-confirm");
  if (!question) return;
  if (!window.confirm(question)) {
    e.preventDefault();
    return;
  }
  var yes = document.createElement("input");
  yes.type = "hidden";
  yes.name = "confirm";
  yes.value = "yes";
  form.appendChild(yes);
});
(function () {
  var main = document.querySelector("main[data-live]");
  if (!main) return;
  var every = parseInt(main.getAttribute("data-live"), 10) || 5000;
  function refresh() {
    var busy = document.activeElement && main.contains(document.activeElement) &&
      /INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName);
    if (busy || document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (fresh) main.innerHTML = fresh.innerHTML;
      })
      .catch(function () {});
  }
  setInterval(refresh, every);
})();
