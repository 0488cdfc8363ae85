// Lessor console: the viewer's time zone beside each UTC time, and the live preview of a cron
// schedule on the static-role form. Loaded from 'self' (no inline script: see the CSP).
"use strict";

function showLocalTimes(root) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  for (const el of root.querySelectorAll("time[datetime]")) {
    if (el.querySelector(".local")) continue;
    const t = new Date(el.getAttribute("datetime"));
    if (isNaN(t)) continue;
    const span = document.createElement("span");
    span.className = "local";
    span.textContent = " (" + t.toLocaleString() + " " + zone + ")";
    el.appendChild(span);
  }
}

function schedulePreview() {
  const schedule = document.getElementById("rotation_schedule");
  const windowField = document.getElementById("rotation_window");
  const output = document.getElementById("schedule-preview");
  if (!schedule || !output) return;
  let timer = null;
  let asked = 0;
  async function update() {
    const text = schedule.value.trim();
    const ask = ++asked;
    if (!text) {
      schedule.setCustomValidity("");
      output.className = "";
      output.textContent = "";
      return;
    }
    const query = new URLSearchParams({ schedule: text, window: windowField ? windowField.value.trim() : "" });
    try {
      const response = await fetch("/ui/schedule-preview?" + query, { credentials: "same-origin" });
      const body = await response.json();
      if (ask !== asked) return; // a later keystroke already asked again
      output.textContent = "";
      if (!response.ok) {
        schedule.setCustomValidity(body.error || "invalid schedule");
        output.className = "invalid";
        output.textContent = body.error || "invalid schedule";
        return;
      }
      schedule.setCustomValidity("");
      output.className = "valid";
      const words = document.createElement("p");
      words.textContent = "Rotates " + body.words + ". Next five times:";
      const list = document.createElement("ol");
      list.id = "preview-times";
      for (const t of body.next) {
        const li = document.createElement("li");
        const time = document.createElement("time");
        time.setAttribute("datetime", t);
        time.textContent = t.replace("T", " ").replace(/\+00:00$|Z$/, " UTC");
        li.appendChild(time);
        list.appendChild(li);
      }
      output.appendChild(words);
      output.appendChild(list);
      showLocalTimes(output);
    } catch (e) {
      output.textContent = "Preview unavailable: " + e;
    }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(update, 250); };
  schedule.addEventListener("input", later);
  if (windowField) windowField.addEventListener("input", later);
  const form = schedule.form;
  if (form) {
    // An invalid schedule is refused before submit: the browser blocks a field with a custom
    // validity message and shows it.
    form.addEventListener("submit", (event) => {
      if (!schedule.checkValidity()) {
        event.preventDefault();
        schedule.reportValidity();
      }
    });
  }
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  showLocalTimes(document);
  schedulePreview();
});
