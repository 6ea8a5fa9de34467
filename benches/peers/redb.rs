//! redb peer: one `Database` shared by all clients, one `WriteTransaction` per transition with
//! the default durability (`Durability::Immediate`: durable when `commit` returns). redb
//! serialises write transactions; the part's bytes are in the same value as its metadata.

use std::path::Path;

use ::redb::{Database, ReadableTable as _, TableDefinition};

use super::workload::{
    Abort, BoxError, Complete, Create, PutPart, TransitionClient, TransitionStore,
};

/// upload id -> (bucket, key, initiated_ms).
const UPLOADS: TableDefinition<&[u8], (&str, &str, u64)> = TableDefinition::new("uploads");
/// (bucket, key, upload id) -> (): ListMultipartUploads' order.
const UPLOADS_BY_KEY: TableDefinition<(&str, &str, &[u8]), ()> =
    TableDefinition::new("uploads_by_key");
/// A part: (size, etag, last_modified_ms, bytes).
type PartValue = (u64, &'static str, u64, &'static [u8]);
/// (upload id, part number) -> [`PartValue`].
const PARTS: TableDefinition<(&[u8], u32), PartValue> = TableDefinition::new("parts");
/// An object: (etag, size, last_modified_ms, upload id).
type ObjectValue = (&'static str, u64, u64, &'static [u8]);
/// (bucket, key) -> [`ObjectValue`].
const OBJECTS: TableDefinition<(&str, &str), ObjectValue> = TableDefinition::new("objects");

/// The redb peer.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Creates the database and its tables in `dir`.
    pub fn open(dir: &Path) -> Result<RedbStore, BoxError> {
        let db = Database::create(dir.join("mpu.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(UPLOADS)?;
        tx.open_table(UPLOADS_BY_KEY)?;
        tx.open_table(PARTS)?;
        tx.open_table(OBJECTS)?;
        tx.commit()?;
        Ok(RedbStore { db })
    }
}

impl TransitionStore for RedbStore {
    type Client<'s> = RedbClient<'s>;

    fn client(&self, _index: usize) -> Result<RedbClient<'_>, BoxError> {
        Ok(RedbClient { db: &self.db })
    }
}

/// A client: a borrow of the shared database.
pub struct RedbClient<'s> {
    db: &'s Database,
}

impl RedbClient<'_> {
    /// Removes the upload and its index entry; an error if it is not (bucket, key)'s upload.
    fn remove_upload(
        tx: &::redb::WriteTransaction,
        upload: &[u8],
        bucket: &str,
        key: &str,
    ) -> Result<(), BoxError> {
        let mut uploads = tx.open_table(UPLOADS)?;
        let found = uploads.remove(upload)?.map(|g| {
            let (b, k, _) = g.value();
            b == bucket && k == key
        });
        if found != Some(true) {
            return Err("no such upload".into());
        }
        tx.open_table(UPLOADS_BY_KEY)?.remove((bucket, key, upload))?;
        Ok(())
    }
}

impl TransitionClient for RedbClient<'_> {
    fn create(&mut self, t: &Create<'_>) -> Result<(), BoxError> {
        let tx = self.db.begin_write()?;
        {
            let id = &t.upload.0[..];
            tx.open_table(UPLOADS)?.insert(id, (t.bucket, t.key, t.initiated_ms))?;
            tx.open_table(UPLOADS_BY_KEY)?.insert((t.bucket, t.key, id), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn put_part(&mut self, t: &PutPart<'_>) -> Result<[u8; 16], BoxError> {
        let (md5, md5_hex) = super::workload::part_etag(t.payload);
        let tx = self.db.begin_write()?;
        {
            let id = &t.upload.0[..];
            if tx.open_table(UPLOADS)?.get(id)?.is_none() {
                return Err(format!("no such upload {}", t.upload).into());
            }
            let size = u64::try_from(t.payload.len())?;
            tx.open_table(PARTS)?
                .insert((id, t.part_number), (size, &*md5_hex, t.now_ms, t.payload))?;
        }
        tx.commit()?;
        Ok(md5)
    }

    fn complete(&mut self, t: &Complete<'_>) -> Result<(), BoxError> {
        let tx = self.db.begin_write()?;
        {
            let id = &t.upload.0[..];
            Self::remove_upload(&tx, id, t.bucket, t.key)
                .map_err(|e| format!("{e} {}", t.upload))?;
            let mut parts = tx.open_table(PARTS)?;
            for part in t.parts {
                // The stored part must be the one the request names (InvalidPart otherwise).
                let matches =
                    parts.remove((id, part.part_number))?.map(|g| g.value().1 == part.md5_hex);
                if matches != Some(true) {
                    return Err(format!("invalid part {} of {}", part.part_number, t.upload).into());
                }
            }
            tx.open_table(OBJECTS)?.insert((t.bucket, t.key), (t.etag, t.size, t.now_ms, id))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn abort(&mut self, t: &Abort<'_>) -> Result<(), BoxError> {
        let tx = self.db.begin_write()?;
        {
            let id = &t.upload.0[..];
            Self::remove_upload(&tx, id, t.bucket, t.key)
                .map_err(|e| format!("{e} {}", t.upload))?;
            // Every part of the upload, whatever the request says.
            let mut parts = tx.open_table(PARTS)?;
            parts.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }
}
