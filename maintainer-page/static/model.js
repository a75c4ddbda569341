// Pure functions of the maintainer page: matching, sorting, totals, formatting. No DOM here, so
// they run under `node --test` too (maintainer-page/tests/model.test.mjs).

/** The API's search rule: the filename, NFC and lower-cased, contains the query, NFC and lower-cased. */
export function normalizeQuery(q) {
  return String(q ?? "").normalize("NFC").toLowerCase();
}

export function matches(file, needle) {
  return needle === "" || file.key.includes(needle);
}

/** What the page keeps of a listed file, with the lower-cased name it searches. */
export function fromApi(f) {
  return {
    filename: String(f.filename),
    key: String(f.filename).normalize("NFC").toLowerCase(),
    hash: String(f.hash ?? ""),
    storedHash: f.stored_hash == null ? null : String(f.stored_hash),
    status: String(f.status ?? "missing"),
    size: typeof f.size === "number" ? f.size : null,
    storedSize: typeof f.stored_size === "number" ? f.stored_size : null,
    contentType: f.content_type == null ? null : String(f.content_type),
    width: typeof f.width === "number" ? f.width : null,
    height: typeof f.height === "number" ? f.height : null,
    durationMs: typeof f.duration_ms === "number" ? f.duration_ms : null,
    notes: typeof f.notes === "number" ? f.notes : 0,
    url: typeof f.url === "string" ? f.url : null,
    thumbnailUrl: typeof f.thumbnail_url === "string" ? f.thumbnail_url : null,
  };
}

/** The size a file costs: what is stored, else what was uploaded. */
export function shownSize(f) {
  return f.storedSize ?? f.size ?? 0;
}

// Names compare by code point, as the API orders them, so that "Name (A–Z)" is the API's order.
const byName = (a, b) => (a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0);

export const SORTS = {
  "name-asc": byName,
  "name-desc": (a, b) => byName(b, a),
  "size-desc": (a, b) => shownSize(b) - shownSize(a) || byName(a, b),
  "size-asc": (a, b) => shownSize(a) - shownSize(b) || byName(a, b),
  "notes-desc": (a, b) => b.notes - a.notes || byName(a, b),
  "notes-asc": (a, b) => a.notes - b.notes || byName(a, b),
};

export function view(files, query, sort) {
  const needle = normalizeQuery(query);
  const out = needle === "" ? files.slice() : files.filter((f) => matches(f, needle));
  out.sort(SORTS[sort] ?? byName);
  return out;
}

export function totals(files) {
  let stored = 0;
  let saved = 0;
  let notes = 0;
  for (const f of files) {
    if (f.storedSize != null) stored += f.storedSize;
    if (f.size != null && f.storedSize != null && f.size > f.storedSize) saved += f.size - f.storedSize;
    notes += f.notes;
  }
  return { files: files.length, stored, saved, notes };
}

const UNITS = ["bytes", "kB", "MB", "GB", "TB"];

export function formatBytes(n) {
  if (n == null) return "–";
  if (n < 1000) return `${n} ${n === 1 ? "byte" : "bytes"}`;
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

/** A playing time: "2.6 seconds" under a minute, else minutes and seconds ("4:05"). */
export function formatDuration(ms) {
  if (ms == null) return "–";
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} seconds`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function plural(n, one, many) {
  return `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
}

/** A short, human name for a content type. */
export function kind(f) {
  const t = f.contentType;
  if (!t) return f.status === "ready" ? "file" : f.status;
  const [major, minor = ""] = t.split(";")[0].split("/");
  const sub = minor.replace(/^x-/, "").toUpperCase();
  if (major === "image") return `${sub} image`;
  if (major === "audio") return `${sub} audio`;
  return t;
}

export const isImage = (f) => (f.contentType ?? "").startsWith("image/");
export const isAudio = (f) => (f.contentType ?? "").startsWith("audio/");
