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
    for (const m of data.messages) {
      const note = m.channel === "voice" ? (m.direction === "in" ? "on the call" : "spoken") :
        (m.status === "replied" ? "" : m.status);
      bubble(m.body, (m.direction === "in" ? "in" : "out") + (m.channel === "voice" ? " voice" : ""), note);
    }
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
  // A phone call, walked as text: the keypad sends digits (a one-key menu at once, numbers on #).
  const keypad = document.getElementById("keypad");
  const callState = document.getElementById("call-state");
  let call = null, typed = "";

  async function post(path, data) {
    const r = await fetch(base + path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
    });
    const turn = await r.json();
    if (!r.ok) { bubble(turn.error || "error", "pending"); return; }
    call = turn.ended ? null : turn;
    typed = "";
    keypad.hidden = !call;
    callState.textContent = turn.dial ? "connected to " + turn.dial + " (call ends here)" :
      call ? "listening: " + call.listening.keys + ", or words" : "call ended";
    await refresh();
  }
  const send = (data) => call && post("/api/call/input", { call_sid: call.call_sid, ...data });

  document.getElementById("call").addEventListener("click", () =>
    post("/api/call", { from: from.value, to: to.value }));
  for (const key of keypad.querySelectorAll("[data-key]")) {
    key.addEventListener("click", () => {
      if (!call) return;
      const k = key.dataset.key;
      if (k === "#") { send({ digits: typed }); return; }
      typed += k;
      callState.textContent = "pressed " + typed.split("").join(" ");
      if (call.listening.keys === "one key") send({ digits: typed });
    });
  }
  document.getElementById("speak").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const words = document.getElementById("words");
    send({ speech: words.value });
    words.value = "";
  });
  document.getElementById("silent").addEventListener("click", () => send({ silence: true }));
  document.getElementById("hangup").addEventListener("click", () => send({ hangup: true }));

  from.addEventListener("change", refresh);
  to.addEventListener("change", refresh);
  refresh();
  setInterval(refresh, 3000);
})();
