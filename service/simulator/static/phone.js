// The simulated phone: posts texts to the same use case as the Twilio webhook, polls the thread.
(function () {
  const thread = document.getElementById("thread");
  const form = document.getElementById("compose");
  const body = document.getElementById("body");
  const from = document.getElementById("from");
  const to = document.getElementById("to");
  const base = location.pathname.replace(/\/$/, "");

  function bubble(text, cls, note) {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;  // textContent: patient and service text is never parsed as HTML
    if (note) { const s = document.createElement("small"); s.textContent = note; li.appendChild(s); }
    thread.appendChild(li);
  }

  async function refresh() {
    const q = new URLSearchParams({ from: from.value, to: to.value });
    const r = await fetch(base + "/api/messages?" + q);
    if (!r.ok) return;
    const data = await r.json();
    thread.textContent = "";
    for (const m of data.messages) bubble(m.body, m.direction === "in" ? "in" : "out", m.status === "replied" ? "" : m.status);
    for (const p of data.pending) bubble(p.body, "pending", "held until " + new Date(p.not_before).toLocaleString());
    thread.scrollTop = thread.scrollHeight;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = body.value;
    body.value = "";
    const r = await fetch(base + "/api/send", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ from: from.value, to: to.value, body: text }),
    });
    if (!r.ok) { bubble((await r.json()).error || "error", "pending"); return; }
    await refresh();
  });
  from.addEventListener("change", refresh);
  to.addEventListener("change", refresh);
  refresh();
  setInterval(refresh, 3000);
})();
