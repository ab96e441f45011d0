//! Errors of the ad store and the decision path.

/// What went wrong, naming the field, item or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field's value was refused.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such item (or not the caller's).
    #[error("no {kind} {id:?}")]
    NotFound {
        /// Advertiser, campaign, group or creative.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The item is deleted: it is kept (and reported) but can no longer change.
    #[error("{kind} {id:?} is deleted; deleted items are kept for reports and cannot change")]
    Deleted {
        /// Advertiser, campaign, group or creative.
        kind: &'static str,
        /// The item's id.
        id: String,
    },
    /// An event that cannot be counted (a click without its impression, a forged impression id).
    #[error("event refused: {0}")]
    Event(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] starling_embed::EmbedError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// A data file is malformed.
    #[error(transparent)]
    Data(#[from] starling_artifacts::Malformed),
}

impl Error {
    /// An invalid field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// A missing item.
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A deleted item asked to change.
    pub fn deleted(kind: &'static str, id: &str) -> Self {
        Error::Deleted {
            kind,
            id: id.to_string(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(path, source))
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
