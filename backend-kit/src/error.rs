/// Everything the kit can fail with. Match on the variant; the messages are for logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token secret could not be read (empty, or malformed key JSON).
    #[error("the media token secret: {0}")]
    Secret(String),
    /// A query on AnkiCollab's database failed.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The media server refused a request for good (a 4xx other than 429): retrying cannot help.
    #[error("the media server refused the request (HTTP {status}, {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    /// The media server stayed unavailable (5xx, 429, or no answer) through every retry. Calling
    /// again later is safe: every call of the kit is idempotent.
    #[error("the media server is unavailable: {0}")]
    Unavailable(String),
    /// An argument the kit cannot use (a malformed hash, an unknown deck, too many items).
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether the same call may succeed later (the media server or the database was down).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => e.as_db_error().is_none(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
