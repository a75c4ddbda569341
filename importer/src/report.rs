//! The machine-readable report: JSON Lines, one per file imported (its MD5 → SHA-256), one per
//! problem (with every id involved and the reason), and the counts at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::source::{LegacyFile, LegacyRef};
use crate::Summary;

pub struct Report {
    path: PathBuf,
    out: BufWriter<File>,
}

fn refs(file: &LegacyFile) -> Value {
    json!(file
        .refs
        .iter()
        .map(|r| json!({"reference_id": r.id, "note_id": r.note_id, "file_name": r.file_name}))
        .collect::<Vec<_>>())
}

impl Report {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self { path: path.to_owned(), out: BufWriter::new(File::create(path)?) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&mut self, v: Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &v)?;
        self.out.write_all(b"\n")
    }

    /// A file that is in the media server now: the MD5 → SHA-256 map.
    pub fn file(
        &mut self,
        f: &LegacyFile,
        sha256: &str,
        stored_sha256: Option<&str>,
        outcome: &str,
    ) -> std::io::Result<()> {
        self.line(json!({"kind": "file", "outcome": outcome, "media_id": f.media_id, "md5": f.md5,
            "sha256": sha256, "stored_sha256": stored_sha256, "references": refs(f)}))
    }

    /// A file that could not be imported, with its references.
    pub fn problem(
        &mut self,
        f: &LegacyFile,
        reason: &str,
        detail: Option<&str>,
        sha256: Option<&str>,
    ) -> std::io::Result<()> {
        self.line(json!({"kind": "problem", "reason": reason, "detail": detail, "media_id": f.media_id, "md5": f.md5,
            "file_size": f.file_size, "sha256": sha256, "references": refs(f)}))
    }

    /// A row no live note uses: not imported, counted.
    pub fn unreferenced(&mut self, f: &LegacyFile) -> std::io::Result<()> {
        self.line(json!({"kind": "unreferenced", "media_id": f.media_id, "md5": f.md5, "references": refs(f)}))
    }

    /// A reference that could not be imported.
    pub fn reference(
        &mut self,
        f: &LegacyFile,
        r: &LegacyRef,
        reason: &str,
        detail: Option<&str>,
    ) -> std::io::Result<()> {
        self.line(json!({"kind": "reference_problem", "reason": reason, "detail": detail, "media_id": f.media_id,
            "md5": f.md5, "reference_id": r.id, "note_id": r.note_id, "file_name": r.file_name}))
    }

    pub fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        self.line(json!({"kind": "summary", "counts": s}))?;
        self.flush()
    }

    /// Written through to the file (a killed run keeps what it reported).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}
