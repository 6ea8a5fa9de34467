#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::Read;
use std::sync::Arc;

use tessera_engine::payload::{Checksum, ChecksumAlgorithm};
use tessera_engine::{
    AbortRule, ChecksumSpec, ChecksumType, CompletePart, Completion, Engine, EngineConfig,
    EngineError, ListObjects, ListParts, ListUploads, ManualClock, ObjectMeta, ObjectPut, PartCopy,
    PartUpload,
};

const MIB: usize = 1 << 20;

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Option<Engine>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        Fixture { dir, clock, engine: Some(engine) }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.engine = None;
        self.engine = Some(Engine::open(self.dir.path(), config(&self.clock)).unwrap());
    }

    fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        bytes: &[u8],
    ) -> Result<[u8; 16], EngineError> {
        let request = PartUpload {
            bucket: "bk1",
            key,
            upload_id,
            part_number: number,
            content_length: Some(bytes.len() as u64),
            ..PartUpload::default()
        };
        let stored = self.engine().put_part("alice", &request, &mut &bytes[..])?;
        Ok(stored.part.etag.md5)
    }

    fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, [u8; 16])],
    ) -> Result<tessera_engine::ObjectInfo, EngineError> {
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletePart { part_number: *n, etag: *etag, checksum: None })
            .collect();
        self.engine().complete_upload(
            "alice",
            &Completion { bucket: "bk1", key, upload_id, parts, ..Completion::default() },
        )
    }

    fn read(&self, key: &str, range: Option<(u64, u64)>) -> Vec<u8> {
        let (_, mut reader) = self.engine().open_object("bk1", key, range).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        out
    }
}

#[test]
fn multipart_upload_completes_with_s3_etag_and_survives_reopen() {
    let mut f = Fixture::new();
    f.engine().create_bucket("alice", "bk1").unwrap();
    let upload =
        f.engine().create_upload("alice", "bk1", "big/object", ObjectMeta::default()).unwrap();
    let id = upload.upload_id.to_string();
    let parts: Vec<Vec<u8>> = [b'A', b'B', b'C'].iter().map(|b| vec![*b; 5 * MIB]).collect();
    let mut etags = Vec::new();
    for (i, bytes) in parts.iter().enumerate() {
        etags.push((i as u32 + 1, f.put_part("big/object", &id, i as u32 + 1, bytes).unwrap()));
    }
    let object = f.complete("big/object", &id, &etags).unwrap();
    assert_eq!(object.etag.to_string(), "b2add96cc9702bbf4efb0ccdfc6b7747-3");
    assert_eq!(object.size_bytes, 15 * MIB as u64);
    // A second completion with the same parts returns the same object.
    assert_eq!(f.complete("big/object", &id, &etags).unwrap(), object);
    // The upload is gone.
    assert!(matches!(
        f.engine().abort_upload("alice", "bk1", "big/object", &id, None),
        Err(EngineError::NoSuchUpload { .. })
    ));
    f.reopen();
    assert_eq!(f.engine().head_object("bk1", "big/object").unwrap(), object);
    let bytes = f.read("big/object", Some((5 * MIB as u64 - 2, 5 * MIB as u64 + 1)));
    assert_eq!(bytes, b"AABB");
    assert_eq!(f.complete("big/object", &id, &etags).unwrap(), object);
}

