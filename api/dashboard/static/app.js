// OpenSend dashboard: live updates and keyboard shortcuts. Every page works without this file.
"use strict";

(function () {
  const body = document.body;
  const prefix = body.dataset.prefix || "/dashboard";

  // Copy buttons stay hidden without JavaScript (nothing to copy with then).
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (_error) {
        window.getSelection().selectAllChildren(source);
        button.textContent = "Press Ctrl+C";
      }
    });
  }

  // -- live updates: Server-Sent Events about this email or webhook -> the changed parts re-read
  const liveEmail = body.dataset.liveEmail;
  const liveWebhook = body.dataset.liveWebhook;
  async function refresh() {
    // A page answered to a POST (a rotated secret) names the address to re-read it from.
    const address = body.dataset.liveUrl || window.location.href;
    const response = await fetch(address, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ["conversation", "deliveries", "timeline", "webhook-state", "webhook-events"]) {
      const now = document.getElementById(id);
      const next = fresh.getElementById(id);
      if (now && next) now.replaceWith(document.adoptNode(next));
    }
    body.dataset.liveUpdates = String(Number(body.dataset.liveUpdates || "0") + 1);
  }
  const watched = { reply: liveEmail, delivery: liveEmail, attempt: liveWebhook };
  if ((liveEmail || liveWebhook) && window.EventSource) {
    const events = new EventSource(prefix + "/events");
    events.addEventListener("ready", () => { body.dataset.live = "ready"; });
    for (const [kind, id] of Object.entries(watched)) {
      events.addEventListener(kind, (event) => {
        if (id && event.data === id) refresh();
      });
    }
    events.addEventListener("error", () => { body.dataset.live = "reconnecting"; });
  }

  // -- the reply composer: posted in the background, the conversation re-read in place -------
  for (const form of document.querySelectorAll("form[data-compose]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = form.querySelector("[data-compose-status]");
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status.textContent = "Sending…";
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: new FormData(form),
          credentials: "same-origin",
          headers: { "Accept": "application/json", "X-CSRF-Token": body.dataset.csrf },
        });
        const answer = await response.json();
        if (!response.ok) {
          status.textContent = answer.message || "The reply was not sent.";
          return;
        }
        status.textContent = "Sent.";
        form.querySelector("textarea").value = "";
        // The next reply is another email: it needs a key of its own.
        form.querySelector("input[name=idempotency_key]").value = crypto.randomUUID();
        await refresh();
      } catch (_error) {
        status.textContent = "The reply could not be sent; nothing was lost. Try again.";
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- keyboard shortcuts -------------------------------------------------------------------
  const help = document.getElementById("help");
  function items() {
    return Array.from(document.querySelectorAll("[data-item]"));
  }
  function select(delta) {
    const all = items();
    if (all.length === 0) return;
    const current = all.findIndex((item) => item.classList.contains("selected"));
    const next = current < 0 ? (delta > 0 ? 0 : all.length - 1)
      : Math.min(all.length - 1, Math.max(0, current + delta));
    if (current >= 0) all[current].classList.remove("selected");
    all[next].classList.add("selected");
    all[next].scrollIntoView({ block: "nearest" });
  }
  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      if (help && !help.hidden) { help.hidden = true; return; }
      if (typing(event.target)) { event.target.blur(); return; }
      const back = document.querySelector("[data-back]");
      if (back) window.location.href = back.href;
      return;
    }
    if (typing(event.target)) return;
    if (event.key === "/") {
      const search = document.querySelector("[data-search]");
      if (search) { event.preventDefault(); search.focus(); }
    } else if (event.key === "j") {
      select(1);
    } else if (event.key === "k") {
      select(-1);
    } else if (event.key === "Enter") {
      const selected = document.querySelector("[data-item].selected");
      if (!selected) return;
      const link = selected.matches("a") ? selected : selected.querySelector("a[href]");
      if (link) { event.preventDefault(); window.location.href = link.href; }
      else if (selected.matches("details")) selected.open = !selected.open;
    } else if (event.key === "?") {
      if (help) help.hidden = !help.hidden;
    }
  });
})();
