//! Full-object CRCs of a multipart object, from its parts' CRCs and lengths, without reading
//! the parts again: CRC(A ‖ B) = CRC(A)·x^(8·|B|) mod P ⊕ CRC(B) for CRCs whose initial value
//! equals their final XOR (all three of S3's do).

use crate::payload::{Checksum, ChecksumAlgorithm};

/// CRC-64/NVME's polynomial, bit-reflected.
const CRC64_NVME_REFLECTED: u64 = 0x9A6C_9329_AC4B_C9B5;

/// The full-object checksum of parts given as (checksum bytes, length), or `None` for an
/// algorithm without a full-object form (SHA-1, SHA-256) or a malformed part value.
pub fn full_object(algorithm: ChecksumAlgorithm, parts: &[(&[u8], u64)]) -> Option<Checksum> {
    let value = match algorithm {
        ChecksumAlgorithm::Crc32 => {
            let mut whole = crc32fast::Hasher::new();
            for (value, len) in parts {
                let crc = u32::from_be_bytes(<[u8; 4]>::try_from(*value).ok()?);
                whole.combine(&crc32fast::Hasher::new_with_initial_len(crc, *len));
            }
            whole.finalize().to_be_bytes().to_vec()
        }
        ChecksumAlgorithm::Crc32c => {
            let mut whole = 0u32;
            for (value, len) in parts {
                let crc = u32::from_be_bytes(<[u8; 4]>::try_from(*value).ok()?);
                whole = crc32c::crc32c_combine(whole, crc, usize::try_from(*len).ok()?);
            }
            whole.to_be_bytes().to_vec()
        }
        ChecksumAlgorithm::Crc64Nvme => {
            let mut whole = 0u64;
            for (value, len) in parts {
                let crc = u64::from_be_bytes(<[u8; 8]>::try_from(*value).ok()?);
                whole = crc64_combine(whole, crc, *len);
            }
            whole.to_be_bytes().to_vec()
        }
        ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => return None,
    };
    Some(Checksum { algorithm, value })
}

/// a·b modulo the polynomial, in the reflected representation (bit 63 is x^0).
fn multiply_mod(a: u64, mut b: u64) -> u64 {
    let mut product = 0u64;
    for bit in (0..64).rev() {
        if a & (1 << bit) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ CRC64_NVME_REFLECTED } else { b >> 1 };
    }
    product
}

/// x^(8·len) modulo the polynomial, by squaring.
fn x_pow_8n(len: u64) -> u64 {
    let mut result = 1u64 << 63; // x^0
    let mut square = 1u64 << 55; // x^8
    let mut n = len;
    while n != 0 {
        if n & 1 != 0 {
            result = multiply_mod(square, result);
        }
        square = multiply_mod(square, square);
        n >>= 1;
    }
    result
}

fn crc64_combine(crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
    multiply_mod(x_pow_8n(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Digester;

    fn checksum(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> Vec<u8> {
        let mut digester = Digester::new([algorithm]);
        digester.update(bytes);
        let digests = digester.finish();
        digests.checksums.into_iter().find(|c| c.algorithm == algorithm).map(|c| c.value).unwrap()
    }

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole() {
        let bytes: Vec<u8> =
            (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for algorithm in
            [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc64Nvme]
        {
            for cuts in [vec![], vec![1], vec![0, 7], vec![4096, 4097, 9999], vec![3333, 6666]] {
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied());
                bounds.push(bytes.len());
                let pieces: Vec<(Vec<u8>, u64)> = bounds
                    .windows(2)
                    .map(|w| (checksum(algorithm, &bytes[w[0]..w[1]]), (w[1] - w[0]) as u64))
                    .collect();
                let parts: Vec<(&[u8], u64)> =
                    pieces.iter().map(|(v, l)| (v.as_slice(), *l)).collect();
                let whole = full_object(algorithm, &parts).unwrap();
                assert_eq!(
                    whole.value,
                    checksum(algorithm, &bytes),
                    "{algorithm:?} cut at {cuts:?}"
                );
            }
        }
    }

    #[test]
    fn sha_has_no_full_object_form() {
        assert!(full_object(ChecksumAlgorithm::Sha256, &[]).is_none());
        assert!(full_object(ChecksumAlgorithm::Crc32, &[(&[1, 2, 3], 3)]).is_none());
    }
}
