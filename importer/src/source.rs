//! Today's AnkiCollab media: `anki.media_files` and `anki.media_references` in its Postgres, and
//! the MD5-keyed objects (`{md5[0..2]}/{md5}`) in its S3-compatible bucket.

use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::Deserialize;
use tokio_postgres::Client;

/// One `anki.media_files` row with its references.
#[derive(Debug, Clone)]
pub struct LegacyFile {
    pub media_id: i64,
    /// MD5 hex of the stored bytes, as the row says.
    pub md5: String,
    pub file_size: i64,
    pub refs: Vec<LegacyRef>,
}

/// One `anki.media_references` row, and the state of its note.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LegacyRef {
    /// `media_references.id`.
    pub id: i64,
    pub note_id: Option<i64>,
    pub file_name: String,
    pub note: NoteState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteState {
    Live,
    Deleted,
    /// No note (a null `note_id`, or a row that is gone).
    Gone,
}

impl LegacyFile {
    pub fn live_refs(&self) -> impl Iterator<Item = &LegacyRef> {
        self.refs.iter().filter(|r| r.note == NoteState::Live)
    }
}

/// Rows after `after` (by id), with their references, `limit` at a time: keyset paging, so a run
/// over any number of rows holds one page.
const PAGE: &str = "
SELECT mf.id, mf.hash::text, mf.file_size,
       coalesce(json_agg(json_build_object(
           'id', mr.id,
           'note_id', mr.note_id,
           'file_name', mr.file_name,
           'note', CASE WHEN n.id IS NULL THEN 'gone' WHEN coalesce(n.deleted, false) THEN 'deleted' ELSE 'live' END
       ) ORDER BY mr.id) FILTER (WHERE mr.id IS NOT NULL), '[]'::json)
FROM anki.media_files mf
LEFT JOIN anki.media_references mr ON mr.media_id = mf.id
LEFT JOIN anki.notes n ON n.id = mr.note_id
WHERE mf.id > $1
GROUP BY mf.id
ORDER BY mf.id
LIMIT $2";

pub async fn count_files(db: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(db.query_one("SELECT count(*) FROM anki.media_files", &[]).await?.get(0))
}

pub async fn page(db: &Client, after: i64, limit: i64) -> anyhow::Result<Vec<LegacyFile>> {
    let mut out = Vec::new();
    for row in db.query(PAGE, &[&after, &limit]).await? {
        let refs: serde_json::Value = row.get(3);
        out.push(LegacyFile {
            media_id: row.get(0),
            md5: row.get::<_, String>(1).to_ascii_lowercase(),
            file_size: row.get(2),
            refs: serde_json::from_value(refs)?,
        });
    }
    Ok(out)
}

/// The bucket today's objects are in.
pub struct Bucket {
    pub client: aws_sdk_s3::Client,
    pub name: String,
}

pub enum Fetched {
    Bytes(Vec<u8>),
    Missing,
    TooLarge(u64),
}

impl Bucket {
    /// Where AnkiCollab keeps the object of an MD5.
    pub fn key(md5: &str) -> String {
        format!("{}/{md5}", md5.get(..2).unwrap_or(md5))
    }

    /// The object's bytes, refusing more than `max`.
    pub async fn fetch(&self, md5: &str, max: u64) -> anyhow::Result<Fetched> {
        let resp = match self.client.get_object().bucket(&self.name).key(Self::key(md5)).send().await {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(Fetched::Missing),
            Err(e) => {
                let detail = e.as_service_error().and_then(|s| s.message().map(str::to_owned));
                anyhow::bail!("reading {}: {}", Self::key(md5), detail.unwrap_or_else(|| format!("{e:?}")))
            }
        };
        let declared = resp.content_length.unwrap_or(0).max(0) as u64;
        if declared > max {
            return Ok(Fetched::TooLarge(declared));
        }
        let mut body = resp.body;
        let mut out = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body.try_next().await? {
            if (out.len() + chunk.len()) as u64 > max {
                return Ok(Fetched::TooLarge((out.len() + chunk.len()) as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Fetched::Bytes(out))
    }
}
