-- The import's ledger, in AnkiCollab's database beside the kit's tables (idempotent).
--
-- media_legacy_files is also the MD5 → SHA-256 map for the transition: what today's MD5-keyed
-- file became in the media server (`sha256` is the key the media server knows it by; the bytes it
-- serves hash to `stored_sha256` when conversion changed them).

CREATE SCHEMA IF NOT EXISTS anki;

CREATE TABLE IF NOT EXISTS anki.media_legacy_files (
    media_id bigint PRIMARY KEY,            -- anki.media_files.id
    md5 text NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- imported (by this import), already_there (stored before), refused (our policy: reason)
    outcome text NOT NULL CHECK (outcome IN ('imported', 'already_there', 'refused')),
    reason text,
    stored_sha256 text CHECK (stored_sha256 ~ '^[0-9a-f]{64}$'),
    imported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS media_legacy_files_md5_idx ON anki.media_legacy_files (md5);
CREATE INDEX IF NOT EXISTS media_legacy_files_sha256_idx ON anki.media_legacy_files (sha256);

-- References the media server has (anki.media_references.id), so a re-run sends none twice.
CREATE TABLE IF NOT EXISTS anki.media_legacy_references (
    reference_id bigint PRIMARY KEY,
    note_id bigint NOT NULL,
    filename text NOT NULL,
    sha256 text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);
