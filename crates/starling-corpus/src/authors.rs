//! An author allow-list: only the listed authors' posts are trained on (`starling corpus --authors`).
//!
//! The file holds one author per line: an id or a handle (a leading `@` is dropped, handles
//! match case-insensitively), optionally followed by more columns after a tab or comma (so a
//! label file like PAN 2019's `truth-*.tsv`, filtered to the rows wanted, serves as it is).
//! Blank lines, `#` comments and a header line whose first field is `author` are skipped.
//! Posts that name no author (plain text files, CSVs without an author column) are not judged
//! by the list: it says who may be trained on, and such posts say nothing about who wrote them.
//! A list may be scoped to some inputs ([`AuthorList::scoped`]): posts of the others pass, so
//! one dataset's authors can be chosen while other sources are kept whole.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::Post;

/// The authors whose posts alone are kept, among posts that name an author.
#[derive(Debug, Clone)]
pub struct AuthorList {
    keys: Arc<HashSet<String>>,
    scope: Vec<std::path::PathBuf>,
    /// Where it came from, for the data card.
    pub source: AuthorListSource,
}

/// What the data card records about an author list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthorListSource {
    /// The file as given.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Distinct authors it lists.
    pub authors: usize,
    /// The inputs it applies to (files, or directories holding them); empty: every input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
}

impl AuthorList {
    /// Reads a list; a file that lists nobody is refused (it would remove every post with an author).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let (sha256, _) =
            starling_artifacts::sha256_reader(text.as_bytes()).map_err(|e| Error::io(path, e))?;
        let list = Self::parse(&text, path.display().to_string(), sha256);
        if list.keys.is_empty() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                line: 0,
                message: "the author list names no author".into(),
            });
        }
        Ok(list)
    }

    /// A list from the text of a list file.
    pub fn parse(text: &str, file: String, sha256: String) -> Self {
        let mut keys = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let first = line
                .split(['\t', ','])
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches('\u{feff}');
            if first.is_empty() || first.starts_with('#') || (i == 0 && first == "author") {
                continue;
            }
            keys.insert(key(first));
        }
        let authors = keys.len();
        Self {
            keys: Arc::new(keys),
            scope: Vec::new(),
            source: AuthorListSource {
                file,
                sha256,
                authors,
                inputs: Vec::new(),
            },
        }
    }

    /// The list applied only to posts read from `inputs` (files, or directories holding them, as
    /// given on the command line); empty applies it to every input.
    pub fn scoped(mut self, inputs: &[std::path::PathBuf]) -> Self {
        self.scope = inputs.to_vec();
        self.source.inputs = inputs.iter().map(|p| p.display().to_string()).collect();
        self
    }

    /// Whether `post` may be trained on: its author (id or handle) is listed, or it names none.
    pub fn admits(&self, post: &Post) -> bool {
        let file = Path::new(&post.origin.file);
        if !self.scope.is_empty() && !self.scope.iter().any(|s| file.starts_with(s)) {
            return true;
        }
        let named = [post.author_id.as_deref(), post.author_handle.as_deref()];
        if named.iter().all(|a| a.is_none_or(str::is_empty)) {
            return true;
        }
        named
            .into_iter()
            .flatten()
            .any(|a| self.keys.contains(&key(a)))
    }
}

fn key(author: &str) -> String {
    author.trim().trim_start_matches('@').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: Option<&str>, handle: Option<&str>) -> Post {
        let origin = crate::Origin {
            file: "f".into(),
            line: 1,
            nested: false,
        };
        let mut p = Post::new("1".into(), "text".into(), origin);
        p.author_id = id.map(str::to_string);
        p.author_handle = handle.map(str::to_string);
        p
    }

    #[test]
    fn a_label_file_filtered_to_its_rows_lists_their_authors() {
        let text = "author\ttype\tgender\n\
                    b2d57480\thuman\tmale\n\
                    # a comment\n\
                    \n\
                    @Kezzang69,whatever\n";
        let list = AuthorList::parse(text, "t.tsv".into(), String::new());
        assert_eq!(list.source.authors, 2);
        assert!(list.admits(&post(None, Some("B2D57480"))));
        assert!(list.admits(&post(Some("kezzang69"), None)));
        assert!(!list.admits(&post(None, Some("2bed15d4"))));
        assert!(!list.admits(&post(Some("123"), Some("other"))));
        // A post that names nobody is not the list's to judge.
        assert!(list.admits(&post(None, None)));
        assert!(list.admits(&post(Some(""), None)));
        // Either the id or the handle may be the listed one.
        assert!(list.admits(&post(Some("999"), Some("@b2d57480"))));
        // Scoped to other inputs, it judges nobody here ("f"); scoped to "f", it does.
        let scoped = list.clone().scoped(&["data/pan".into()]);
        assert!(scoped.admits(&post(Some("123"), Some("other"))));
        assert!(!list.scoped(&["f".into()]).admits(&post(Some("123"), None)));
    }

    #[test]
    fn an_empty_list_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("authors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("none.txt");
        std::fs::write(&path, "author\n# nobody\n").unwrap();
        let err = AuthorList::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("none.txt") && err.contains("names no author"),
            "{err}"
        );
    }
}
