//! Canonical, typed, versioned SHA-256 fingerprints of a record's key fields.
//!
//! A fingerprint answers one question: *did the fields that matter change?* Two records get the
//! same fingerprint exactly when they have the same domain, the same set of field names and,
//! field by field, the same typed value. In particular:
//!
//! * `NULL`, a missing field and the empty string are three different things;
//! * the order in which the caller lists the fields does not matter (they are sorted by name);
//! * a field name given twice is an error ([`Error::DuplicateField`]), never a silent overwrite;
//! * every value carries a type tag and every variable-length value a length prefix, so no
//!   separator can be forged (`("a|b", "c")` and `("a", "b|c")` differ);
//! * strings are hashed as given: no trimming, no case folding, no Unicode normalisation;
//! * `-0.0` is hashed as `0.0`, and every NaN as the one canonical quiet NaN;
//! * timestamps are hashed as UTC microseconds since the Unix epoch; finer digits are dropped
//!   toward the past (`…:00.0000019` → `…:00.000001`), the precision PostgreSQL and MariaDB keep.
//!
//! # Encoding, version 1
//!
//! All integers are big-endian. `u32(n)` is four bytes.
//!
//! ```text
//! schema   = SHA-256( "recon.fp.v1.schema\0"                          19 bytes
//!                     u32(len(domain)) domain
//!                     u32(number of fields)
//!                     for each field, by name in ascending byte order:
//!                         u32(len(name)) name )
//! head     = "recon.fp.v1\0" (12 bytes) ++ 20 zero bytes ++ schema    64 bytes = one block
//! value    = tag (1 byte) ++ payload
//! print    = SHA-256( head ++ value of each field, in the same name order )
//! ```
//!
//! | tag | type | payload |
//! |-----|------|---------|
//! | `0x00` | null | none |
//! | `0x01` | bool | 1 byte: `0x00` false, `0x01` true |
//! | `0x02` | i64 | 8 bytes, two's complement |
//! | `0x03` | u64 | 8 bytes |
//! | `0x04` | f64 | 8 bytes of IEEE-754 bits, after `-0.0 → 0.0` and `NaN → 0x7ff8000000000000` |
//! | `0x05` | string | `u32(len)` ++ UTF-8 bytes as given |
//! | `0x06` | bytes | `u32(len)` ++ bytes |
//! | `0x07` | timestamp | i64: microseconds since 1970-01-01T00:00:00Z, floored |
//! | `0x08` | date | i32: days since 1970-01-01 |
//!
//! The head is exactly one SHA-256 block, so a [`Schema`] hashes it once and clones the
//! hasher state for every record: a record costs only the blocks of its values. Values longer
//! than `u32::MAX` bytes cannot be encoded ([`Error::TooLarge`]).
//!
//! Changing anything above changes every stored fingerprint; the golden vectors in the tests
//! pin it. A future encoding gets a new version string (`recon.fp.v2`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The version prefix of the head block.
pub const FINGERPRINT_VERSION: &str = "recon.fp.v1";

const HEAD_MAGIC: &[u8; 12] = b"recon.fp.v1\0";
const SCHEMA_MAGIC: &[u8; 19] = b"recon.fp.v1.schema\0";

const TAG_NULL: u8 = 0x00;
const TAG_BOOL: u8 = 0x01;
const TAG_I64: u8 = 0x02;
const TAG_U64: u8 = 0x03;
const TAG_F64: u8 = 0x04;
const TAG_STR: u8 = 0x05;
const TAG_BYTES: u8 = 0x06;
const TAG_TIMESTAMP: u8 = 0x07;
const TAG_DATE: u8 = 0x08;

/// The bits every NaN is hashed as (the canonical quiet NaN).
pub const CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;

/// A SHA-256 fingerprint. Displays, parses and serialises as 64 lowercase hex digits.
///
/// ```
/// use lineage_checksum::Fingerprint;
/// let hex = "00".repeat(31) + "ff";
/// let fp: Fingerprint = hex.parse().unwrap();
/// assert_eq!(fp.to_string(), hex);
/// assert_eq!(fp.as_bytes()[31], 0xff);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Wrap 32 raw bytes (read from a `BINARY(32)` / `BYTEA` / `BLOB` column, say).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The raw bytes, by value.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Lowercase hex (the [`Display`](fmt::Display) form).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parse 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return Err(Error::InvalidFingerprint(hex.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => return Err(Error::InvalidFingerprint(hex.to_owned())),
            }
        }
        Ok(Self(out))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[(b >> 4) as usize];
            buf[2 * i + 1] = HEX[(b & 0x0f) as usize];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_hex(s)
    }
}

