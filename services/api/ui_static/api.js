// The dashboard's only door to Headrace: JSON requests with the stored token as `Authorization: Bearer`,
// and the live event log (GET /events, server-sent events) read with fetch() and a stream reader, since
// EventSource cannot send that header (and a token in the URL would end up in logs and history).

const TOKEN_KEY = "headrace.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/** A non-2xx answer; `status` and the JSON body (`error`, `code`, `required_scopes` ...). */
export class ApiError extends Error {
  constructor(status, body, path) {
    const text = (body && (typeof body.error === "string" ? body.error : typeof body.detail === "string" ? body.detail : null)) || `HTTP ${status}`;
    super(text);
    this.status = status;
    this.body = body;
    this.path = path;
  }

  /** 401 or 403: the token is wrong or lacks a scope. */
  get auth() {
    return this.status === 401 || this.status === 403;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

/** One request; the parsed JSON body, or an ApiError (a network failure is an ApiError with status 0). */
export async function request(method, path, { body, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}),
      body: body !== undefined ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, { error: `cannot reach the API (${err.message})` }, path);
  }
  const raw = await resp.text();
  let parsed = null;
  if (raw) {
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = { error: raw.slice(0, 300) };
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, parsed, path);
  return parsed;
}

export const get = (path, query) => request("GET", path, { query });
export const post = (path, body) => request("POST", path, { body: body ?? {} });

/** GET that answers null instead of failing when the token may not read it (403) or it is not there (404):
 * for the parts of a view that need a broader scope than the view itself (analytics, config). */
export async function optional(path, query) {
  try {
    return await get(path, query);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return null;
    throw err;
  }
}

// --- the live event log ----------------------------------------------------------------------------------

/** Split a text stream into SSE frames ({event, data, id}); comments (": ping") are skipped. */
export class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onFrame({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
  }
}

/**
 * The job events of the event log as they happen (`GET /events?format=log&type=job.`: the envelopes as
 * stored), reconnecting with `Last-Event-ID` so nothing is missed. `onEvent(envelope)` per event,
 * `onState(state, message)` with "connecting" | "live" | "retrying" | "denied" | "stopped".
 */
export class LiveFeed {
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.controller = null;
    this.stopped = true;
    this.generation = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop(++this.generation);
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.onState("stopped", "");
  }

  restart() {
    this.stop();
    this.start();
  }

  current(generation) {
    return !this.stopped && generation === this.generation;
  }

  async loop(generation) {
    let delay = 1000;
    while (this.current(generation)) {
      this.controller = new AbortController();
      this.onState("connecting", "connecting to the event stream");
      try {
        const extra = { Accept: "text/event-stream" };
        if (this.lastId) extra["Last-Event-ID"] = this.lastId;
        const resp = await fetch("/events?format=log&type=job.&heartbeat=15", {
          headers: headers(extra),
          signal: this.controller.signal,
          cache: "no-store",
        });
        if (resp.status === 401 || resp.status === 403) {
          let text = `HTTP ${resp.status}`;
          try {
            text = (await resp.json()).error || text;
          } catch {
            /* keep the status */
          }
          if (!this.current(generation)) return;
          this.onState("denied", text);
          await this.sleep(30000);
          continue;
        }
        if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
        if (!this.current(generation)) return;
        this.onState("live", "live: job events as they happen");
        delay = 1000;
        const parser = new SseParser((frame) => {
          if (!this.current(generation)) return;
          if (frame.id) this.lastId = frame.id;
          let env;
          try {
            env = JSON.parse(frame.data);
          } catch {
            return;
          }
          this.onEvent(env);
        });
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } catch (err) {
        if (!this.current(generation)) return;
        this.onState("retrying", `event stream lost (${err.message}); reconnecting`);
      }
      if (!this.current(generation)) return;
      await this.sleep(delay);
      delay = Math.min(delay * 2, 15000);
    }
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.controller?.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
