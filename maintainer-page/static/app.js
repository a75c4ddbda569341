// The maintainer page: a deck's media, searchable, sortable, previewable and removable.
// Every string from the server or the URL reaches the page through textContent or attributes
// set by the DOM, never as HTML; the CSP also refuses inline script and HTML sinks.

import { listAll, removeFile } from "./api.js";
import { formatBytes, formatDuration, fromApi, isAudio, isImage, kind, plural, totals, view } from "./model.js";

const PAGE_SIZE = 100;
const SEARCH_DELAY_MS = 150;
const $ = (id) => document.getElementById(id);

const ui = {
  alert: $("alert"),
  status: $("status"),
  deckLine: $("deck-line"),
  search: $("search"),
  sort: $("sort"),
  shown: $("shown"),
  rows: $("rows"),
  empty: $("empty"),
  prev: $("prev"),
  next: $("next"),
  pageInfo: $("page-info"),
  totalFiles: $("total-files"),
  totalStored: $("total-stored"),
  totalSaved: $("total-saved"),
  totalNotes: $("total-notes"),
  preview: $("preview"),
  previewTitle: $("preview-title"),
  previewMedia: $("preview-media"),
  previewFacts: $("preview-facts"),
  previewClose: $("preview-close"),
  confirm: $("confirm"),
  confirmText: $("confirm-text"),
  confirmRemove: $("confirm-remove"),
  confirmCancel: $("confirm-cancel"),
};

const state = {
  token: null,
  deck: new URLSearchParams(location.search).get("deck") ?? "",
  files: [], // every file of the deck, as loaded
  loaded: false,
  loadedAt: 0,
  urlLifetimeMs: 15 * 60 * 1000,
  query: "",
  sort: "name-asc",
  page: 0,
  shown: [], // files after search and sort
  previewing: null, // filename
  removing: null, // { file, returnTo }
  loader: null, // AbortController of the running load
};

// ---- messages ------------------------------------------------------------------------------

function showError(message) {
  ui.alert.textContent = message;
  ui.alert.hidden = false;
}

function clearError() {
  ui.alert.textContent = "";
  ui.alert.hidden = true;
}

function say(message) {
  ui.status.textContent = message;
}

// ---- the token -----------------------------------------------------------------------------

// Origins allowed to embed the page (frame-ancestors) are the only ones whose messages count.
const embedOrigins = (document.querySelector('meta[name="ankicollab-embed-origins"]')?.content ?? "")
  .split(/\s+/)
  .filter((o) => /^https?:\/\/[A-Za-z0-9.-]+(:[0-9]+)?$/.test(o));

function tokenFromFragment() {
  if (!location.hash) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Out of the address bar, the history and any bookmark: it lives in memory only.
  history.replaceState(null, "", location.pathname + location.search);
  return token || null;
}

function tellEmbedder(message) {
  const targets = new Set([window.parent !== window ? window.parent : null, window.opener].filter(Boolean));
  for (const target of targets) {
    for (const origin of embedOrigins) {
      try {
        target.postMessage(message, origin);
      } catch {
        // A closed or cross-origin-isolated window: nothing to tell.
      }
    }
  }
}

function useToken(token) {
  if (typeof token !== "string" || token === "" || token.length > 8192) return;
  state.token = token;
  clearError();
  load();
}

window.addEventListener("message", (event) => {
  if (!embedOrigins.includes(event.origin)) return;
  const data = event.data;
  if (!data || typeof data !== "object" || data.type !== "ankicollab-media-token") return;
  useToken(data.token);
});

window.addEventListener("hashchange", () => {
  const token = tokenFromFragment();
  if (token) useToken(token);
});

// ---- loading -------------------------------------------------------------------------------

function urlLifetime(files) {
  for (const f of files) {
    const u = f.thumbnailUrl ?? f.url;
    if (!u) continue;
    const secs = Number(new URL(u).searchParams.get("X-Amz-Expires"));
    if (secs > 0) return secs * 1000;
  }
  return 15 * 60 * 1000;
}

