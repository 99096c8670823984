//! Two SQLite collations the planned repair's guarded `UPDATE` compares with, so that it
//! calls no SQL function at all.
//!
//! Why: inside a transaction SQLite keeps a *statement journal* (a copy of every page the
//! statement changes, spilled to a temporary file past 64 KiB) for a statement that writes
//! several rows and might abort half-way, and any SQL function call (`typeof`, `julianday`,
//! `GLOB`, `substr`…) counts as "might abort" (a function can raise an error). The host's
//! single `UPDATE` runs on its own, outside any transaction, and keeps none. A comparison
//! under a collation is not a function call (a collation cannot raise an error), so the
//! checks of a text lease expiry and of a lease owner are comparisons here, and the checks of
//! a value's type are comparisons and casts (see `plan.rs`).
//!
//! The row-by-row repair's guard compares a text expiry with [`INSTANT`] too: the instant the
//! read decoded, spelled recon's way, against the stored spelling, whatever it is (SQLite's
//! `strftime`, which it used before, reads fewer spellings than the read decodes — a job
//! spelled `+0000` was then "changed" at every run and never repaired — and only to the
//! millisecond).
//!
//! They also make the check exact by construction: [`INSTANT`] decodes a timestamp with
//! [`text_instant`], the same rules the row-by-row read decodes it with (sqlx's
//! `DateTime<Utc>` decoding of a text value; a unit test holds the two to the same answers),
//! where the SQL it replaces emulated those rules with SQLite's date functions and patterns.
//!
//! They are registered on a connection the first time a batch runs on it
//! ([`Tx::sqlite_collations`](crate::db::Tx::sqlite_collations)), on pools recon opened and on a
//! host's own pool alike. SQLite hands a collation the raw bytes, which need not be UTF-8;
//! sqlx passes them on with every invalid sequence replaced by U+FFFD.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::db::Collation;

/// Orders text by the instant it spells as the row-by-row read decodes it
/// ([`text_instant`]): every readable timestamp before every unreadable one (all equal). So
/// `e COLLATE recon_instant < now` (with `now` readable, and `e` text) holds exactly when `e`
/// reads and lies before `now`.
pub(crate) const INSTANT: &str = "recon_instant";

/// Orders text the row-by-row read can decode as a `String` (valid UTF-8) before text it
/// cannot. SQLite's bytes reach the collation with invalid sequences as U+FFFD, so text
/// holding a real U+FFFD counts as unreadable too: such an owner is left to the row-by-row
/// path, which reads it and repairs (or reports) it itself. `o COLLATE recon_readable = ''`
/// holds exactly for such text (no number or blob equals text).
pub(crate) const READABLE: &str = "recon_readable";

/// Both collations, as [`Tx::sqlite_collations`](crate::db::Tx::sqlite_collations) registers them.
pub(crate) const ALL: [Collation; 2] = [(INSTANT, compare_instants), (READABLE, compare_readable)];

/// SQLite's text spellings sqlx's decoding tries after RFC 3339, in its order.
const SQLITE_FORMATS: [&str; 12] = [
    "%F %T%.f",
    "%F %R",
    "%F %RZ",
    "%F %R%:z",
    "%F %T%.fZ",
    "%F %T%.f%:z",
    "%FT%R",
    "%FT%RZ",
    "%FT%R%:z",
    "%FT%T%.f",
    "%FT%T%.fZ",
    "%FT%T%.f%:z",
];

/// A text lease expiry as the row-by-row read decodes it: sqlx's `DateTime<Utc>` from a
/// SQLite text value (RFC 3339 first, then SQLite's own spellings, with an offset, `Z`, or
/// none for UTC), `None` where that fails. The test
/// `the_instant_collation_reads_timestamps_as_the_row_by_row_path_does` holds the two to the
/// same answers on 20,000 spellings.
pub(crate) fn text_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    for f in SQLITE_FORMATS {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.to_utc());
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

/// [`INSTANT`]'s order.
fn compare_instants(a: &str, b: &str) -> Ordering {
    match (text_instant(a), text_instant(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// [`READABLE`]'s order.
fn compare_readable(a: &str, b: &str) -> Ordering {
    let bad = |s: &str| s.contains(char::REPLACEMENT_CHARACTER);
    bad(a).cmp(&bad(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_order_readable_before_unreadable_and_by_instant() {
        let early = "2024-01-24T11:00:00+01:00"; // 10:00 UTC
        let late = "2024-01-24 10:30:00";
        assert_eq!(compare_instants(early, late), Ordering::Less);
        assert_eq!(compare_instants(late, early), Ordering::Greater);
        assert_eq!(
            compare_instants("2024-01-24T10:00:00Z", early),
            Ordering::Equal,
            "the same instant, spelled two ways"
        );
        for bad in ["", "2024-02-30 10:00:00", "2024-01-24T24:00:00Z", "soon"] {
            assert_eq!(compare_instants(late, bad), Ordering::Less, "{bad:?}");
            assert_eq!(compare_instants(bad, late), Ordering::Greater, "{bad:?}");
            assert_eq!(compare_instants(bad, "never"), Ordering::Equal, "{bad:?}");
        }
    }

    #[test]
    fn readable_text_is_text_without_a_replacement_character() {
        assert_eq!(compare_readable("worker-1", ""), Ordering::Equal);
        assert_eq!(compare_readable("wörker €", ""), Ordering::Equal);
        assert_eq!(compare_readable("w\u{fffd}", ""), Ordering::Greater);
        assert_eq!(compare_readable("", "\u{fffd}"), Ordering::Less);
    }
}
