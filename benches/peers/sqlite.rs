//! SQLite peer: one database file, `journal_mode=WAL`, `synchronous=FULL` (every commit
//! fsyncs the WAL), one connection per client, one `BEGIN IMMEDIATE` transaction per
//! transition, the part's bytes as a BLOB in the same row as its metadata. SQLite serialises
//! writers; waiting clients sleep in SQLite's busy handler (`busy_timeout`) rather than fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use super::workload::{
    Abort, BoxError, Complete, Create, PutPart, TransitionClient, TransitionStore,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    upload_id BLOB PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    initiated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts (
    upload_id BLOB NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    upload_id BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
";

/// How long a writer waits for the write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The SQLite peer: the database file all clients open.
pub struct SqliteStore {
    path: PathBuf,
}

impl SqliteStore {
    /// Creates the database (schema, WAL mode) in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore, BoxError> {
        let path = dir.join("mpu.sqlite3");
        let conn = connect(&path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { path })
    }
}

/// A connection with the durability settings checked, not just asked for.
fn connect(path: &Path) -> Result<Connection, BoxError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite refused journal_mode=WAL (got {mode})").into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    if synchronous != 2 {
        return Err(format!("SQLite synchronous is {synchronous}, not FULL (2)").into());
    }
    Ok(conn)
}

impl TransitionStore for SqliteStore {
    type Client<'s> = SqliteClient;

    fn client(&self, _index: usize) -> Result<SqliteClient, BoxError> {
        Ok(SqliteClient { conn: connect(&self.path)? })
    }
}

/// One client's connection.
pub struct SqliteClient {
    conn: Connection,
}

fn as_i64(value: u64) -> Result<i64, BoxError> {
    Ok(i64::try_from(value)?)
}

impl TransitionClient for SqliteClient {
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO uploads (upload_id, bucket, key, initiated_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![&t.upload.0[..], t.bucket, t.key, as_i64(t.initiated_ms)?])?;
        tx.commit()?;
        Ok(())
    }

    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError> {
        let (md5, md5_hex) = super::workload::part_etag(t.payload);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Only for an upload that exists (NoSuchUpload otherwise); a second put replaces.
        let inserted = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO parts
                     (upload_id, part_number, size, etag, last_modified_ms, data)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6
                 WHERE EXISTS (SELECT 1 FROM uploads WHERE upload_id = ?1)",
            )?
            .execute(params![
                &t.upload.0[..],
                t.part_number,
                as_i64(u64::try_from(t.payload.len())?)?,
                md5_hex,
                as_i64(t.now_ms)?,
                t.payload,
            ])?;
        if inserted != 1 {
            return Err(format!("no such upload {}", t.upload).into());
        }
        tx.commit()?;
        Ok(md5)
    }

    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx
            .prepare_cached(
                "DELETE FROM uploads WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3",
            )?
            .execute(params![&t.upload.0[..], t.bucket, t.key])?;
        if removed != 1 {
            return Err(format!("no such upload {}", t.upload).into());
        }
        {
            // The stored parts must be the ones the request names (InvalidPart otherwise).
            let mut stmt = tx.prepare_cached(
                "DELETE FROM parts WHERE upload_id = ?1 RETURNING part_number, etag",
            )?;
            let mut stored: Vec<(u32, String)> = stmt
                .query_map(params![&t.upload.0[..]], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            stored.sort_unstable();
            let named = t.parts.iter().map(|p| (p.part_number, p.md5_hex.as_str()));
            if !stored.iter().map(|(n, e)| (*n, e.as_str())).eq(named) {
                return Err(format!("the parts of {} differ from the request", t.upload).into());
            }
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO objects (bucket, key, etag, size, last_modified_ms, upload_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            t.bucket,
            t.key,
            t.etag,
            as_i64(t.size)?,
            as_i64(t.now_ms)?,
            &t.upload.0[..]
        ])?;
        tx.commit()?;
        Ok(())
    }

    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx
            .prepare_cached(
                "DELETE FROM uploads WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3",
            )?
            .execute(params![&t.upload.0[..], t.bucket, t.key])?;
        if removed != 1 {
            return Err(format!("no such upload {}", t.upload).into());
        }
        tx.prepare_cached("DELETE FROM parts WHERE upload_id = ?1")?
            .execute(params![&t.upload.0[..]])?;
        tx.commit()?;
        Ok(())
    }
}
