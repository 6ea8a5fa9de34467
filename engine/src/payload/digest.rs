//! The digests computed while a payload streams to disk: SHA-256 (its address), MD5 (its S3
//! ETag), and the S3 additional checksums a caller asks for.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::payload::address::ContentAddress;

/// The additional checksums S3 defines (`x-amz-checksum-*`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (IEEE).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// CRC-64/NVME.
    Crc64Nvme,
}

impl ChecksumAlgorithm {
    /// Every algorithm.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Crc64Nvme,
    ];

    /// S3's name for it (`CRC32`, `CRC32C`, `SHA1`, `SHA256`, `CRC64NVME`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
        }
    }
}

/// A checksum value: the digest's bytes, big-endian for the CRCs (as S3 base64-encodes them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    /// Which algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest.
    pub value: Vec<u8>,
}

/// What the caller expects the payload to hash to; a mismatch fails the ingest (BadDigest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The Content-MD5 the client sent.
    pub md5: Option<[u8; 16]>,
    /// Checksums the client sent.
    pub checksums: Vec<Checksum>,
    /// Checksums to compute without a value to check (the upload's checksum algorithm).
    pub compute: Vec<ChecksumAlgorithm>,
}

/// The digests of a whole payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256: the content address.
    pub address: ContentAddress,
    /// MD5: the S3 ETag of a part.
    pub md5: [u8; 16],
    /// The additional checksums asked for, in `ChecksumAlgorithm::ALL` order.
    pub checksums: Vec<Checksum>,
}

/// Streams bytes through every digest asked for.
pub(crate) struct Digester {
    sha256: Sha256,
    md5: Md5,
    crc32: Option<crc32fast::Hasher>,
    crc32c: Option<u32>,
    sha1: Option<Sha1>,
    sha256_checksum: bool,
    crc64: Option<crc64fast_nvme::Digest>,
}

impl Digester {
    /// A digester computing SHA-256, MD5 and each algorithm of `wanted`.
    pub fn new(wanted: impl IntoIterator<Item = ChecksumAlgorithm>) -> Digester {
        let mut digester = Digester {
            sha256: Sha256::new(),
            md5: Md5::new(),
            crc32: None,
            crc32c: None,
            sha1: None,
            sha256_checksum: false,
            crc64: None,
        };
        for algorithm in wanted {
            match algorithm {
                ChecksumAlgorithm::Crc32 => digester.crc32 = Some(crc32fast::Hasher::new()),
                ChecksumAlgorithm::Crc32c => digester.crc32c = Some(0),
                ChecksumAlgorithm::Sha1 => digester.sha1 = Some(Sha1::new()),
                ChecksumAlgorithm::Sha256 => digester.sha256_checksum = true,
                ChecksumAlgorithm::Crc64Nvme => {
                    digester.crc64 = Some(crc64fast_nvme::Digest::new());
                }
            }
        }
        digester
    }

    /// Feeds every digest, 16 KiB at a time so that each block is hashed by all of them
    /// while it sits in the L1 cache.
    pub fn update(&mut self, bytes: &[u8]) {
        for block in bytes.chunks(16 << 10) {
            self.update_block(block);
        }
    }

    fn update_block(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.md5.update(bytes);
        if let Some(crc) = &mut self.crc32 {
            crc.update(bytes);
        }
        if let Some(crc) = &mut self.crc32c {
            *crc = crc32c::crc32c_append(*crc, bytes);
        }
        if let Some(sha1) = &mut self.sha1 {
            sha1.update(bytes);
        }
        if let Some(crc) = &mut self.crc64 {
            crc.write(bytes);
        }
    }

    pub fn finish(self) -> Digests {
        let address = ContentAddress(self.sha256.finalize().into());
        let mut checksums = Vec::new();
        let mut push = |algorithm, value: Vec<u8>| checksums.push(Checksum { algorithm, value });
        if let Some(crc) = self.crc32 {
            push(ChecksumAlgorithm::Crc32, crc.finalize().to_be_bytes().to_vec());
        }
        if let Some(crc) = self.crc32c {
            push(ChecksumAlgorithm::Crc32c, crc.to_be_bytes().to_vec());
        }
        if let Some(sha1) = self.sha1 {
            push(ChecksumAlgorithm::Sha1, sha1.finalize().to_vec());
        }
        if self.sha256_checksum {
            push(ChecksumAlgorithm::Sha256, address.0.to_vec());
        }
        if let Some(crc) = self.crc64 {
            push(ChecksumAlgorithm::Crc64Nvme, crc.sum64().to_be_bytes().to_vec());
        }
        Digests { address, md5: self.md5.finalize().into(), checksums }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(bytes: &[u8]) -> Digests {
        let mut digester = Digester::new(ChecksumAlgorithm::ALL);
        for chunk in bytes.chunks(7) {
            digester.update(chunk);
        }
        digester.finish()
    }

    #[test]
    fn digests_match_the_published_check_values() {
        // "123456789" is the standard check input of CRC catalogues.
        let d = digests(b"123456789");
        let value = |a| d.checksums.iter().find(|c| c.algorithm == a).unwrap().value.clone();
        assert_eq!(value(ChecksumAlgorithm::Crc32), 0xCBF4_3926u32.to_be_bytes());
        assert_eq!(value(ChecksumAlgorithm::Crc32c), 0xE306_9283u32.to_be_bytes());
        assert_eq!(value(ChecksumAlgorithm::Crc64Nvme), 0xAE8B_1486_0A79_9888u64.to_be_bytes());
        assert_eq!(
            hex::encode(value(ChecksumAlgorithm::Sha1)),
            "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
        );
        assert_eq!(
            d.address.to_string(),
            "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
        );
        assert_eq!(hex::encode(d.md5), "25f9e794323b453885f5181f1b624d0b");
        assert_eq!(value(ChecksumAlgorithm::Sha256), d.address.0);
    }

    #[test]
    fn empty_payload_has_the_empty_address() {
        assert_eq!(digests(b"").address, ContentAddress::of_empty());
        assert_eq!(hex::encode(digests(b"").md5), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
