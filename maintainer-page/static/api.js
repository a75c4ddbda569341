// The two maintainer calls, and what their failures mean in plain words.

/**
 * The API lives where the page does: /admin → /v1/…, also under a custom domain's base path.
 * Always absolute on this origin: a path such as `//admin` must not make `//v1/…`, which a
 * browser would send to another host.
 */
const API_BASE = location.origin + location.pathname.replace(/\/admin\/?$/, "").replace(/\/{2,}/g, "/").replace(/\/$/, "");

export class ApiError extends Error {
  constructor(kind, message, status = 0) {
    super(message);
    this.kind = kind; // "expired" | "forbidden" | "network" | "busy" | "server"
    this.status = status;
  }
}

function explain(status, body) {
  const detail = body && body.error && typeof body.error.message === "string" ? body.error.message : "";
  switch (status) {
    case 401:
      return new ApiError(
        "expired",
        "Your sign-in has expired or is not valid. Open this page again from AnkiCollab to get a new one.",
        status,
      );
    case 403:
      return new ApiError("forbidden", "You are not a maintainer of this deck, so its media cannot be shown or changed.", status);
    case 429:
    case 503:
      return new ApiError("busy", "The media server is busy. Nothing was changed; try again in a moment.", status);
    default:
      return new ApiError(
        "server",
        `The media server refused the request (HTTP ${status}${detail ? `: ${detail}` : ""}). Nothing was changed.`,
        status,
      );
  }
}

async function call(token, method, path, signal) {
  let response;
  try {
    response = await fetch(API_BASE + path, {
      method,
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
      signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network", "The media server could not be reached. Check your connection and try again.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw explain(response.status, body);
  if (body === null || typeof body !== "object") {
    throw new ApiError("server", "The media server sent an answer this page does not understand.", response.status);
  }
  return body;
}

const seg = (s) => encodeURIComponent(s);

/**
 * Every file of the deck: follows `next_cursor` until it is null. A page may be short or even
 * empty and still have a cursor (the API reads a bounded slice of the index per request).
 * `onPage(files)` sees each page as it arrives.
 */
export async function listAll(token, deck, onPage, signal) {
  let cursor = null;
  for (let guard = 0; guard < 100000; guard++) {
    const qs = cursor === null ? "" : `?cursor=${seg(cursor)}`;
    const page = await call(token, "GET", `/v1/decks/${seg(deck)}/media${qs}`, signal);
    const files = Array.isArray(page.files) ? page.files : [];
    onPage(files);
    if (typeof page.next_cursor !== "string" || page.next_cursor === "" || page.next_cursor === cursor) return;
    cursor = page.next_cursor;
  }
}

export async function removeFile(token, deck, filename) {
  return call(token, "DELETE", `/v1/decks/${seg(deck)}/media/${seg(filename)}`);
}
