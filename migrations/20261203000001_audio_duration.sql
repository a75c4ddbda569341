-- How long stored audio plays (milliseconds, read from its container by process-upload); null
-- for images and for files processed before durations were read.
ALTER TABLE anki.stored_media_files ADD COLUMN IF NOT EXISTS duration_ms bigint CHECK (duration_ms >= 0);