async function load() {
  if (!state.token) return;
  state.loader?.abort();
  const loader = new AbortController();
  state.loader = loader;
  const previous = state.files;
  const progressive = !state.loaded; // the first load shows pages as they come
  const fresh = [];
  say("Loading the deck's files…");
  try {
    await listAll(
      state.token,
      state.deck,
      (page) => {
        for (const f of page) fresh.push(fromApi(f));
        if (progressive) {
          state.files = fresh;
          renderSoon();
          say(`Loading the deck's files… ${plural(fresh.length, "file", "files")} so far.`);
        }
      },
      loader.signal,
    );
  } catch (e) {
    if (e && e.name === "AbortError") return;
    if (state.loader !== loader) return;
    state.files = previous;
    render();
    say("");
    fail(e);
    return;
  }
  if (state.loader !== loader) return;
  state.files = fresh;
  state.loaded = true;
  state.loadedAt = Date.now();
  state.urlLifetimeMs = urlLifetime(fresh);
  ui.search.disabled = false;
  ui.sort.disabled = false;
  render();
  if (state.previewing && !fresh.some((f) => f.filename === state.previewing)) closePreview(false);
  say(`Loaded ${plural(fresh.length, "file", "files")}.`);
}

function fail(e) {
  const message = e && typeof e.message === "string" && e.kind ? e.message : "Something went wrong. Nothing was changed.";
  showError(message);
  if (e && e.kind === "expired") tellEmbedder({ type: "ankicollab-media-token-expired" });
}

/** Signed URLs expire; a page open for long gets fresh ones before it shows more media. */
function refreshIfStale() {
  if (state.loaded && Date.now() - state.loadedAt > state.urlLifetimeMs * 0.8) load();
}

// ---- rendering -----------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function renderTotals() {
  const t = totals(state.files);
  if (!state.loaded && t.files === 0) {
    for (const node of [ui.totalFiles, ui.totalStored, ui.totalSaved, ui.totalNotes]) node.textContent = "–";
    return;
  }
  const soFar = state.loaded ? "" : " so far";
  ui.totalFiles.textContent = t.files.toLocaleString("en") + soFar;
  ui.totalStored.textContent = formatBytes(t.stored);
  ui.totalSaved.textContent = formatBytes(t.saved);
  ui.totalNotes.textContent = t.notes.toLocaleString("en");
}

function thumbCell(f) {
  if (f.thumbnailUrl) {
    const img = el("img", { src: f.thumbnailUrl, alt: "", loading: "lazy", decoding: "async", width: "40", height: "40" });
    img.addEventListener("error", refreshIfStale, { once: true });
    return el("td", { class: "c-thumb" }, img);
  }
  const label = f.status !== "ready" ? f.status : isAudio(f) ? "audio" : "file";
  return el("td", { class: "c-thumb" }, el("span", { class: `badge badge-${label}`, text: label }));
}

function row(f) {
  const name = el("button", { type: "button", class: "name", text: f.filename, onclick: () => openPreview(f.filename) });
  name.addEventListener("keydown", (e) => {
    if (e.key === "Delete") {
      e.preventDefault();
      askRemove(f.filename, name);
    }
  });
  if (state.previewing === f.filename) name.setAttribute("aria-current", "true");
  const remove = el("button", { type: "button", class: "remove", text: "Remove", "aria-label": `Remove ${f.filename}` });
  remove.addEventListener("click", () => askRemove(f.filename, remove));
  return el(
    "tr",
    {},
    thumbCell(f),
    el("td", { class: "c-name" }, name),
    el("td", { class: "c-type", text: kind(f) }),
    el("td", { class: "c-num", text: formatBytes(f.size) }),
    el("td", { class: "c-num", text: formatBytes(f.storedSize) }),
    el("td", { class: "c-num", text: f.notes.toLocaleString("en") }),
    el("td", { class: "c-act" }, remove),
  );
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = 0;
  renderTotals();
  state.shown = view(state.files, state.query, state.sort);
  const pages = Math.max(1, Math.ceil(state.shown.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const slice = state.shown.slice(start, start + PAGE_SIZE);
  ui.rows.replaceChildren(...slice.map(row));
  ui.prev.disabled = state.page === 0;
  ui.next.disabled = state.page >= pages - 1;
  ui.pageInfo.textContent = state.shown.length > PAGE_SIZE ? `Page ${state.page + 1} of ${pages}` : "";
  ui.empty.hidden = slice.length > 0;
  ui.empty.textContent = state.files.length === 0 ? (state.loaded ? "This deck has no media." : "") : "No file matches the search.";
  ui.shown.textContent = state.query
    ? `${plural(state.shown.length, "file matches", "files match")} “${state.query}”.`
    : `${plural(state.shown.length, "file", "files")}.`;
}

// While a big deck loads, pages arrive faster than it is worth re-rendering for.
let renderTimer = 0;
function renderSoon() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = 0;
    render();
  }, 250);
}

