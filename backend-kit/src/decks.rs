//! The deck rule, as SQL over AnkiCollab's schema (`anki.decks`, `anki.notes`,
//! `anki.note_inheritance`, `anki.maintainers`).
//!
//! - The media server keys a deck's media by the **root** of its deck tree: the `human_hash` of
//!   the deck whose `parent` is null. A subscriber downloading the root gets every subdeck's media.
//! - A note's media belong to its own tree's root, and to the root of every tree holding a live
//!   note that inherits it (`note_inheritance.base_note_id`), so a subscriber deck's download has
//!   the inherited notes' media too.
//! - Deleted notes (`notes.deleted`) belong nowhere.
//!
//! Each query is exported as text too, for a backend that runs its SQL itself. Deck trees are
//! walked at most [`MAX_DEPTH`] levels, so a broken `parent` cycle cannot loop.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::GenericClient;

use crate::error::Result;

/// How deep a deck tree may be.
pub const MAX_DEPTH: i32 = 64;

/// `$1 bigint[]` note ids → `(note_id bigint, deck_key text)`: every deck key whose download
/// includes the note (its own root; the roots of trees with live notes inheriting it).
pub const DECK_KEYS_OF_NOTES: &str = "
WITH RECURSIVE seen AS (
    SELECT n.id AS note_id, n.deck FROM anki.notes n
    WHERE n.id = ANY($1) AND NOT coalesce(n.deleted, false)
  UNION
    SELECT ni.base_note_id, s.deck
    FROM anki.note_inheritance ni
    JOIN anki.notes s ON s.id = ni.subscriber_note_id AND NOT coalesce(s.deleted, false)
    JOIN anki.notes b ON b.id = ni.base_note_id AND NOT coalesce(b.deleted, false)
    WHERE ni.base_note_id = ANY($1)
), up AS (
    SELECT seen.note_id, d.id, d.parent, d.human_hash, 0 AS depth
    FROM seen JOIN anki.decks d ON d.id = seen.deck
  UNION ALL
    SELECT up.note_id, d.id, d.parent, d.human_hash, up.depth + 1
    FROM up JOIN anki.decks d ON d.id = up.parent
    WHERE up.depth < 64
)
SELECT DISTINCT note_id, human_hash::text FROM up WHERE parent IS NULL AND human_hash IS NOT NULL";

/// `$1 text` a deck's `human_hash`, `$2 text[]` note guids → `(guid text, note_id bigint)` for
/// the live notes with those guids in that deck's subtree (as `/media/check/bulk` finds them).
pub const NOTES_BY_GUID: &str = "
WITH RECURSIVE tree AS (
    SELECT id, 0 AS depth FROM anki.decks WHERE human_hash = $1
  UNION ALL
    SELECT d.id, tree.depth + 1 FROM anki.decks d JOIN tree ON d.parent = tree.id WHERE tree.depth < 64
)
SELECT n.guid::text, n.id FROM anki.notes n JOIN tree ON n.deck = tree.id
WHERE n.guid = ANY($2) AND NOT coalesce(n.deleted, false)";

/// `$1 bigint` user id → `human_hash text` of the root decks the user owns or maintains: the
/// `decks` of their maintainer token.
pub const MAINTAINED_DECKS: &str = "
SELECT d.human_hash::text FROM anki.decks d
WHERE d.parent IS NULL AND d.human_hash IS NOT NULL
  AND (d.owner::bigint = $1
       OR EXISTS (SELECT 1 FROM anki.maintainers m WHERE m.deck = d.id AND m.user_id::bigint = $1))
ORDER BY 1";

/// `$1 text` a deck's `human_hash` → the `human_hash` of its tree's root (none if unknown).
pub const ROOT_OF_DECK: &str = "
WITH RECURSIVE up AS (
    SELECT id, parent, human_hash, 0 AS depth FROM anki.decks WHERE human_hash = $1
  UNION ALL
    SELECT d.id, d.parent, d.human_hash, up.depth + 1 FROM up JOIN anki.decks d ON d.id = up.parent
    WHERE up.depth < 64
)
SELECT human_hash::text FROM up WHERE parent IS NULL";

