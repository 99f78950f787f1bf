// The console's shell: the API key, the hash router, and live polling of the visible page.
//
// Each page module exports mount(container, route, ctx) -> {refresh, interval?, unmount?}.
// Only the page on screen is refreshed, every `interval` ms (2 s by default), and not
// at all while the tab is hidden; a refresh never overlaps the previous one.

import { apiKey, get, setApiKey, whenUnauthenticated } from "./api.js";
import { h, refreshAges, replace } from "./dom.js";
import * as executions from "./page-executions.js";
import * as execution from "./page-execution.js";
import * as definitions from "./page-definitions.js";
import * as analytics from "./page-analytics.js";

const main = document.getElementById("main");
const live = document.getElementById("live");
const who = document.getElementById("who");
const dialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyMessage = document.getElementById("key-message");

// What the key may do: {name, role} from GET /whoami; role null when the API does not say.
const ctx = { identity: null, canOperate: () => !ctx.identity || !ctx.identity.role || ctx.identity.role === "operator" };

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/executions";
  const [path, search] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(search || ""), hash };
}

function pageFor(parts) {
  switch (parts[0]) {
    case "executions": return parts[1] ? execution : executions;
    case "definitions": return definitions;
    case "analytics": return analytics;
    default: return executions;
  }
}

let current = null; // {page, token, timer}
let token = 0;

function setLive(state, text) {
  live.className = "live " + state;
  live.textContent = text;
}

async function poll(mine) {
  if (!current || current.token !== mine) return;
  if (document.hidden) {
    setLive("paused", "paused while hidden");
    return; // visibilitychange starts it again
  }
  clearTimeout(current.timer);
  current.timer = null;
  current.busy = true;
  try {
    await current.page.refresh();
    if (!current || current.token !== mine) return;
    refreshAges(main);
    setLive("ok", "live · " + new Date().toLocaleTimeString());
  } catch (err) {
    if (!current || current.token !== mine || err.name === "AbortError") return;
    setLive("error", err.status === 401 ? "needs an API key" : "error: " + err.message);
  } finally {
    if (current && current.token === mine) {
      current.busy = false;
      current.timer = setTimeout(() => poll(mine), current.page.interval || 2000);
    }
  }
}

function render() {
  if (current) {
    clearTimeout(current.timer);
    if (current.page.unmount) current.page.unmount();
    current = null;
  }
  if (!apiKey()) { // nothing to show without a key; the dialog asks for one
    replace(main, h("p", { class: "muted" }, "Enter an API key to use the console."));
    setLive("paused", "no key");
    return;
  }
  const route = parseRoute();
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.section === (route.parts[0] || "executions"));
  }
  const container = h("div", { class: "page" });
  replace(main, container);
  const mine = ++token;
  const page = pageFor(route.parts).mount(container, route, ctx);
  current = { page, token: mine, timer: null, busy: false };
  poll(mine);
}

// Pages call this after an action (a button, a filter) to show its effect now.
ctx.refreshNow = () => {
  if (current && !current.busy) poll(current.token);
};
ctx.navigate = (hash) => {
  if (location.hash === "#" + hash) render();
  else location.hash = hash;
};

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && current && !current.busy) poll(current.token);
});
window.addEventListener("hashchange", render);

// -- the API key ----------------------------------------------------------------

function askForKey(message) {
  keyMessage.textContent = message || "";
  keyInput.value = "";
  if (!dialog.open) dialog.showModal();
  keyInput.focus();
}

async function identify() {
  try {
    ctx.identity = await get("/whoami");
  } catch (err) {
    // No whoami route: roles are unknown, buttons show and a 403 explains itself.
    ctx.identity = err.status === 404 || err.status === 405 ? { name: null, role: null } : null;
    if (err.status === 401) return false;
  }
  replace(who, ctx.identity && ctx.identity.name
    ? [h("span", { class: "muted" }, "key "), ctx.identity.name, ctx.identity.role ? ` (${ctx.identity.role})` : ""]
    : "");
  return true;
}

whenUnauthenticated((err) => askForKey(`The API refused the key: ${err.message}`));

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setApiKey(key);
  dialog.close();
  if (await identify()) render();
});

document.getElementById("change-key").addEventListener("click", () => askForKey("Enter another API key."));
document.getElementById("forget-key").addEventListener("click", () => {
  setApiKey(null);
  ctx.identity = null;
  replace(who);
  render();
  askForKey("The key was removed from this browser.");
});

render();
if (!apiKey()) askForKey("The console reads the API with your key; it stays in this browser (localStorage).");
else identify();
