//! S3's rules for bucket names, keys and metadata.

use crate::error::EngineError;
use crate::model::ObjectMeta;

/// Longest key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;
/// Most bytes of user metadata (names and values).
pub const USER_METADATA_BYTES_MAX: usize = 2048;

/// Checks a bucket name against S3's general-purpose bucket naming rules.
pub fn check_bucket_name(name: &str) -> Result<(), EngineError> {
    let invalid = |reason| Err(EngineError::InvalidBucketName { bucket: name.to_owned(), reason });
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return invalid("must be between 3 and 63 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        return invalid("may hold only lowercase letters, digits, dots and hyphens");
    }
    let alphanumeric =
        |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alphanumeric(bytes.first()) || !alphanumeric(bytes.last()) {
        return invalid("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return invalid("must not hold two adjacent dots");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return invalid("must not be formatted as an IP address");
    }
    const PREFIXES: [&str; 4] = ["xn--", "sthree-", "sthree-configurator", "amzn-s3-demo-"];
    if PREFIXES.iter().any(|p| name.starts_with(p)) {
        return invalid("must not begin with a reserved prefix");
    }
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return invalid("must not end with a reserved suffix");
    }
    Ok(())
}

/// Checks an object key: at least one byte, at most 1024.
pub fn check_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::invalid_argument("the key must not be empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(EngineError::KeyTooLong { bytes: key.len(), max_bytes: KEY_BYTES_MAX });
    }
    Ok(())
}

/// Checks metadata: user metadata within 2 KiB, a checksum spec S3 allows.
pub fn check_meta(meta: &ObjectMeta) -> Result<(), EngineError> {
    let bytes = meta.user_bytes();
    if bytes > USER_METADATA_BYTES_MAX {
        return Err(EngineError::MetadataTooLarge { bytes, max_bytes: USER_METADATA_BYTES_MAX });
    }
    if let Some(spec) = meta.checksum
        && !spec.is_allowed()
    {
        return Err(EngineError::InvalidRequest {
            reason: format!(
                "the checksum type {} is not supported for {}",
                spec.kind.name(),
                spec.algorithm.name()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket", "my.bucket.1", "a1b", &"a".repeat(63)] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            "a_b",
            &"a".repeat(64),
            "ab\u{e9}",
        ] {
            assert!(
                matches!(check_bucket_name(bad), Err(EngineError::InvalidBucketName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_are_one_to_1024_bytes() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert!(matches!(check_key(&"k".repeat(1025)), Err(EngineError::KeyTooLong { .. })));
        assert!(matches!(check_key(""), Err(EngineError::InvalidArgument { .. })));
    }
}
