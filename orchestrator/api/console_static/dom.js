// DOM building and formatting. Every piece of data becomes a text node or an
// attribute value set through the DOM: never HTML parsed from a string.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else if (key === "href" && !String(value).startsWith("#")) throw new Error("only in-app links");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// h("a", {href: "#/x", class: "y"}, "text", otherNode)
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

// -- links ------------------------------------------------------------------

export function link(path, ...children) {
  return h("a", { href: "#" + path }, ...children);
}

export function executionPath(id) {
  return "/executions/" + encodeURIComponent(id);
}

export function definitionPath(name, version) {
  return "/definitions/" + encodeURIComponent(name) + (version ? "/" + encodeURIComponent(version) : "");
}

// -- status badges ---------------------------------------------------------

export function badge(status) {
  return h("span", { class: ["badge", "st-" + (status || "unknown")] }, status || "unknown");
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

// -- time --------------------------------------------------------------------

export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

export function relative(ms, now = Date.now()) {
  const diff = now - ms;
  const ahead = diff < 0;
  const s = Math.abs(diff) / 1000;
  let text;
  if (s < 5) return ahead ? "in a moment" : "just now";
  if (s < 60) text = Math.round(s) + " s";
  else if (s < 3600) text = Math.round(s / 60) + " min";
  else if (s < 86400) text = Math.round(s / 3600) + " h";
  else text = Math.round(s / 86400) + " d";
  return ahead ? "in " + text : text + " ago";
}

function pad(n) {
  return String(n).padStart(2, "0");
}

export function localTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// A <time> showing the local time and the age; the ISO value (UTC) in its tooltip.
export function time(iso, { age = true } = {}) {
  const ms = parseTime(iso);
  if (ms === null) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: iso },
    localTime(ms), age ? h("span", { class: "age", dataset: { ms: String(ms) } }, " · " + relative(ms)) : null);
}

// The ages of every <time> on the page move on between refreshes.
export function refreshAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("span.age[data-ms]")) {
    el.textContent = " · " + relative(Number(el.dataset.ms), now);
  }
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return Math.floor(s % 60) ? `${m} min ${pad(Math.floor(s % 60))} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return m % 60 ? `${hours} h ${pad(m % 60)} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function between(startIso, endIso, now = Date.now()) {
  const start = parseTime(startIso);
  if (start === null) return null;
  const end = parseTime(endIso);
  return (end === null ? now : end) - start;
}

export function percent(rate) {
  return rate === null || rate === undefined ? "—" : (rate * 100).toFixed(rate >= 0.999 || rate === 0 ? 0 : 1) + " %";
}

export function count(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

// -- JSON, with secrets masked ----------------------------------------------

// The projection already redacts sealed input ("***"); this also masks any value
// under a key that reads like a secret, wherever it appears (outputs, payloads).
const SECRET_WORDS = new Set(["password", "passwords", "passwd", "secret", "secrets", "token", "tokens",
  "credential", "credentials", "apikey", "apikeys"]);

export function isSecretName(name) {
  const lowered = String(name).toLowerCase();
  if (lowered.includes("password") || lowered.includes("passwd")) return true;
  const words = (String(name).match(/[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+/g) || []).map((w) => w.toLowerCase());
  if (words.some((w) => SECRET_WORDS.has(w))) return true;
  return words.some((w, i) => w === "api" && (words[i + 1] === "key" || words[i + 1] === "keys"));
}

export function mask(value, depth = 0) {
  if (depth > 64 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => mask(v, depth + 1));
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k] = v !== null && isSecretName(k) ? "***" : mask(v, depth + 1);
  return out;
}

// JSON.stringify(value, null, 2), but arrays and objects that fit on one line stay on it
// (a list of 40 numbers is one line, not 40).
function oneLine(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(oneLine).join(", ") + "]";
  return "{" + Object.entries(value).map(([k, v]) => JSON.stringify(k) + ": " + oneLine(v)).join(", ") + "}";
}

export function pretty(value, indent = "") {
  const flat = oneLine(value);
  if (value === null || typeof value !== "object" || flat.length + indent.length <= 72) return flat;
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) { // scalars: fill lines
      const lines = [];
      let line = "";
      for (const v of value.map((x) => JSON.stringify(x))) {
        if (line && line.length + v.length + 2 > 72 - inner.length) {
          lines.push(line + ",");
          line = "";
        }
        line += (line ? ", " : "") + v;
      }
      lines.push(line);
      return "[\n" + lines.map((l) => inner + l).join("\n") + "\n" + indent + "]";
    }
    return "[\n" + value.map((v) => inner + pretty(v, inner)).join(",\n") + "\n" + indent + "]";
  }
  const entries = Object.entries(value).map(([k, v]) => inner + JSON.stringify(k) + ": " + pretty(v, inner));
  return "{\n" + entries.join(",\n") + "\n" + indent + "}";
}

export function jsonBlock(value, { empty = "—" } = {}) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, empty);
  return h("pre", { class: "json" }, pretty(mask(value)));
}

export function truncate(text, n) {
  if (!text) return text;
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}
