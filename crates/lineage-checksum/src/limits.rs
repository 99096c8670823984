//! Documented size limits and the input checks every store implementation applies.
//!
//! The limits exist so that every backend can hold what the memory store holds: keys fit an
//! indexed `VARCHAR(255)` on MariaDB, names fit JSON paths and identifiers, and payloads fit a
//! single packet. Store implementations call these functions **before** writing, so a bad
//! batch is rejected whole and nothing is half-written. The SQL stores must call the same
//! functions (the conformance suite checks the errors).

use chrono::{DateTime, SubsecRound, Utc};

use crate::{Error, Result};

/// Longest record key, in bytes of UTF-8 (fits an indexed `VARCHAR(255)` with a binary
/// collation on MariaDB).
pub const MAX_KEY_LEN: usize = 255;

/// Longest name (namespace, pipeline, stage, metadata key, source group, error type, provider,
/// resolution method), in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Most items in one store call (one batch). SQL stores may split a batch into several
/// statements inside one transaction to respect their bind-parameter limits.
pub const MAX_BATCH: usize = 10_000;

/// Largest replay payload of a failed record, serialised as JSON: 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Largest host metadata of a lineage row, serialised as JSON: 64 KiB.
pub const MAX_METADATA_BYTES: usize = 64 << 10;

/// Longest error message kept; longer messages are cut at a character boundary and end with
/// [`TRUNCATION_MARK`] (an error message is diagnostics, so it is cut rather than refused).
pub const MAX_MESSAGE_BYTES: usize = 8 << 10;

/// Appended to a message that was cut to [`MAX_MESSAGE_BYTES`].
pub const TRUNCATION_MARK: &str = " …[truncated]";

/// Check a record key: 1..=[`MAX_KEY_LEN`] bytes, no NUL character.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_input("a record key may not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::TooLarge {
            what: format!("record key `{}…`", prefix(key, 32)),
            len: key.len(),
            limit: MAX_KEY_LEN,
        });
    }
    if key.contains('\0') {
        return Err(Error::invalid_input(format!(
            "record key `{}` contains a NUL character",
            key.escape_debug()
        )));
    }
    Ok(())
}

/// Check free-form names (namespace, pipeline, group, error type, provider, method):
/// 1..=[`MAX_NAME_LEN`] bytes, no NUL, no control characters.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_input(format!("{kind} may not be empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::TooLarge {
            what: format!("{kind} `{}…`", prefix(name, 32)),
            len: name.len(),
            limit: MAX_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_input(format!(
            "{kind} `{}` contains a control character",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Check identifier-like names (stages, metadata keys): 1..=64 ASCII letters, digits or `_`.
///
/// They end up in JSON paths (`$.pii_removed`) and report labels, so they are restricted to
/// characters that need no quoting in any SQL dialect.
pub fn check_ident(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{kind} `{}` must be 1 to 64 ASCII letters, digits or `_`",
            name.escape_debug()
        )))
    }
}

/// Check the number of items of one store call: 0..=[`MAX_BATCH`].
pub fn check_batch(what: &str, len: usize) -> Result<()> {
    if len > MAX_BATCH {
        return Err(Error::invalid_input(format!(
            "{what}: {len} items in one call; the limit is {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Check a page size: 1..=[`MAX_BATCH`].
pub fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_BATCH {
        return Err(Error::invalid_input(format!(
            "page limit {limit} is out of range 1..={MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Check that `keys` has no key twice (a set-based statement may touch a row only once).
pub fn check_unique<'a>(what: &str, keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k) {
            return Err(Error::invalid_input(format!(
                "{what}: key `{k}` appears twice in one batch"
            )));
        }
    }
    Ok(())
}

/// Check a JSON value's serialised size against `limit`.
pub fn check_json(what: &str, value: &serde_json::Value, limit: usize) -> Result<()> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, value)
        .map_err(|e| Error::invalid_input(format!("{what}: {e}")))?;
    if n.0 > limit {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            len: n.0,
            limit,
        });
    }
    Ok(())
}

/// Cut `message` to at most [`MAX_MESSAGE_BYTES`] bytes (mark included), at a character
/// boundary. Shorter messages are returned unchanged.
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES - TRUNCATION_MARK.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATION_MARK}", &message[..end])
}

/// The precision every store keeps: timestamps are cut to whole microseconds (toward the
/// past), as PostgreSQL `timestamptz` and MariaDB `DATETIME(6)` do.
pub fn store_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert!(check_key("stay-123").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            check_key(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(Error::TooLarge { len: 256, .. })
        ));
        assert!(check_key("a\0b").is_err());
        assert!(check_name("pipeline", "cases").is_ok());
        assert!(check_name("pipeline", "a\nb").is_err());
        assert!(check_ident("stage", "pii_removed").is_ok());
        assert!(check_ident("stage", "pii-removed").is_err());
        assert!(check_ident("stage", "").is_err());
        assert!(check_limit(0).is_err());
        assert!(check_limit(MAX_BATCH).is_ok());
        assert!(check_batch("x", MAX_BATCH + 1).is_err());
        assert!(check_unique("x", ["a", "b", "a"]).is_err());
        assert!(check_unique("x", ["a", "b"]).is_ok());
    }

    #[test]
    fn json_limits_and_message_truncation() {
        let big = serde_json::Value::String("x".repeat(100));
        assert!(check_json("payload", &big, 102).is_ok()); // 100 + two quotes
        assert!(matches!(
            check_json("payload", &big, 101),
            Err(Error::TooLarge { len: 102, .. })
        ));
        let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes per char
        let cut = truncate_message(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.ends_with(TRUNCATION_MARK));
        assert_eq!(truncate_message("short"), "short");
    }

    #[test]
    fn store_time_cuts_to_micros() {
        let t: DateTime<Utc> = "2024-11-04T08:00:00.123456789Z".parse().unwrap();
        assert_eq!(
            store_time(t).to_rfc3339(),
            "2024-11-04T08:00:00.123456+00:00"
        );
    }
}
