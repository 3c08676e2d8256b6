// Staff dashboard: keeps the alert queue fresh by polling a small JSON endpoint.
// Served as a file because the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function typing(container) {
    var active = document.activeElement;
    if (active && container.contains(active) && active.tagName === "INPUT") return true;
    var inputs = container.querySelectorAll("input[name=note]");
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value) return true;
    }
    return false;
  }

  // A keyboard user working the queue keeps their place when it refreshes: the same control
  // of the same alert gets the focus back (or the queue itself, when that alert is gone).
  function focusKey(container) {
    var active = document.activeElement;
    if (!active || active === container || !container.contains(active)) return null;
    var card = active.closest("[data-alert-id]");
    var control = active.getAttribute("data-control");
    return card && control ? { id: card.getAttribute("data-alert-id"), control: control } : {};
  }

  function refocus(container, key) {
    if (!key) return;
    var el = key.id && container.querySelector(
      '[data-alert-id="' + key.id + '"] [data-control="' + key.control + '"]');
    if (!el) { container.setAttribute("tabindex", "-1"); el = container; }
    el.focus();
  }

  function startQueue(container) {
    var url = container.getAttribute("data-poll-url");
    var every = parseInt(container.getAttribute("data-poll-ms"), 10) || 5000;
    var notice = document.getElementById("queue-notice");
    var baseTitle = document.title;

    function known() {
      var ids = {};
      container.querySelectorAll("[data-alert-id]").forEach(function (el) {
        ids[el.getAttribute("data-alert-id")] = true;
      });
      return ids;
    }

    function update(data) {
      data.alerts.forEach(function (alert) {
        var age = container.querySelector('[data-age-for="' + alert.id + '"]');
        if (age) age.textContent = alert.raised_ago;
        var clock = container.querySelector('[data-time-for="' + alert.id + '"]');
        if (clock) clock.textContent = alert.patient_time;
      });
      document.title = (data.emergency ? "(" + data.emergency + " EMERGENCY) " :
        (data.count ? "(" + data.count + ") " : "")) + baseTitle;
      if (!data.html || data.signature === container.getAttribute("data-signature")) return;
      if (typing(container)) {
        notice.textContent = "The queue has changed: it will refresh when you finish your note.";
        notice.hidden = false;
        return;
      }
      var before = known();
      var focused = focusKey(container);
      container.innerHTML = data.html;  // server-rendered and escaped by the template engine
      container.setAttribute("data-signature", data.signature);
      refocus(container, focused);
      notice.hidden = true;
      var fresh = 0;
      container.querySelectorAll("[data-alert-id]").forEach(function (el) {
        if (!before[el.getAttribute("data-alert-id")]) { el.classList.add("is-new"); fresh++; }
      });
      if (fresh) {
        notice.textContent = fresh + " new alert" + (fresh > 1 ? "s" : "") + " arrived.";
        notice.hidden = false;
      }
    }

    function poll() {
      var since = encodeURIComponent(container.getAttribute("data-signature") || "");
      fetch(url + "?since=" + since, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(update)
        .catch(function () { /* try again at the next tick */ })
        .then(function () { window.setTimeout(poll, every); });
    }

    window.setTimeout(poll, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var queue = document.getElementById("alert-queue");
    if (queue) startQueue(queue);
  });
})();