#[test]
fn part_rules_and_errors() {
    let f = Fixture::new();
    f.engine().create_bucket("alice", "bk1").unwrap();
    let id = f
        .engine()
        .create_upload("alice", "bk1", "k", ObjectMeta::default())
        .unwrap()
        .upload_id
        .to_string();
    for bad in [0, 10_001] {
        assert!(matches!(
            f.put_part("k", &id, bad, b"x"),
            Err(EngineError::InvalidArgument { .. })
        ));
    }
    assert!(matches!(f.put_part("k", "nonsense", 1, b"x"), Err(EngineError::NoSuchUpload { .. })));
    assert!(matches!(f.put_part("other", &id, 1, b"x"), Err(EngineError::NoSuchUpload { .. })));
    // Content-MD5 mismatch, inline and stored.
    for len in [10usize, 100_000] {
        let bytes = vec![7u8; len];
        let request = PartUpload {
            bucket: "bk1",
            key: "k",
            upload_id: &id,
            part_number: 1,
            content_length: Some(len as u64),
            content_md5: Some([0; 16]),
            ..PartUpload::default()
        };
        let err = f.engine().put_part("alice", &request, &mut &bytes[..]).unwrap_err();
        assert_eq!(err.s3_code(), "BadDigest", "{err}");
    }
    // Replacing a part: the last one wins.
    let first = f.put_part("k", &id, 2, b"first").unwrap();
    let second = f.put_part("k", &id, 2, b"second").unwrap();
    assert_ne!(first, second);
    let page = f.engine().list_parts("bk1", "k", &id, &ListParts::default()).unwrap();
    assert_eq!(page.parts.len(), 1);
    assert_eq!(page.parts[0].etag.md5, second);
    // Completion errors.
    assert!(matches!(f.complete("k", &id, &[]), Err(EngineError::MalformedXml)));
    assert!(matches!(f.complete("k", &id, &[(2, first)]), Err(EngineError::InvalidPart { .. })));
    assert!(matches!(f.complete("k", &id, &[(3, second)]), Err(EngineError::InvalidPart { .. })));
    let one = f.put_part("k", &id, 1, b"small").unwrap();
    assert!(matches!(
        f.complete("k", &id, &[(2, second), (1, one)]),
        Err(EngineError::InvalidPartOrder { .. })
    ));
    assert!(matches!(
        f.complete("k", &id, &[(1, one), (2, second)]),
        Err(EngineError::EntityTooSmall { part_number: 1, .. })
    ));
    // Skipping numbers is fine; only the listed part is kept.
    let object = f.complete("k", &id, &[(2, second)]).unwrap();
    assert_eq!(object.parts_count, Some(1));
    assert_eq!(f.read("k", None), b"second");
}