// ---- search, sort, pages -------------------------------------------------------------------

let searchTimer = 0;
ui.search.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    state.query = ui.search.value;
    state.page = 0;
    render();
  }, SEARCH_DELAY_MS);
});
ui.search.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    clearTimeout(searchTimer);
    state.query = ui.search.value;
    state.page = 0;
    render();
  }
});
ui.sort.addEventListener("change", () => {
  state.sort = ui.sort.value;
  state.page = 0;
  render();
});
ui.prev.addEventListener("click", () => {
  state.page = Math.max(0, state.page - 1);
  refreshIfStale();
  render();
});
ui.next.addEventListener("click", () => {
  state.page += 1;
  refreshIfStale();
  render();
});

// ---- preview -------------------------------------------------------------------------------

function fact(dl, term, value) {
  if (value == null || value === "") return;
  dl.append(el("div", {}, el("dt", { text: term }), el("dd", { text: value })));
}

function exactBytes(n) {
  return n == null ? null : `${formatBytes(n)} (${n.toLocaleString("en")} bytes)`;
}

function openPreview(filename) {
  const f = state.files.find((x) => x.filename === filename);
  if (!f) return;
  refreshIfStale();
  state.previewing = filename;
  ui.previewTitle.textContent = f.filename;
  const media = [];
  if (f.url && isImage(f)) {
    media.push(el("img", { src: f.url, alt: `Preview of ${f.filename}`, class: "full" }));
  } else if (f.url && isAudio(f)) {
    media.push(el("audio", { src: f.url, controls: true, preload: "metadata", "aria-label": `Play ${f.filename}` }));
  } else if (f.url) {
    media.push(el("p", { text: "No preview for this type of file." }));
  } else {
    media.push(el("p", { text: `Not stored (${f.status}): there is nothing to preview.` }));
  }
  if (f.url) {
    media.push(
      el("p", {}, el("a", { href: f.url, target: "_blank", rel: "noopener noreferrer", text: "Open the stored file" })),
    );
  }
  ui.previewMedia.replaceChildren(...media);
  const dl = ui.previewFacts;
  dl.replaceChildren();
  fact(dl, "Type", f.contentType ?? "unknown");
  fact(dl, "Status", f.status);
  fact(dl, "Used by", plural(f.notes, "note", "notes"));
  fact(dl, "Original size", exactBytes(f.size));
  fact(dl, "Stored size", exactBytes(f.storedSize));
  if (f.width != null && f.height != null) fact(dl, "Dimensions", `${f.width} × ${f.height} pixels`);
  if (f.durationMs != null) fact(dl, "Duration", formatDuration(f.durationMs));
  fact(dl, "SHA-256", f.hash);
  if (f.storedHash && f.storedHash !== f.hash) fact(dl, "SHA-256 of the stored file", f.storedHash);
  ui.preview.hidden = false;
  render();
  ui.previewTitle.focus();
}

