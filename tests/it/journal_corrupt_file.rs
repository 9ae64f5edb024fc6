//! A file that is not a muster journal is refused with an error naming it, and is left
//! byte for byte as it was: a text file, random bytes, a foreign SQLite database.

use std::path::Path;

use muster::journal::{Durability, JournalError, SqliteJournal, sqlite::read_journal};

fn refused_unchanged(path: &Path, expect: fn(&JournalError) -> bool) {
    let before = std::fs::read(path).unwrap();
    let dir_before = siblings(path);
    for durability in [Durability::Sync, Durability::Relaxed] {
        let err = SqliteJournal::open(path, durability).expect_err("must be refused");
        assert!(expect(&err), "unexpected error: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()),
            "the error names the file: {text}"
        );
        assert!(text.contains("not a muster journal"), "{text}");
    }
    let err = read_journal(path, 0).expect_err("the reader refuses it too");
    assert!(expect(&err), "{err:?}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(
        siblings(path),
        dir_before,
        "no -wal/-shm or other file was created"
    );

    // The CLI: exit 2, a message naming the file, the file unchanged.
    let out = crate::support::common::muster()
        .args(["inspect", "--journal"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "inspect left it unchanged"
    );
}

fn siblings(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_text_file_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    std::fs::write(&path, "these are my notes, not a database\n").unwrap();
    refused_unchanged(&path, |e| matches!(e, JournalError::NotSqlite { .. }));
}

#[test]
fn random_bytes_are_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    // Deterministic pseudo-random bytes (xorshift), 64 KiB.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    refused_unchanged(&path, |e| matches!(e, JournalError::NotSqlite { .. }));
}

#[test]
fn a_sqlite_file_with_the_header_but_garbage_after_it_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(vec![0xA5u8; 8192]);
    std::fs::write(&path, &bytes).unwrap();
    refused_unchanged(&path, |e| matches!(e, JournalError::NotSqlite { .. }));
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users(name) VALUES ('ada'), ('grace');",
        )
        .unwrap();
    }
    refused_unchanged(
        &path,
        |e| matches!(e, JournalError::Foreign { detail, .. } if detail.contains("users")),
    );
}

#[test]
fn a_foreign_database_with_its_own_meta_table_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
             INSERT INTO meta VALUES ('format', 'someone-else');",
        )
        .unwrap();
    }
    refused_unchanged(&path, |e| matches!(e, JournalError::Foreign { .. }));
}

#[test]
fn a_missing_journal_is_a_clear_error_for_inspect_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let out = crate::support::common::muster()
        .args(["inspect", "--journal"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("absent.db") && stderr.contains("no journal"),
        "{stderr}"
    );
    assert!(!path.exists(), "inspect created nothing");
}