#[test]
fn listings_page_and_group() {
    let f = Fixture::new();
    let e = f.engine();
    e.create_bucket("alice", "bk1").unwrap();
    let mut ids = Vec::new();
    for key in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
        for _ in 0..2 {
            ids.push((
                key,
                e.create_upload("alice", "bk1", key, ObjectMeta::default()).unwrap().upload_id,
            ));
            f.clock.advance_ms(1);
        }
    }
    let all = e.list_uploads("bk1", &ListUploads::default()).unwrap();
    assert_eq!(all.uploads.len(), 12);
    assert!(!all.is_truncated);
    let keys: Vec<_> = all.uploads.iter().map(|u| (&*u.key, u.upload_id)).collect();
    assert_eq!(keys, ids);
    // Paging by three, with markers.
    let mut seen = Vec::new();
    let mut args = ListUploads { max_uploads: Some(3), ..ListUploads::default() };
    loop {
        let page = e.list_uploads("bk1", &args).unwrap();
        seen.extend(page.uploads.iter().map(|u| u.upload_id));
        if !page.is_truncated {
            break;
        }
        args.key_marker = page.next_key_marker;
        args.upload_id_marker = page.next_upload_id_marker;
    }
    assert_eq!(seen, ids.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    // Delimiter.
    let grouped = e
        .list_uploads("bk1", &ListUploads { delimiter: Some("/".into()), ..ListUploads::default() })
        .unwrap();
    assert_eq!(grouped.common_prefixes, vec!["a/", "c/"]);
    assert_eq!(grouped.uploads.iter().map(|u| &*u.key).collect::<Vec<_>>(), ["b", "b", "d", "d"]);
    let under_c = e
        .list_uploads(
            "bk1",
            &ListUploads {
                prefix: "c/".into(),
                delimiter: Some("/".into()),
                ..ListUploads::default()
            },
        )
        .unwrap();
    assert_eq!(under_c.common_prefixes, vec!["c/x/"]);
    assert_eq!(under_c.uploads.len(), 2);
    // Objects.
    for key in ["x/1", "x/2", "y", "z/q"] {
        let put = ObjectPut { bucket: "bk1", key, content_length: Some(1), ..ObjectPut::default() };
        e.put_object("alice", &put, &mut &b"1"[..]).unwrap();
    }
    let page = e
        .list_objects(
            "bk1",
            &ListObjects {
                delimiter: Some("/".into()),
                max_keys: Some(2),
                ..ListObjects::default()
            },
        )
        .unwrap();
    assert_eq!(page.common_prefixes, vec!["x/"]);
    assert_eq!(page.objects.len(), 1);
    assert!(page.is_truncated);
    let rest = e
        .list_objects(
            "bk1",
            &ListObjects {
                delimiter: Some("/".into()),
                start_after: page.next_start_after,
                ..ListObjects::default()
            },
        )
        .unwrap();
    assert_eq!(rest.common_prefixes, vec!["z/"]);
    assert!(rest.objects.is_empty());
    assert!(!rest.is_truncated);
    // A page of nothing is empty and not truncated (a client would follow it forever).
    let none = e
        .list_objects("bk1", &ListObjects { max_keys: Some(0), ..ListObjects::default() })
        .unwrap();
    assert!(none.objects.is_empty() && none.common_prefixes.is_empty() && !none.is_truncated);
    let (key, id) = (ids[0].0, ids[0].1.to_string());
    let parts = e
        .list_parts("bk1", key, &id, &ListParts { max_parts: Some(0), ..ListParts::default() })
        .unwrap();
    assert!(parts.parts.is_empty() && !parts.is_truncated);
    let err = e
        .list_uploads("bk1", &ListUploads { max_uploads: Some(0), ..ListUploads::default() })
        .unwrap_err();
    assert_eq!(err.s3_code(), "InvalidArgument");
}

#[test]
fn buckets_lifecycle_and_expiry() {
    let f = Fixture::new();
    let e = f.engine();
    assert!(matches!(
        e.create_bucket("alice", "Bad_Name"),
        Err(EngineError::InvalidBucketName { .. })
    ));
    e.create_bucket("alice", "bk1").unwrap();
    assert!(matches!(
        e.create_bucket("alice", "bk1"),
        Err(EngineError::BucketAlreadyOwnedByYou { .. })
    ));
    let upload = e.create_upload("alice", "bk1", "k", ObjectMeta::default()).unwrap();
    assert!(matches!(e.delete_bucket("alice", "bk1"), Err(EngineError::BucketNotEmpty { .. })));
    let rule = AbortRule { id: "two-days".to_owned(), prefix: String::new(), days: 2 };
    e.set_lifecycle("alice", "bk1", vec![rule]).unwrap();
    assert_eq!(e.expire_due().unwrap().uploads, 0);
    f.clock.advance_ms(2 * e.config().day_ms - 1);
    assert_eq!(e.expire_due().unwrap().uploads, 0);
    f.clock.advance_ms(1);
    let report = e.expire_due().unwrap();
    assert_eq!(report.uploads, 1);
    assert!(matches!(
        e.get_upload("bk1", "k", &upload.upload_id.to_string()),
        Err(EngineError::NoSuchUpload { .. })
    ));
    e.delete_bucket("alice", "bk1").unwrap();
    assert!(e.list_buckets().is_empty());
    e.checkpoint().unwrap();
    let stats = e.stats();
    assert_eq!((stats.expired_uploads, stats.checkpoints), (1, 1));
    // Six transitions, each its own batch (one writer): one fdatasync each.
    assert_eq!((stats.wal.records, stats.wal.batches), (6, 6), "{stats:?}");
    assert_eq!(stats.wal.batch_records_histogram[1], 6, "batches of one record");
    assert_eq!(stats.wal.sync_us_histogram.iter().sum::<u64>(), 6);
}