impl TryFrom<&[u8]> for Fingerprint {
    type Error = Error;
    /// Exactly 32 raw bytes.
    fn try_from(bytes: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidFingerprint(format!("{} raw bytes", bytes.len())))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// One typed field value. Borrowed, so building a record's values allocates nothing.
///
/// `From` conversions exist for the usual Rust types; `Option<T>` maps `None` to
/// [`Value::Null`]. The same number as [`Value::I64`] and as [`Value::U64`] hashes differently:
/// pick one type per field and keep it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// SQL `NULL` / JSON `null` / `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float (`-0.0` is hashed as `0.0`, every NaN as one canonical NaN).
    F64(f64),
    /// Text, hashed byte for byte as given.
    Str(&'a str),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// An instant, hashed as UTC microseconds (finer digits dropped toward the past).
    Timestamp(DateTime<Utc>),
    /// A calendar date.
    Date(NaiveDate),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Str(v)
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::I64(v.into())
    }
}
impl From<u64> for Value<'_> {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::U64(v.into())
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<DateTime<Utc>> for Value<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Timestamp(v)
    }
}
impl From<DateTime<FixedOffset>> for Value<'_> {
    fn from(v: DateTime<FixedOffset>) -> Self {
        Value::Timestamp(v.with_timezone(&Utc))
    }
}
impl From<NaiveDate> for Value<'_> {
    fn from(v: NaiveDate) -> Self {
        Value::Date(v)
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Canonical bits of a float: `-0.0 → 0.0`, every NaN → [`CANONICAL_NAN_BITS`].
pub fn canonical_f64_bits(v: f64) -> u64 {
    if v.is_nan() {
        CANONICAL_NAN_BITS
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

/// Days since 1970-01-01 (negative before).
fn unix_days(d: NaiveDate) -> i32 {
    // num_days_from_ce of 1970-01-01 is 719_163; NaiveDate's range keeps the difference in i32.
    d.num_days_from_ce() - 719_163
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes buffered before they are compressed (four blocks, compressed in one call).
const CAP: usize = 256;

/// Encodes straight into SHA-256's compression function (`sha2`'s, which uses SHA-NI where
/// the CPU has it) through a stack buffer: no heap allocation, no intermediate copy of the
/// record. Tags, lengths and fixed-size values are written as fixed 9-byte stores into the
/// buffer's slack (no `memcpy` call per field); full blocks are compressed four at a time.
struct Encoder {
    state: [u32; 8],
    buf: [u8; CAP + 16],
    /// Bytes in `buf`; below `CAP` between calls.
    len: usize,
    /// Bytes already compressed (the head block included).
    done: u64,
}

impl Encoder {
    /// Continue after the head block whose compression left `state`.
    #[inline(always)]
    fn new(state: [u32; 8]) -> Self {
        Self {
            state,
            buf: [0; CAP + 16],
            len: 0,
            done: 64,
        }
    }

    #[inline(always)]
    fn compress(&mut self, bytes: &[u8]) {
        let (blocks, _) = bytes.as_chunks::<64>();
        sha2::block_api::compress256(&mut self.state, blocks);
        self.done += (blocks.len() * 64) as u64;
    }

    /// Compress the first `CAP` bytes and move the overflow (under 16 bytes) to the front.
    #[inline(never)]
    fn spill(&mut self) {
        let mut state = self.state;
        let (blocks, _) = self.buf[..CAP].as_chunks::<64>();
        sha2::block_api::compress256(&mut state, blocks);
        self.state = state;
        self.done += CAP as u64;
        self.buf.copy_within(CAP..CAP + 16, 0);
        self.len -= CAP;
    }

    /// Write the first `n` (≤ 9) bytes of `bytes`.
    #[inline(always)]
    fn small(&mut self, bytes: [u8; 9], n: usize) {
        self.buf[self.len..self.len + 9].copy_from_slice(&bytes);
        self.len += n;
        if self.len >= CAP {
            self.spill();
        }
    }

    #[inline(always)]
    fn fixed(&mut self, tag: u8, payload: [u8; 8]) {
        let mut b = [tag; 9];
        b[1..].copy_from_slice(&payload);
        self.small(b, 9);
    }

    #[inline]
    fn bytes(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            let n = (CAP - self.len).min(b.len());
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
            if self.len == CAP {
                self.spill();
                // Long values: compress whole blocks straight from the caller's memory.
                let whole = b.len() / 64 * 64;
                if whole > 0 {
                    self.compress(&b[..whole]);
                    b = &b[whole..];
                }
            }
        }
    }

    /// SHA-256 padding (a one bit, zeros, the message length in bits) and the digest.
    #[inline(always)]
    fn finish(mut self) -> Fingerprint {
        let bits = (self.done + self.len as u64).wrapping_mul(8);
        if self.len + 9 > CAP {
            // No room for the padding: compress the full blocks first (rare).
            let full = self.len / 64 * 64;
            let mut state = self.state;
            let (blocks, _) = self.buf[..full].as_chunks::<64>();
            sha2::block_api::compress256(&mut state, blocks);
            self.state = state;
            self.buf.copy_within(full..self.len, 0);
            self.len -= full;
        }
        let end = (self.len + 9).div_ceil(64) * 64;
        self.buf[self.len] = 0x80;
        self.buf[self.len + 1..end - 8].fill(0);
        self.buf[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = self.buf[..end].as_chunks::<64>();
        sha2::block_api::compress256(&mut self.state, blocks);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Fingerprint(out)
    }

    #[inline(always)]
    fn value(&mut self, name: &str, v: &Value<'_>) -> Result<()> {
        match *v {
            Value::Null => self.small([TAG_NULL; 9], 1),
            Value::Bool(b) => self.small([TAG_BOOL, u8::from(b), 0, 0, 0, 0, 0, 0, 0], 2),
            Value::I64(i) => self.fixed(TAG_I64, i.to_be_bytes()),
            Value::U64(u) => self.fixed(TAG_U64, u.to_be_bytes()),
            Value::F64(f) => self.fixed(TAG_F64, canonical_f64_bits(f).to_be_bytes()),
            Value::Str(s) => self.var(TAG_STR, name, s.as_bytes())?,
            Value::Bytes(b) => self.var(TAG_BYTES, name, b)?,
            Value::Timestamp(t) => self.fixed(TAG_TIMESTAMP, t.timestamp_micros().to_be_bytes()),
            Value::Date(d) => {
                let days = unix_days(d).to_be_bytes();
                self.small(
                    [TAG_DATE, days[0], days[1], days[2], days[3], 0, 0, 0, 0],
                    5,
                );
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn var(&mut self, tag: u8, name: &str, bytes: &[u8]) -> Result<()> {
        let len = u32::try_from(bytes.len()).map_err(|_| Error::TooLarge {
            what: format!("value of fingerprint field `{name}`"),
            len: bytes.len(),
            limit: u32::MAX as usize,
        })?;
        let l = len.to_be_bytes();
        self.small([tag, l[0], l[1], l[2], l[3], 0, 0, 0, 0], 5);
        self.bytes(bytes);
        Ok(())
    }
}

fn len_u32(what: &str, s: &str) -> Result<[u8; 4]> {
    u32::try_from(s.len())
        .map(u32::to_be_bytes)
        .map_err(|_| Error::TooLarge {
            what: what.to_owned(),
            len: s.len(),
            limit: u32::MAX as usize,
        })
}

/// The SHA-256 state after the head block of `domain` with these names (already sorted).
fn head<'n>(
    domain: &str,
    sorted_names: impl ExactSizeIterator<Item = &'n str>,
) -> Result<[u32; 8]> {
    let mut schema = Sha256::new();
    schema.update(SCHEMA_MAGIC);
    schema.update(len_u32("fingerprint domain", domain)?);
    schema.update(domain.as_bytes());
    let n = u32::try_from(sorted_names.len())
        .map_err(|_| Error::invalid_input("too many fingerprint fields"))?;
    schema.update(n.to_be_bytes());
    for name in sorted_names {
        schema.update(len_u32("fingerprint field name", name)?);
        schema.update(name.as_bytes());
    }
    let digest: [u8; 32] = schema.finalize().into();
    let mut block = [0u8; 64];
    block[..12].copy_from_slice(HEAD_MAGIC);
    block[32..].copy_from_slice(&digest);
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &[block]);
    Ok(state)
}

/// The fingerprint of one record given as `(name, value)` pairs in any order.
///
/// Sorts the fields by name (on the stack for up to 32 fields) and rejects duplicate names.
/// For many records of the same shape a [`Schema`] is faster: it hashes the head once.
///
/// ```
/// use lineage_checksum::{fingerprint, Value};
/// let a = fingerprint("case", &[("id", "5007T".into()), ("status", "Closed".into())]).unwrap();
/// let b = fingerprint("case", &[("status", "Closed".into()), ("id", "5007T".into())]).unwrap();
/// assert_eq!(a, b);
/// let c = fingerprint("case", &[("id", "5007T".into()), ("status", Value::Null)]).unwrap();
/// assert_ne!(a, c);
/// assert!(fingerprint("case", &[("id", 1.into()), ("id", 2.into())]).is_err());
/// ```
pub fn fingerprint(domain: &str, fields: &[(&str, Value<'_>)]) -> Result<Fingerprint> {
    const STACK: usize = 32;
    let mut stack = [0u16; STACK];
    let mut heap = Vec::new();
    let order: &mut [u16] = if fields.len() <= STACK {
        &mut stack[..fields.len()]
    } else {
        if fields.len() > u16::MAX as usize {
            return Err(Error::invalid_input("too many fingerprint fields"));
        }
        heap.resize(fields.len(), 0);
        &mut heap[..]
    };
    for (i, o) in order.iter_mut().enumerate() {
        *o = i as u16;
    }
    order.sort_unstable_by(|&a, &b| {
        fields[a as usize]
            .0
            .as_bytes()
            .cmp(fields[b as usize].0.as_bytes())
    });
    for w in order.windows(2) {
        if fields[w[0] as usize].0 == fields[w[1] as usize].0 {
            return Err(Error::DuplicateField(fields[w[0] as usize].0.to_owned()));
        }
    }
    let h = head(domain, order.iter().map(|&i| fields[i as usize].0))?;
    let mut enc = Encoder::new(h);
    for &i in order.iter() {
        let (name, value) = &fields[i as usize];
        enc.value(name, value)?;
    }
    Ok(enc.finish())
}

/// A record shape: a domain and its key-field names, validated and hashed once.
///
/// Values are then given in the order the names were declared; the schema sorts them.
/// Produces exactly the fingerprints of [`fingerprint`] for the same fields.
///
/// ```
/// use lineage_checksum::{fingerprint, Schema, Value};
/// let cases = Schema::new("case", ["id", "last_modified", "subject", "description", "resolution", "status"])?;
/// let modified: chrono::DateTime<chrono::Utc> = "2024-11-04T08:00:00Z".parse().unwrap();
/// let fp = cases.fingerprint(&[
///     "5007T000002AbcD".into(),
///     modified.into(),
///     "Server won't boot".into(),
///     "iLO_400_MemoryErrors".into(),
///     Value::Null,
///     "Closed".into(),
/// ])?;
/// assert_eq!(fp, fingerprint("case", &[
///     ("status", "Closed".into()),
///     ("id", "5007T000002AbcD".into()),
///     ("resolution", Value::Null),
///     ("subject", "Server won't boot".into()),
///     ("description", "iLO_400_MemoryErrors".into()),
///     ("last_modified", modified.into()),
/// ])?);
/// # Ok::<(), lineage_checksum::Error>(())
/// ```
#[derive(Clone)]
pub struct Schema {
    domain: String,
    names: Vec<String>,
    /// `order[i]` = index (in declared order) of the i-th field by name.
    order: Vec<usize>,
    head: [u32; 8],
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("domain", &self.domain)
            .field("fields", &self.names)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// A schema for records of `domain` with these field names (any order, no duplicates).
    pub fn new<I, S>(domain: &str, fields: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = fields.into_iter().map(Into::into).collect();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].as_bytes().cmp(names[b].as_bytes()));
        for w in order.windows(2) {
            if names[w[0]] == names[w[1]] {
                return Err(Error::DuplicateField(names[w[0]].clone()));
            }
        }
        let head = head(domain, order.iter().map(|&i| names[i].as_str()))?;
        Ok(Self {
            domain: domain.to_owned(),
            names,
            order,
            head,
        })
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The field names in declared order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The fingerprint of one record; `values[i]` belongs to the i-th declared field.
    #[inline]
    pub fn fingerprint(&self, values: &[Value<'_>]) -> Result<Fingerprint> {
        if values.len() != self.names.len() {
            return Err(Error::FieldCount {
                domain: self.domain.clone(),
                expected: self.names.len(),
                got: values.len(),
            });
        }
        let mut enc = Encoder::new(self.head);
        for &i in &self.order {
            enc.value(&self.names[i], &values[i])?;
        }
        Ok(enc.finish())
    }
}

#[cfg(test)]
mod tests;
