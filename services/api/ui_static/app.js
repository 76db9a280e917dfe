// The dashboard shell: the token form, the navigation, the hash router (#/jobs, #/job/<id>, ...), the
// live event feed, and one view at a time mounted in <main>. Each view module exports
// `render(ctx)`, which may return `{onEvent(envelope), refresh()}` for live updates.

import { ApiError, LiveFeed, clearToken, getToken, setToken } from "./api.js";
import { h, mount, notice } from "./dom.js";
import * as agents from "./view_agents.js";
import * as dead from "./view_dead.js";
import * as job from "./view_job.js";
import * as jobs from "./view_jobs.js";
import * as pipelines from "./view_pipelines.js";
import * as plugins from "./view_plugins.js";
import * as schedules from "./view_schedules.js";

const ROUTES = [
  { name: "jobs", label: "Jobs", view: jobs, nav: true },
  { name: "dead", label: "Dead letters", view: dead, nav: true },
  { name: "pipelines", label: "Pipelines", view: pipelines, nav: true },
  { name: "schedules", label: "Schedules", view: schedules, nav: true },
  { name: "plugins", label: "Plugins", view: plugins, nav: true },
  { name: "agents", label: "Agents", view: agents, nav: true },
  { name: "job", label: "Job", view: job, nav: false, parent: "jobs" },
];

const $ = (id) => document.getElementById(id);
let current = null; // {route, handle}
let renderSeq = 0;

/** The route of a hash: #/<name>/<arg...>?<query>. */
export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, search = ""] = text.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const route = ROUTES.find((r) => r.name === parts[0]) || ROUTES[0];
  return { route, args: parts.slice(1), query: new URLSearchParams(search) };
}

export function navigate(path, query) {
  const search = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null)).toString() : "";
  const target = `#/${path}${search ? `?${search}` : ""}`;
  if (location.hash === target) route();
  else location.hash = target;
}

// --- the token form --------------------------------------------------------------------------------------

function showTokenForm(message, kind = "error") {
  const dialog = $("token-dialog");
  const input = h("input", {
    id: "token-input",
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "hr_… (Authorization: Bearer token)",
    required: true,
  });
  const form = h(
    "form",
    {
      class: "token-form",
      onsubmit: (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        setToken(token);
        dialog.hidden = true;
        updateSession();
        live.restart();
        route();
      },
    },
    h("div", { class: "brand big" }, h("img", { src: "/ui/icon.svg", alt: "" }), h("span", {}, "Headrace")),
    h("h1", {}, "Connect to this gateway"),
    h(
      "p",
      { class: "muted" },
      "Paste an API token (one of api.auth.tokens; `headrace up` keeps the admin token in .state/admin.token). " +
        "It stays in this browser's local storage and is sent as Authorization: Bearer on every call.",
    ),
    message ? notice(message, kind) : null,
    h("label", { for: "token-input" }, "API token"),
    input,
    h("button", { type: "submit", class: "btn primary", id: "token-save" }, "Save token"),
  );
  mount(dialog, form);
  dialog.hidden = false;
  input.focus();
}

function authMessage(err) {
  if (err.status === 401) return `The API refused the token (401): ${err.message}. Enter a valid token.`;
  const needs = err.body?.required_scopes?.length ? ` (needs ${err.body.required_scopes.join(" or ")})` : "";
  return `This token may not read this view (403)${needs}: ${err.message}. Enter a token with that scope.`;
}

function updateSession() {
  const token = getToken();
  mount(
    $("session"),
    token
      ? [
          h("span", { class: "muted small", title: "the token is kept in this browser only" }, `token …${token.slice(-4)}`),
          h(
            "button",
            {
              class: "btn ghost small",
              id: "sign-out",
              onclick: () => {
                clearToken();
                live.stop();
                updateSession();
                showTokenForm("Signed out: the token was removed from this browser.", "info");
              },
            },
            "Sign out",
          ),
        ]
      : [],
  );
}

// --- live updates ----------------------------------------------------------------------------------------

const live = new LiveFeed({
  onEvent(env) {
    current?.handle?.onEvent?.(env);
  },
  onState(state, message) {
    const el = $("live");
    el.className = `live ${state}`;
    el.title = message;
    const labels = { connecting: "Connecting", live: "Live", retrying: "Reconnecting", denied: "Live off", stopped: "Offline" };
    mount(el, h("span", { class: "dot" }), labels[state] || state);
    pollFallback(state === "denied" || state === "retrying");
  },
});

// without the event stream (a token without events:ro, or a lost connection) views refresh every few seconds
let pollTimer = null;
function pollFallback(on) {
  clearInterval(pollTimer);
  pollTimer = on ? setInterval(() => current?.handle?.refresh?.(), 5000) : null;
}

// --- routing ---------------------------------------------------------------------------------------------

async function route() {
  const { route: r, args, query } = parseHash();
  const seq = ++renderSeq;
  for (const a of document.querySelectorAll("nav.side a")) {
    a.classList.toggle("active", a.dataset.route === (r.parent || r.name));
  }
  document.title = `${r.label} · Headrace`;
  if (!getToken()) {
    mount($("view"));
    showTokenForm("", "info");
    return;
  }
  const root = $("view");
  current = { route: r, handle: null };
  mount(root, h("div", { class: "loading" }, "Loading…"));
  const ctx = {
    root,
    args,
    query,
    navigate,
    isCurrent: () => seq === renderSeq,
    fail: (err) => failed(err, root),
  };
  try {
    const handle = await r.view.render(ctx);
    if (seq === renderSeq) current.handle = handle || null;
  } catch (err) {
    if (seq === renderSeq) failed(err, root);
  }
}

/** An error of a view: 401/403 bring the token form back, anything else shows in the view. */
function failed(err, root) {
  if (err instanceof ApiError && err.auth) {
    mount(root, notice(authMessage(err), "error"));
    showTokenForm(authMessage(err));
    return;
  }
  mount(root, notice(`Could not load this view: ${err.message}`, "error"));
  console.error(err);
}

function shell() {
  mount(
    $("nav"),
    ROUTES.filter((r) => r.nav).map((r) =>
      h("a", { href: `#/${r.name}`, "data-route": r.name, id: `nav-${r.name}` }, h("span", { class: `ico ico-${r.name}` }), r.label),
    ),
  );
  $("menu").addEventListener("click", (ev) => {
    ev.stopPropagation();
    document.body.classList.toggle("nav-open");
  });
  // on a narrow screen the open navigation closes on a click beside it
  document.querySelector(".page").addEventListener("click", () => document.body.classList.remove("nav-open"));
  $("nav").addEventListener("click", () => document.body.classList.remove("nav-open"));
  // a click anywhere on a job's row opens it (links, buttons and selected text keep their own meaning)
  $("view").addEventListener("click", (ev) => {
    const row = ev.target.closest("tr.job-row");
    if (!row || ev.target.closest("a, button, input, select, summary") || String(window.getSelection())) return;
    navigate(`job/${encodeURIComponent(row.dataset.job)}`);
  });
  updateSession();
}

window.addEventListener("hashchange", route);
shell();
if (getToken()) live.start();
route();