#[test]
fn checksums_composite_and_full_object() {
    let f = Fixture::new();
    let e = f.engine();
    e.create_bucket("alice", "bk1").unwrap();
    for kind in [ChecksumType::Composite, ChecksumType::FullObject] {
        let spec = ChecksumSpec { algorithm: ChecksumAlgorithm::Crc32c, kind };
        let meta = ObjectMeta { checksum: Some(spec), ..ObjectMeta::default() };
        let id = e.create_upload("alice", "bk1", "sum", meta).unwrap().upload_id.to_string();
        let data: Vec<u8> = (0..(5 * MIB + 3)).map(|i| (i % 251) as u8).collect();
        let (a, b) = data.split_at(5 * MIB);
        let mut listed = Vec::new();
        for (n, bytes) in [(1u32, a), (2, b)] {
            let request = PartUpload {
                bucket: "bk1",
                key: "sum",
                upload_id: &id,
                part_number: n,
                content_length: Some(bytes.len() as u64),
                ..PartUpload::default()
            };
            let stored = e.put_part("alice", &request, &mut &bytes[..]).unwrap();
            let checksum = stored.part.checksum.clone().unwrap();
            assert_eq!(checksum.algorithm, ChecksumAlgorithm::Crc32c);
            assert_eq!(checksum.value, crc32c::crc32c(bytes).to_be_bytes());
            listed.push(CompletePart {
                part_number: n,
                etag: stored.part.etag.md5,
                checksum: Some(checksum.value),
            });
        }
        let mut missing = listed.clone();
        missing[1].checksum = None;
        let err = e
            .complete_upload(
                "alice",
                &Completion {
                    bucket: "bk1",
                    key: "sum",
                    upload_id: &id,
                    parts: missing,
                    ..Completion::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.s3_code(), "BadDigest");
        let expected = match kind {
            ChecksumType::FullObject => crc32c::crc32c(&data).to_be_bytes().to_vec(),
            ChecksumType::Composite => {
                let mut raw = Vec::new();
                for part in &listed {
                    raw.extend(part.checksum.clone().unwrap());
                }
                crc32c::crc32c(&raw).to_be_bytes().to_vec()
            }
        };
        // The object checksum the client sends with the completion must be the object's.
        let complete = |object_checksum: Option<Checksum>| {
            e.complete_upload(
                "alice",
                &Completion {
                    bucket: "bk1",
                    key: "sum",
                    upload_id: &id,
                    parts: listed.clone(),
                    object_checksum,
                    ..Completion::default()
                },
            )
        };
        let sent = |algorithm, value: &[u8]| Some(Checksum { algorithm, value: value.to_vec() });
        let mut wrong = expected.clone();
        wrong[0] ^= 1;
        for (bad, reason) in [
            (sent(ChecksumAlgorithm::Crc32c, &wrong), "another value"),
            (sent(ChecksumAlgorithm::Crc32, &expected), "another algorithm"),
        ] {
            assert_eq!(complete(bad).unwrap_err().s3_code(), "BadDigest", "{kind:?}: {reason}");
        }
        e.get_upload("bk1", "sum", &id).expect("a refused completion leaves the upload open");
        let object = complete(sent(ChecksumAlgorithm::Crc32c, &expected)).unwrap();
        let checksum = object.checksum.clone().unwrap();
        assert_eq!(checksum.checksum.value, expected);
        match kind {
            ChecksumType::FullObject => assert_eq!(checksum.parts, None),
            ChecksumType::Composite => assert_eq!(checksum.parts, Some(2)),
        }
        // A repeated completion is checked against the object it made.
        assert_eq!(complete(sent(ChecksumAlgorithm::Crc32c, &expected)).unwrap(), object);
        let repeated = complete(sent(ChecksumAlgorithm::Crc32c, &wrong)).unwrap_err();
        assert_eq!(repeated.s3_code(), "BadDigest");
    }
    // An upload without a checksum algorithm has no object checksum to compare.
    let id = e.create_upload("alice", "bk1", "plain", ObjectMeta::default()).unwrap();
    let id = id.upload_id.to_string();
    let part = f.put_part("plain", &id, 1, b"abc").unwrap();
    let err = e
        .complete_upload(
            "alice",
            &Completion {
                bucket: "bk1",
                key: "plain",
                upload_id: &id,
                parts: vec![CompletePart { part_number: 1, etag: part, checksum: None }],
                object_checksum: Some(Checksum {
                    algorithm: ChecksumAlgorithm::Crc32,
                    value: vec![0; 4],
                }),
                ..Completion::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.s3_code(), "InvalidRequest");
    // A checksum the client sent that does not match is BadDigest.
    let put = ObjectPut {
        bucket: "bk1",
        key: "p",
        content_length: Some(3),
        checksums: vec![Checksum { algorithm: ChecksumAlgorithm::Crc32, value: vec![0, 0, 0, 0] }],
        ..ObjectPut::default()
    };
    assert_eq!(e.put_object("alice", &put, &mut &b"abc"[..]).unwrap_err().s3_code(), "BadDigest");
}

#[test]
fn copies_share_payloads_and_reads_by_part() {
    let f = Fixture::new();
    let e = f.engine();
    e.create_bucket("alice", "bk1").unwrap();
    let id = e
        .create_upload("alice", "bk1", "src", ObjectMeta::default())
        .unwrap()
        .upload_id
        .to_string();
    let a = vec![1u8; 5 * MIB];
    let b = vec![2u8; 100];
    let ea = f.put_part("src", &id, 1, &a).unwrap();
    let eb = f.put_part("src", &id, 2, &b).unwrap();
    let source = f.complete("src", &id, &[(1, ea), (2, eb)]).unwrap();
    let live_before = e.stats().payload_live_bytes;
    let copy = e.copy_object("alice", ("bk1", "src"), ("bk1", "dst"), None).unwrap();
    assert_eq!(copy.etag, source.etag);
    assert_eq!(e.stats().payload_live_bytes, live_before, "a copy stores no bytes");
    // UploadPartCopy of exactly part 1: by reference.
    let id2 = e
        .create_upload("alice", "bk1", "second", ObjectMeta::default())
        .unwrap()
        .upload_id
        .to_string();
    let copied = e
        .copy_part(
            "alice",
            &PartCopy {
                bucket: "bk1",
                key: "second",
                upload_id: &id2,
                part_number: 1,
                source_bucket: "bk1",
                source_key: "src",
                range: Some((0, 5 * MIB as u64 - 1)),
                ..PartCopy::default()
            },
        )
        .unwrap();
    assert_eq!(copied.part.etag.md5, ea);
    assert_eq!(e.stats().payload_live_bytes, live_before);
    // A range across parts is read and stored.
    let across = e
        .copy_part(
            "alice",
            &PartCopy {
                bucket: "bk1",
                key: "second",
                upload_id: &id2,
                part_number: 2,
                source_bucket: "bk1",
                source_key: "src",
                range: Some((5 * MIB as u64 - 1, 5 * MIB as u64)),
                ..PartCopy::default()
            },
        )
        .unwrap();
    assert_eq!(across.part.size_bytes, 2);
    let err = e
        .copy_part(
            "alice",
            &PartCopy {
                bucket: "bk1",
                key: "second",
                upload_id: &id2,
                part_number: 3,
                source_bucket: "bk1",
                source_key: "src",
                range: Some((0, 10 * MIB as u64)),
                ..PartCopy::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.s3_code(), "InvalidRange");
    // Reading one part.
    let opened = e.open_object_part("bk1", "dst", 2).unwrap();
    assert_eq!(opened.object.parts_count, Some(2));
    assert_eq!(opened.part.size_bytes, 100);
    let mut bytes = Vec::new();
    let mut reader = opened.reader;
    reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b);
    assert!(matches!(e.open_object_part("bk1", "dst", 3), Err(EngineError::InvalidPart { .. })));
    // Deleting the source keeps the copy readable.
    assert!(e.delete_object("alice", "bk1", "src").unwrap());
    assert_eq!(f.read("dst", Some((0, 1))), [1, 1]);
}

#[test]
fn a_second_open_of_the_directory_fails_clearly() {
    let f = Fixture::new();
    let err = Engine::open(f.dir.path(), config(&f.clock)).unwrap_err();
    assert!(matches!(err, EngineError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
}

#[test]
fn subscribers_see_durable_transitions_in_order() {
    let f = Fixture::new();
    let e = f.engine();
    let mut events = e.subscribe();
    e.create_bucket("alice", "bk1").unwrap();
    let upload = e.create_upload("alice", "bk1", "k", ObjectMeta::default()).unwrap();
    e.abort_upload("bob", "bk1", "k", &upload.upload_id.to_string(), None).unwrap();
    // A copied part is its own kind of event, as it is its own operation in the journal.
    let put =
        ObjectPut { bucket: "bk1", key: "src", content_length: Some(3), ..ObjectPut::default() };
    e.put_object("alice", &put, &mut &b"abc"[..]).unwrap();
    let copying = e.create_upload("alice", "bk1", "c", ObjectMeta::default()).unwrap();
    let id = copying.upload_id.to_string();
    let copy = PartCopy {
        bucket: "bk1",
        key: "c",
        upload_id: &id,
        part_number: 1,
        source_bucket: "bk1",
        source_key: "src",
        ..PartCopy::default()
    };
    e.copy_part("alice", &copy).unwrap();
    let kinds: Vec<_> = (0..6).map(|_| events.try_recv().unwrap().unwrap()).collect();
    assert_eq!(kinds[0].kind, tessera_engine::EventKind::CreateBucket);
    assert_eq!(kinds[1].upload_id, Some(upload.upload_id));
    assert_eq!(kinds[2].actor, "bob");
    assert_eq!(kinds[2].key.as_deref(), Some("k"));
    assert_eq!(kinds[5].kind, tessera_engine::EventKind::CopyPart);
    assert_eq!(kinds[5].part_number, Some(1));
    assert!(kinds.windows(2).all(|w| w[0].lsn < w[1].lsn));
    let history = e.journal().unwrap().query(&tessera_engine::journal::Query::default());
    let last = history.entries.last().unwrap();
    assert_eq!((last.op, last.lsn), (tessera_engine::journal::Operation::CopyPart, kinds[5].lsn));
}

#[test]
fn inline_payloads_move_to_segments_at_a_checkpoint() {
    let mut f = Fixture::new();
    f.engine().create_bucket("alice", "bk1").unwrap();
    for (i, key) in ["s1", "s2", "s3"].iter().enumerate() {
        // s3 repeats s1's bytes: stored once.
        let content = vec![(i % 2) as u8 + 1; 1000];
        let put =
            ObjectPut { bucket: "bk1", key, content_length: Some(1000), ..ObjectPut::default() };
        f.engine().put_object("alice", &put, &mut &content[..]).unwrap();
    }
    assert_eq!(f.engine().stats().payload_live_bytes, 0, "small payloads ride inline");
    f.engine().checkpoint().unwrap().unwrap();
    let stats = f.engine().stats();
    assert_eq!(f.engine().payload_store().space().payloads, 2);
    assert!(stats.payload_live_bytes >= 2000, "{stats:?}");
    f.reopen();
    assert_eq!(f.read("s3", None), vec![1u8; 1000]);
    assert_eq!(f.read("s2", None), vec![2u8; 1000]);
    assert!(f.engine().delete_object("alice", "bk1", "s1").unwrap());
    assert_eq!(
        f.engine()
            .payload_store()
            .lookup(&tessera_engine::payload::ContentAddress(sha(&[1u8; 1000])))
            .unwrap()
            .1,
        1
    );
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}
