-- The kit's own tables in AnkiCollab's database (schema anki), created by
-- `ankicollab_media_backend::migrate`. Idempotent; nothing of AnkiCollab's is changed.
--
-- No foreign keys to anki.notes on purpose: when a note or deck is deleted, these rows are what
-- tells the kit which references to remove from the media server; the kit deletes them then.

CREATE SCHEMA IF NOT EXISTS anki;

-- The files each note uses: what the plugin reported for a suggestion, or the importer brought
-- over (`reported_by` null). Pruned to what the note's fields still reference when its suggestion
-- is approved or declined.
CREATE TABLE IF NOT EXISTS anki.media_note_files (
    note_id bigint NOT NULL,
    filename text NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    reported_by bigint,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (note_id, filename)
);

-- Reports for notes that do not exist yet (a new deck whose notes the backend is still inserting):
-- adopted by the note with that guid under that deck once it exists.
CREATE TABLE IF NOT EXISTS anki.media_unresolved_files (
    deck_hash text NOT NULL,
    note_guid text NOT NULL,
    filename text NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    reported_by bigint,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deck_hash, note_guid, filename)
);
CREATE INDEX IF NOT EXISTS media_unresolved_files_guid_idx ON anki.media_unresolved_files (note_guid);

-- Under which deck keys the media server holds each note's references (what the kit told it).
CREATE TABLE IF NOT EXISTS anki.media_note_decks (
    note_id bigint NOT NULL,
    deck_key text NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (note_id, deck_key)
);
CREATE INDEX IF NOT EXISTS media_note_decks_deck_key_idx ON anki.media_note_decks (deck_key);
