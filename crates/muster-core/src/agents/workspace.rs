//! What an attempt changed in its workspace: a listing of a directory (path, size,
//! modification time) taken before and after the attempt, and the paths that differ.
//!
//! It backs the scope check of capabilities that name a workspace (`workspace = "field"`):
//! the instance lists the directory off the actor's thread before and after each attempt
//! of a scoped task, and a changed path outside the write scope fails the attempt as a
//! contract violation. It reads metadata only, never file contents, and never follows a
//! symbolic link. It must not decide anything about scopes: the caller checks the paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The most files a workspace listing takes in; a larger workspace fails the attempt
/// with a clear reason instead of growing memory without bound.
pub const MAX_WORKSPACE_FILES: usize = 100_000;

/// Every file under a directory: its path relative to the directory (with `/`), its size
/// and its modification time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing(BTreeMap<String, (u64, Option<SystemTime>)>);

impl Listing {
    /// Lists `dir` (an absent directory lists as empty).
    ///
    /// # Example
    /// ```
    /// use muster_core::agents::workspace::Listing;
    /// let dir = std::env::temp_dir().join(format!("muster-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(dir.join("src")).unwrap();
    /// let before = Listing::of(&dir).unwrap();
    /// std::fs::write(dir.join("src/a.txt"), "new").unwrap();
    /// let after = Listing::of(&dir).unwrap();
    /// assert_eq!(before.changed(&after), ["src/a.txt"]);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn of(dir: &Path) -> Result<Listing, ListingError> {
        let mut files = BTreeMap::new();
        if !dir.exists() {
            return Ok(Listing(files));
        }
        let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|source| ListingError::Read {
                dir: d.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let meta = entry.metadata().ok();
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.insert(
                    key,
                    (
                        meta.as_ref().map_or(0, |m| m.len()),
                        meta.and_then(|m| m.modified().ok()),
                    ),
                );
                if files.len() > MAX_WORKSPACE_FILES {
                    return Err(ListingError::TooMany {
                        dir: dir.to_path_buf(),
                    });
                }
            }
        }
        Ok(Listing(files))
    }

    /// The paths added, changed (size or modification time) or removed in `after`,
    /// sorted.
    pub fn changed(&self, after: &Listing) -> Vec<String> {
        let mut out: Vec<String> = after
            .0
            .iter()
            .filter(|(path, meta)| self.0.get(*path) != Some(meta))
            .map(|(path, _)| path.clone())
            .collect();
        out.extend(
            self.0
                .keys()
                .filter(|path| !after.0.contains_key(*path))
                .cloned(),
        );
        out.sort();
        out
    }
}

/// A workspace that cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// A directory of it cannot be read.
    #[error("cannot list {}: {source}", dir.display())]
    Read {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds more files than a listing keeps.
    #[error("the workspace {} holds more than {MAX_WORKSPACE_FILES} files", dir.display())]
    TooMany {
        /// The workspace.
        dir: PathBuf,
    },
    /// The blocking task that lists it panicked or was cancelled.
    #[error("the workspace listing failed: {source}")]
    Task {
        /// Why.
        source: tokio::task::JoinError,
    },
}

/// Lists `dir` on tokio's blocking pool, so a large workspace never stalls an actor.
pub async fn listing(dir: PathBuf) -> Result<Listing, ListingError> {
    tokio::task::spawn_blocking(move || Listing::of(&dir))
        .await
        .unwrap_or_else(|source| Err(ListingError::Task { source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_modified_and_removed_files_are_changed_and_untouched_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("src/deep")).unwrap();
        std::fs::write(d.join("keep.txt"), "same").unwrap();
        std::fs::write(d.join("src/edit.txt"), "one").unwrap();
        std::fs::write(d.join("gone.txt"), "bye").unwrap();
        let before = Listing::of(d).unwrap();
        std::fs::write(d.join("src/edit.txt"), "longer now").unwrap();
        std::fs::write(d.join("src/deep/new.txt"), "hi").unwrap();
        std::fs::remove_file(d.join("gone.txt")).unwrap();
        let after = Listing::of(d).unwrap();
        assert_eq!(
            before.changed(&after),
            ["gone.txt", "src/deep/new.txt", "src/edit.txt"]
        );
        assert!(after.changed(&after).is_empty());
    }

    #[test]
    fn an_absent_directory_lists_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let l = Listing::of(&dir.path().join("not-there")).unwrap();
        assert_eq!(l, Listing::default());
    }
}