function closePreview(restoreFocus = true) {
  const name = state.previewing;
  state.previewing = null;
  ui.preview.hidden = true;
  ui.previewMedia.replaceChildren();
  render();
  if (restoreFocus && name) {
    const button = [...ui.rows.querySelectorAll("button.name")].find((b) => b.textContent === name);
    (button ?? ui.search).focus();
  }
}

ui.previewClose.addEventListener("click", () => closePreview());
ui.preview.addEventListener("keydown", (e) => {
  if (e.key === "Escape") closePreview();
});

// ---- removal -------------------------------------------------------------------------------

function askRemove(filename, returnTo) {
  const f = state.files.find((x) => x.filename === filename);
  if (!f || state.removing) return;
  state.removing = { file: f, returnTo };
  const used =
    f.notes === 0
      ? "No note of this deck uses it."
      : `${plural(f.notes, "note", "notes")} of this deck ${f.notes === 1 ? "uses" : "use"} it; removing it takes it out of ${f.notes === 1 ? "that note" : "every one of them"}.`;
  ui.confirmText.textContent = `Remove “${f.filename}”? ${used}`;
  ui.confirmRemove.disabled = false;
  ui.confirmCancel.disabled = false;
  ui.confirm.showModal();
  ui.confirmCancel.focus();
}

function endRemove(focusTarget) {
  state.removing = null;
  if (ui.confirm.open) ui.confirm.close();
  (focusTarget && focusTarget.isConnected ? focusTarget : ui.search).focus();
}

ui.confirmCancel.addEventListener("click", () => endRemove(state.removing?.returnTo));
ui.confirm.addEventListener("cancel", (e) => {
  // Escape: the same as Cancel (but not while the removal is on its way).
  e.preventDefault();
  if (!ui.confirmCancel.disabled) endRemove(state.removing?.returnTo);
});
ui.confirm.addEventListener("close", () => {
  // "close" is queued: when Escape is followed at once by a new removal, it arrives after the
  // dialog has opened again, and must not forget that new removal.
  if (!ui.confirm.open && state.removing && !ui.confirmRemove.disabled) state.removing = null;
});

ui.confirmRemove.addEventListener("click", async () => {
  const pending = state.removing;
  if (!pending) return;
  const { file, returnTo } = pending;
  ui.confirmRemove.disabled = true;
  ui.confirmCancel.disabled = true;
  clearError();
  say(`Removing “${file.filename}”…`);
  // Where focus goes after a removal: the row that takes this one's place.
  const index = state.shown.findIndex((f) => f.filename === file.filename) - state.page * PAGE_SIZE;
  let result;
  try {
    result = await removeFile(state.token, state.deck, file.filename);
  } catch (e) {
    say("");
    fail(e);
    endRemove(returnTo);
    return;
  }
  state.files = state.files.filter((f) => f.filename !== file.filename);
  if (state.previewing === file.filename) {
    state.previewing = null;
    ui.preview.hidden = true;
    ui.previewMedia.replaceChildren();
  }
  render();
  const removed = typeof result.removed === "number" ? result.removed : file.notes;
  say(`Removed “${file.filename}” from ${plural(removed, "note", "notes")}.`);
  const buttons = ui.rows.querySelectorAll("button.remove");
  endRemove(buttons[Math.min(Math.max(index, 0), buttons.length - 1)] ?? ui.search);
});

// ---- start ---------------------------------------------------------------------------------

function start() {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(state.deck)) {
    showError("No deck is named in the address: open this page as /admin?deck=<deck id>.");
    return;
  }
  ui.deckLine.textContent = `Deck ${state.deck}`;
  document.title = `Media of deck ${state.deck} · AnkiCollab`;
  const token = tokenFromFragment();
  if (token) {
    useToken(token);
  } else {
    say("Waiting for a maintainer token…");
    setTimeout(() => {
      if (!state.token) {
        say("");
        showError("This page needs a maintainer token. Open it from your deck's page on AnkiCollab.");
      }
    }, 3000);
  }
  tellEmbedder({ type: "ankicollab-media-ready" });
}

render();
start();