/// `$1 bigint` user id, `$2 bigint[]` note ids → the notes the user may report media for: notes in
/// a deck they own or maintain (or under one), and notes with a pending suggestion of theirs
/// (unreviewed fields or tags of a commit of theirs).
pub const WRITABLE_NOTES: &str = "
WITH RECURSIVE up AS (
    SELECT n.id AS note_id, d.id, d.parent, d.owner, 0 AS depth
    FROM anki.notes n JOIN anki.decks d ON d.id = n.deck WHERE n.id = ANY($2)
  UNION ALL
    SELECT up.note_id, d.id, d.parent, d.owner, up.depth + 1
    FROM up JOIN anki.decks d ON d.id = up.parent WHERE up.depth < 64
)
SELECT note_id FROM up
WHERE owner::bigint = $1 OR EXISTS (SELECT 1 FROM anki.maintainers m WHERE m.deck = up.id AND m.user_id::bigint = $1)
UNION
SELECT f.note FROM anki.fields f JOIN anki.commits c ON c.commit_id = f.commit
WHERE f.note = ANY($2) AND NOT f.reviewed AND c.user_id::bigint = $1
UNION
SELECT t.note FROM anki.tags t JOIN anki.commits c ON c.commit_id = t.commit
WHERE t.note = ANY($2) AND NOT t.reviewed AND c.user_id::bigint = $1";

/// `$1 bigint` user id, `$2 text` a deck's `human_hash` → whether the user owns or maintains it or
/// a deck above it.
pub const MAINTAINS_DECK: &str = "
WITH RECURSIVE up AS (
    SELECT id, parent, owner, 0 AS depth FROM anki.decks WHERE human_hash = $2
  UNION ALL
    SELECT d.id, d.parent, d.owner, up.depth + 1 FROM up JOIN anki.decks d ON d.id = up.parent WHERE up.depth < 64
)
SELECT EXISTS (SELECT 1 FROM up WHERE owner::bigint = $1
               OR EXISTS (SELECT 1 FROM anki.maintainers m WHERE m.deck = up.id AND m.user_id::bigint = $1))";

/// Every deck key each note's media belong to ([`DECK_KEYS_OF_NOTES`]). Notes that are deleted
/// or gone have none.
pub async fn deck_keys_of_notes(db: &impl GenericClient, note_ids: &[i64]) -> Result<BTreeMap<i64, BTreeSet<String>>> {
    let mut out: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for row in db.query(DECK_KEYS_OF_NOTES, &[&note_ids]).await? {
        out.entry(row.get(0)).or_default().insert(row.get(1));
    }
    Ok(out)
}

/// The live notes with these guids in the subtree of the deck named `deck_hash`.
pub async fn notes_by_guid(
    db: &impl GenericClient,
    deck_hash: &str,
    guids: &[String],
) -> Result<BTreeMap<String, Vec<i64>>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in db.query(NOTES_BY_GUID, &[&deck_hash, &guids]).await? {
        out.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(out)
}

/// The root decks `user_id` owns or maintains, for [`crate::TokenIssuer::for_maintainer`].
///
/// ```no_run
/// # async fn demo(db: &tokio_postgres::Client, issuer: &ankicollab_media_backend::TokenIssuer)
/// # -> Result<(), ankicollab_media_backend::Error> {
/// let decks = ankicollab_media_backend::decks::maintained_decks(db, 42).await?;
/// let token = issuer.for_maintainer(42, &decks);
/// # Ok(()) }
/// ```
pub async fn maintained_decks(db: &impl GenericClient, user_id: i64) -> Result<Vec<String>> {
    Ok(db.query(MAINTAINED_DECKS, &[&user_id]).await?.iter().map(|r| r.get(0)).collect())
}

/// The root of the tree holding the deck named `deck_hash`, if there is such a deck.
pub async fn root_of_deck(db: &impl GenericClient, deck_hash: &str) -> Result<Option<String>> {
    Ok(db.query_opt(ROOT_OF_DECK, &[&deck_hash]).await?.map(|r| r.get(0)))
}

/// Of `note_ids`, those `user_id` may report media for ([`WRITABLE_NOTES`]): AnkiCollab's rule,
/// ready to pass as the references route's permission check.
pub async fn writable_notes(db: &impl GenericClient, user_id: i64, note_ids: &[i64]) -> Result<BTreeSet<i64>> {
    Ok(db.query(WRITABLE_NOTES, &[&user_id, &note_ids]).await?.iter().map(|r| r.get(0)).collect())
}

/// Whether `user_id` owns or maintains the deck named `deck_hash` (or a deck above it).
pub async fn maintains_deck(db: &impl GenericClient, user_id: i64, deck_hash: &str) -> Result<bool> {
    Ok(db.query_one(MAINTAINS_DECK, &[&user_id, &deck_hash]).await?.get(0))
}
