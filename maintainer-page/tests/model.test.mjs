// Unit tests of the page's pure module (node --test; scripts/test-browser runs them).
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatBytes, formatDuration, fromApi, kind, normalizeQuery, totals, view } from "../static/model.js";

const file = (filename, extra = {}) =>
  fromApi({ filename, hash: "0".repeat(64), status: "ready", size: 100, stored_size: 80, notes: 1, ...extra });

test("search is the API's: NFC, case-insensitive substring", () => {
  const files = [file("Café.png"), file("cafe.png"), file("CELL.png")];
  assert.deepEqual(view(files, "CAFE\u0301", "name-asc").map((f) => f.filename), ["Café.png"]);
  assert.deepEqual(view(files, "cell", "name-asc").map((f) => f.filename), ["CELL.png"]);
  assert.equal(view(files, "", "name-asc").length, 3);
  assert.equal(normalizeQuery("E\u0301"), "\u00e9");
});

test("sorts by name (code points, as the API pages), size and notes, ties by name", () => {
  const files = [
    file("b.png", { stored_size: 5, notes: 2 }),
    file("a.png", { stored_size: 9, notes: 2 }),
    file("C.png", { stored_size: null, size: 7, notes: 0 }),
  ];
  const names = (sort) => view(files, "", sort).map((f) => f.filename);
  assert.deepEqual(names("name-asc"), ["C.png", "a.png", "b.png"]);
  assert.deepEqual(names("size-desc"), ["a.png", "C.png", "b.png"]);
  assert.deepEqual(names("notes-desc"), ["a.png", "b.png", "C.png"]);
  assert.deepEqual(names("notes-asc"), ["C.png", "a.png", "b.png"]);
});

test("totals: stored bytes, bytes saved by conversion, references", () => {
  const t = totals([file("a", { size: 100, stored_size: 60, notes: 3 }), file("b", { size: 50, stored_size: 70 }), file("c", { size: null, stored_size: null, notes: 0 })]);
  assert.deepEqual(t, { files: 3, stored: 130, saved: 40, notes: 4 });
});

test("formats sizes and types for people", () => {
  assert.equal(formatBytes(1), "1 byte");
  assert.equal(formatBytes(999), "999 bytes");
  assert.equal(formatBytes(1500), "1.5 kB");
  assert.equal(formatBytes(25_000_000), "25 MB");
  assert.equal(kind(file("a", { content_type: "image/webp" })), "WEBP image");
  assert.equal(kind(file("a", { content_type: "audio/ogg" })), "OGG audio");
  assert.equal(kind(file("a", { content_type: null, status: "missing" })), "missing");
});

test("what the API sends is kept as data, whatever its type", () => {
  const f = fromApi({ filename: "<b>x</b>.png", notes: "3", size: "9", url: 5 });
  assert.equal(f.filename, "<b>x</b>.png");
  assert.equal(f.notes, 0);
  assert.equal(f.size, null);
  assert.equal(f.url, null);
});

test("durations: seconds under a minute, else minutes and seconds; absent for images", () => {
  assert.equal(formatDuration(2612), "2.6 seconds");
  assert.equal(formatDuration(59_949), "59.9 seconds");
  assert.equal(formatDuration(245_000), "4:05");
  assert.equal(formatDuration(null), "–");
  assert.equal(file("a.mp3", { duration_ms: 1500 }).durationMs, 1500);
  assert.equal(file("a.png").durationMs, null);
});
