//! Times as records store them.

/// `now` as RFC 3339, the format every record and answer uses.
pub fn now_rfc3339(now: time::OffsetDateTime) -> String {
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
