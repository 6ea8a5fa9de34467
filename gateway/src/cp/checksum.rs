//! The digests `tessera cp` puts on every part: Content-MD5 (which S3 turns into the part's
//! ETag) and one additional checksum (CRC32C by default), and the composite checksum of an
//! object made of parts (the checksum of the parts' checksums, then `-N`).

use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine as _;
use md5::Digest as _;

/// `--checksum-algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// CRC-32 (IEEE).
    Crc32,
    /// CRC-32C (Castagnoli), the default.
    Crc32c,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    /// Its code in the state file (docs/format.md §13).
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Crc32 => 1,
            Algorithm::Crc32c => 2,
            Algorithm::Sha1 => 3,
            Algorithm::Sha256 => 4,
        }
    }

    /// The algorithm of a state file's code.
    pub fn from_code(code: u8) -> Option<Algorithm> {
        match code {
            1 => Some(Algorithm::Crc32),
            2 => Some(Algorithm::Crc32c),
            3 => Some(Algorithm::Sha1),
            4 => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The width of its checksum in bytes.
    pub fn width_bytes(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// S3's name for it (as printed and in `x-amz-checksum-algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The SDK's value.
    pub fn sdk(self) -> ChecksumAlgorithm {
        match self {
            Algorithm::Crc32 => ChecksumAlgorithm::Crc32,
            Algorithm::Crc32c => ChecksumAlgorithm::Crc32C,
            Algorithm::Sha1 => ChecksumAlgorithm::Sha1,
            Algorithm::Sha256 => ChecksumAlgorithm::Sha256,
        }
    }
}

/// A part's MD5 and additional checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// MD5 of the bytes: the part's ETag, unquoted, is its hex.
    pub md5: [u8; 16],
    /// The additional checksum, `width_bytes()` long.
    pub checksum: Vec<u8>,
}

impl Digests {
    /// The ETag S3 gives a part with these bytes, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.md5))
    }

    /// Content-MD5: base64 of the MD5.
    pub fn content_md5(&self) -> String {
        b64(&self.md5)
    }

    /// The checksum as S3 writes it (base64).
    pub fn checksum_b64(&self) -> String {
        b64(&self.checksum)
    }
}

/// Both digests, computed while bytes go by (or the checksum alone).
pub struct Hasher {
    md5: Option<md5::Md5>,
    inner: Inner,
}

enum Inner {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    /// A hasher of the MD5 and `algorithm`'s checksum.
    pub fn new(algorithm: Algorithm) -> Hasher {
        Hasher { md5: Some(md5::Md5::new()), inner: Inner::new(algorithm) }
    }

    /// A hasher of `algorithm`'s checksum alone (MD5 costs more than any CRC): its
    /// [`Digests::md5`] is zeros.
    pub fn without_md5(algorithm: Algorithm) -> Hasher {
        Hasher { md5: None, inner: Inner::new(algorithm) }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        if let Some(md5) = &mut self.md5 {
            md5.update(data);
        }
        match &mut self.inner {
            Inner::Crc32(h) => h.update(data),
            Inner::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            Inner::Sha1(h) => h.update(data),
            Inner::Sha256(h) => h.update(data),
        }
    }

    /// The digests of everything added.
    pub fn finish(self) -> Digests {
        let checksum = match self.inner {
            Inner::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Inner::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            Inner::Sha1(h) => h.finalize().to_vec(),
            Inner::Sha256(h) => h.finalize().to_vec(),
        };
        Digests { md5: self.md5.map_or([0; 16], |m| m.finalize().into()), checksum }
    }
}

impl Inner {
    fn new(algorithm: Algorithm) -> Inner {
        match algorithm {
            Algorithm::Crc32 => Inner::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Inner::Crc32c(0),
            Algorithm::Sha1 => Inner::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Inner::Sha256(sha2::Sha256::new()),
        }
    }
}

/// Both digests of `data`.
pub fn digest(algorithm: Algorithm, data: &[u8]) -> Digests {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data);
    hasher.finish()
}

/// The checksum of `data` alone (for the composite).
fn checksum_only(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Crc32 => crc32fast::hash(data).to_be_bytes().to_vec(),
        Algorithm::Crc32c => crc32c::crc32c(data).to_be_bytes().to_vec(),
        Algorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
        Algorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
    }
}

/// S3's ETag of an object made of parts with these MD5s: the MD5 of the MD5s, then `-N`.
pub fn multipart_etag<'a>(md5s: impl Iterator<Item = &'a [u8; 16]>) -> String {
    let mut all = md5::Md5::new();
    let mut n = 0u32;
    for m in md5s {
        all.update(m);
        n += 1;
    }
    format!("\"{}-{n}\"", hex::encode(all.finalize()))
}

/// The composite checksum of an object made of parts with these checksums, as S3 writes it:
/// base64 of the checksum of the concatenated checksums, then `-N`.
pub fn composite<'a>(algorithm: Algorithm, checksums: impl Iterator<Item = &'a [u8]>) -> String {
    let mut all = Vec::new();
    let mut n = 0u32;
    for c in checksums {
        all.extend_from_slice(c);
        n += 1;
    }
    format!("{}-{n}", b64(&checksum_only(algorithm, &all)))
}

/// Base64 (standard, padded), as S3's headers carry digests.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a base64 checksum header, or None if it is not base64.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

/// An ETag without its quotes, lower case.
pub fn bare_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

/// Sets the algorithm's checksum field on an SDK builder (they differ by type, not by name).
macro_rules! with_checksum {
    ($builder:expr, $algorithm:expr, $value:expr) => {{
        let value = $value;
        match $algorithm {
            $crate::cp::checksum::Algorithm::Crc32 => $builder.checksum_crc32(value),
            $crate::cp::checksum::Algorithm::Crc32c => $builder.checksum_crc32_c(value),
            $crate::cp::checksum::Algorithm::Sha1 => $builder.checksum_sha1(value),
            $crate::cp::checksum::Algorithm::Sha256 => $builder.checksum_sha256(value),
        }
    }};
}

/// The algorithm's checksum field of an SDK output, if the server sent one.
macro_rules! checksum_of {
    ($output:expr, $algorithm:expr) => {
        match $algorithm {
            $crate::cp::checksum::Algorithm::Crc32 => $output.checksum_crc32(),
            $crate::cp::checksum::Algorithm::Crc32c => $output.checksum_crc32_c(),
            $crate::cp::checksum::Algorithm::Sha1 => $output.checksum_sha1(),
            $crate::cp::checksum::Algorithm::Sha256 => $output.checksum_sha256(),
        }
    };
}

pub(crate) use {checksum_of, with_checksum};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;

    #[test]
    fn digests_match_s3s_published_values() {
        let d = digest(Algorithm::Crc32c, b"");
        assert_eq!(d.etag(), "\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(d.checksum_b64(), "AAAAAA==");
        // "hello world" in each algorithm, as the aws cli prints them.
        let h = |a| digest(a, b"hello world").checksum_b64();
        assert_eq!(h(Algorithm::Crc32), "DUoRhQ==");
        assert_eq!(h(Algorithm::Crc32c), "yZRlqg==");
        assert_eq!(h(Algorithm::Sha1), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(h(Algorithm::Sha256), "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for a in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Sha1, Algorithm::Sha256] {
            let mut h = Hasher::new(a);
            for chunk in data.chunks(777) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), digest(a, &data));
        }
    }
}
