//! Changes to a live index read from post files: new posts (with entities), deletions of posts
//! and of users' posts, and what could not be used. Shared by `starling index add` and `serve`.

use starling_corpus::read::{read_file, Deletion, Item, Quarantined, ReadOptions};
use starling_corpus::Post;
use std::path::Path;

/// What one or more files ask of an index.
#[derive(Debug, Default)]
pub struct Updates {
    /// Posts to add (or replace), entities extracted.
    pub posts: Vec<Post>,
    /// Post ids to delete.
    pub deletions: Vec<String>,
    /// User ids whose posts to delete.
    pub user_deletions: Vec<String>,
    /// Records that could not be used, with file, line and reason.
    pub quarantined: Vec<Quarantined>,
    /// Other notices (counted, not applied).
    pub other: usize,
}

impl Updates {
    /// Adds what `path` holds (any format the corpus stage reads).
    pub fn read(&mut self, path: &Path) -> starling_corpus::Result<()> {
        read_file(path, &ReadOptions::default(), &mut |item| match item {
            Item::Post(p) => {
                let mut p = *p;
                match starling_text::try_extract_entities(&p.text) {
                    Ok(e) => {
                        p.entities = e;
                        self.posts.push(p);
                    }
                    Err(message) => self.quarantined.push(Quarantined {
                        raw_bytes: p.text.len() as u64,
                        reason: format!("entity extraction failed: {message}"),
                        file: p.origin.file,
                        line: p.origin.line,
                        raw: p.text,
                    }),
                }
            }
            Item::Deletion(Deletion::Post(id)) => self.deletions.push(id),
            Item::Deletion(Deletion::User(u)) => self.user_deletions.push(u),
            Item::Notice(_) => self.other += 1,
            Item::Quarantined(q) => self.quarantined.push(q),
        })
        .map(|_| ())
    }

    /// Records read: posts + deletions + user deletions + quarantined + other.
    pub fn records(&self) -> usize {
        self.posts.len()
            + self.deletions.len()
            + self.user_deletions.len()
            + self.quarantined.len()
            + self.other
    }
}
