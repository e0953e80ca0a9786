// dfhost dashboard: confirmations, auto-submitting selects, auto-refresh. No dependencies.
"use strict";
(function () {
  // Forms (or their submit buttons) with data-confirm ask first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) { select.form.submit(); }
    });
  });

  // The one-time message of an action is not part of the page's address.
  var url = new URL(window.location.href);
  if (url.searchParams.has("flash")) {
    url.searchParams.delete("flash");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  // Reload every N seconds, unless the user is typing, has a form or popover open, or
  // selected text: a refresh must not throw their work away.
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  function busy() {
    var active = document.activeElement;
    if (active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) { return true; }
    if (document.querySelector("details.popover[open], details.bulk[open]")) { return true; }
    var selection = window.getSelection();
    return Boolean(selection && String(selection).length);
  }
  function tick() {
    if (busy() || document.hidden) {
      window.setTimeout(tick, 1000);
    } else {
      window.location.reload();
    }
  }
  if (seconds > 0) {
    window.setTimeout(tick, seconds * 1000);
  }
})();
