//! The stable hash behind every jitter draw.
//!
//! Decisions are persisted in rows and recomputed later, possibly by another build of the host on
//! another machine, so the draw must not depend on the Rust version, the platform or the process.
//! `std`'s `DefaultHasher` promises none of that, so this module defines its own function and the
//! tests lock it with golden vectors. **Changing anything here changes every jittered delay ever
//! computed: don't.**
//!
//! * key hash: start from `SEED ^ len·GOLDEN`; for each 8-byte little-endian word `w` of the key
//!   (the last one zero-padded): `h = (h ^ w)·P; h ^= h >> 29` (each step is a bijection of `h`);
//!   then the SplitMix64 finaliser.
//! * draw for retry index `n`: the `(n+1)`-th output of SplitMix64 seeded with the key hash, i.e.
//!   `mix(key_hash + (n+1)·GOLDEN)`.

const SEED: u64 = 0x243f_6a88_85a3_08d3; // digits of π
const P: u64 = 0xa076_1d64_78bd_642f; // wyhash's first prime (odd, so multiplication is bijective)
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / φ, SplitMix64's increment

/// SplitMix64's output function (Stafford's variant 13).
#[inline]
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a record key.
#[inline]
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut h = SEED ^ (key.len() as u64).wrapping_mul(GOLDEN);
    let mut words = key.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0_u8; 8];
        w.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P);
        h ^= h >> 29;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        h = (h ^ tail_word(tail)).wrapping_mul(P);
        h ^= h >> 29;
    }
    mix(h)
}

/// The 1–7 bytes of `tail` as a little-endian word, zero-padded: the same as copying them into
/// a zeroed `[u8; 8]`, without the `memcpy` call a variable-length copy compiles to. Four or
/// more bytes are read as two overlapping 4-byte words; fewer as the first, middle and last
/// byte (which cover every byte of 1, 2 or 3). Overlapping bytes are equal, so OR-ing is exact.
#[inline]
fn tail_word(tail: &[u8]) -> u64 {
    let n = tail.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let (mut first, mut last) = ([0_u8; 4], [0_u8; 4]);
        first.copy_from_slice(&tail[..4]);
        last.copy_from_slice(&tail[n - 4..]);
        u64::from(u32::from_le_bytes(first))
            | (u64::from(u32::from_le_bytes(last)) << (8 * (n - 4)))
    } else {
        u64::from(tail[0])
            | (u64::from(tail[n / 2]) << (8 * (n / 2)))
            | (u64::from(tail[n - 1]) << (8 * (n - 1)))
    }
}

/// The uniform 64-bit draw for retry index `n` of the key whose hash is `key_hash`.
#[inline]
pub(crate) const fn draw(key_hash: u64, n: u32) -> u64 {
    mix(key_hash.wrapping_add(GOLDEN.wrapping_mul(n as u64 + 1)))
}

/// A uniform integer in `[0, span]` from a 64-bit draw (multiply-shift, no modulo bias to speak of).
#[inline]
pub(crate) const fn uniform(draw: u64, span: u64) -> u64 {
    ((draw as u128 * (span as u128 + 1)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors, computed by an independent implementation of the algorithm described in
    /// the module docs (a few lines of Python with explicit 64-bit masking). If this test fails, the hash changed and every persisted jittered decision
    /// would be recomputed differently: revert the change instead of updating the numbers.
    #[test]
    fn key_hash_golden_vectors() {
        let cases: [(&str, u64); 6] = [
            ("", 0xe9e0_033e_3bad_af36),
            ("a", 0xfe6f_a59b_a13d_647e),
            ("job-42", 0xedb0_d57c_bc71_6086),
            (
                "message:00000000-0000-0000-0000-000000000001",
                0x9748_6ad6_c418_1ba4,
            ),
            ("12345678", 0x35c0_43fa_9bd0_f679),
            ("héllo wörld ✓", 0x9dd8_143b_6fab_34cb),
        ];
        for (key, expected) in cases {
            assert_eq!(key_hash(key.as_bytes()), expected, "key_hash({key:?})");
        }
    }

    #[test]
    fn draw_golden_vectors() {
        let h = key_hash(b"job-42");
        let cases: [(u32, u64); 4] = [
            (0, 0xb256_3c64_77f7_85df),
            (1, 0xe768_e3a9_09ad_bd26),
            (2, 0xb871_79fe_b4e9_9811),
            (u32::MAX, 0x1457_2a4a_ef52_b2f0),
        ];
        for (n, expected) in cases {
            assert_eq!(draw(h, n), expected, "draw(job-42, {n})");
        }
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0: the published first outputs of the reference implementation.
        assert_eq!(draw(0, 0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(draw(0, 1), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(draw(0, 2), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn tail_word_is_the_zero_padded_copy() {
        let bytes: Vec<u8> = (1..=7).map(|i| i * 0x11).chain([0xff, 0x80]).collect();
        for start in 0..bytes.len() {
            for n in 1..8.min(bytes.len() - start + 1) {
                let tail = &bytes[start..start + n];
                let mut w = [0_u8; 8];
                w[..n].copy_from_slice(tail);
                assert_eq!(tail_word(tail), u64::from_le_bytes(w), "{tail:02x?}");
            }
        }
    }

    #[test]
    fn padding_and_length_are_both_hashed() {
        assert_ne!(key_hash(b"ab"), key_hash(b"ab\0"));
        assert_ne!(key_hash(b""), key_hash(b"\0"));
        assert_ne!(key_hash(b"12345678"), key_hash(b"123456780"));
    }

    #[test]
    fn uniform_covers_the_whole_span() {
        assert_eq!(uniform(0, 10), 0);
        assert_eq!(uniform(u64::MAX, 10), 10);
        assert_eq!(uniform(u64::MAX, 0), 0);
        assert_eq!(uniform(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(uniform(1 << 63, 9), 5);
    }
}
