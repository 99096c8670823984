//! Durations as integer nanoseconds, and their text form in serialised policies.
//!
//! Every computation in this crate works on `u64` nanoseconds bounded by [`LIMIT_NANOS`], so
//! nothing overflows and every value converts to a `chrono::TimeDelta` without loss.

use std::time::Duration;

/// 100 years (of 365 days) in nanoseconds: the largest duration a policy accepts or produces.
pub(crate) const LIMIT_NANOS: u64 = 100 * 365 * 86_400 * NANOS_PER_SEC;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds of `d`, saturated at [`LIMIT_NANOS`].
#[inline]
pub(crate) fn to_nanos(d: Duration) -> u64 {
    // u64 arithmetic only (this runs several times per decision); saturating is exact here
    // because anything that saturates is above the limit anyway.
    d.as_secs()
        .saturating_mul(NANOS_PER_SEC)
        .saturating_add(u64::from(d.subsec_nanos()))
        .min(LIMIT_NANOS)
}

/// `Duration` from nanoseconds.
pub(crate) const fn from_nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// Units understood in duration text, longest suffix first so that `ms` is not read as `m`.
const UNITS: [(&str, u64); 8] = [
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// Why a duration text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    Negative,
    TooLarge,
    Invalid(&'static str),
}

/// Parses `"1h30m"`, `"250ms"`, `"1.5s"`, `"2d"`, `"0"`: one or more `<number><unit>` parts,
/// optionally separated by spaces, with units `d h m s ms us µs ns`. A leading `-` is reported
/// as [`ParseError::Negative`]. Returns nanoseconds, at most [`LIMIT_NANOS`].
pub(crate) fn parse(text: &str) -> Result<u64, ParseError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ParseError::Invalid("empty"));
    }
    if s.starts_with('-') {
        return Err(ParseError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        rest = rest.trim_start();
        // The number: digits, optionally a dot and more digits.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(tail) => {
                let frac_len = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(ParseError::Invalid("expected a number"));
        }
        let Some(&(unit, scale)) = UNITS.iter().find(|(u, _)| after_num.starts_with(u)) else {
            return Err(ParseError::Invalid(if after_num.is_empty() {
                "missing unit"
            } else {
                "unknown unit"
            }));
        };
        rest = &after_num[unit.len()..];

        let mut value: u128 = 0;
        for b in int_part.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(b - b'0')))
                .ok_or(ParseError::TooLarge)?;
            if value > u128::from(LIMIT_NANOS) {
                return Err(ParseError::TooLarge);
            }
        }
        let mut part = value * u128::from(scale);
        // The fraction: digit k (1-based) is worth scale / 10^k; digits below 1 ns are dropped.
        let mut place = u128::from(scale);
        for b in frac_part.bytes() {
            place /= 10;
            part += u128::from(b - b'0') * place;
        }
        total = total.saturating_add(part);
        if total > u128::from(LIMIT_NANOS) {
            return Err(ParseError::TooLarge);
        }
    }
    // total <= LIMIT_NANOS checked above.
    Ok(total as u64)
}

/// Canonical text of a duration: `"0s"`, `"250ms"`, `"1s500ms"`, `"3h50m"`. [`parse`] reads it
/// back to the same value.
pub(crate) fn fmt_nanos(mut n: u64) -> String {
    if n == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, scale) in [
        ("h", 3_600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let q = n / scale;
        if q > 0 {
            out.push_str(&q.to_string());
            out.push_str(unit);
            n %= scale;
        }
    }
    out
}

/// Canonical text of a `Duration` (saturated at the limit).
pub(crate) fn fmt_duration(d: Duration) -> String {
    fmt_nanos(to_nanos(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_fractions_and_compounds() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0s"), Ok(0));
        assert_eq!(parse("250ms"), Ok(250_000_000));
        assert_eq!(parse("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse("1h30m"), Ok(5_400 * NANOS_PER_SEC));
        assert_eq!(parse("1h 30m"), Ok(5_400 * NANOS_PER_SEC));
        assert_eq!(parse("2d"), Ok(172_800 * NANOS_PER_SEC));
        assert_eq!(parse("7us"), Ok(7_000));
        assert_eq!(parse("7µs"), Ok(7_000));
        assert_eq!(parse("3ns"), Ok(3));
        assert_eq!(parse(".5m"), Ok(30 * NANOS_PER_SEC));
        assert_eq!(parse("+5s"), Ok(5 * NANOS_PER_SEC));
        // Digits below a nanosecond are dropped, not rounded.
        assert_eq!(parse("1.9999999999s"), Ok(1_999_999_999));
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(parse("-5s"), Err(ParseError::Negative));
        assert_eq!(parse(""), Err(ParseError::Invalid("empty")));
        assert_eq!(parse("5"), Err(ParseError::Invalid("missing unit")));
        assert_eq!(parse("5 parsecs"), Err(ParseError::Invalid("unknown unit")));
        assert_eq!(parse("s"), Err(ParseError::Invalid("expected a number")));
        assert_eq!(
            parse("1h-5m"),
            Err(ParseError::Invalid("expected a number"))
        );
        assert_eq!(parse("36501d"), Err(ParseError::TooLarge));
        assert_eq!(
            parse("99999999999999999999999999999999999999999h"),
            Err(ParseError::TooLarge)
        );
        assert_eq!(parse("876000h"), Ok(LIMIT_NANOS));
        assert_eq!(parse("876000h1ns"), Err(ParseError::TooLarge));
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        assert_eq!(fmt_nanos(0), "0s");
        assert_eq!(fmt_nanos(250_000_000), "250ms");
        assert_eq!(fmt_nanos(1_500_000_000), "1s500ms");
        assert_eq!(fmt_nanos(230 * 60 * NANOS_PER_SEC), "3h50m");
        assert_eq!(fmt_nanos(LIMIT_NANOS), "876000h");
        for n in [
            1,
            999,
            1_000,
            1_000_001,
            61 * NANOS_PER_SEC + 7,
            LIMIT_NANOS - 1,
        ] {
            assert_eq!(parse(&fmt_nanos(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn to_nanos_saturates_at_the_limit() {
        assert_eq!(to_nanos(Duration::MAX), LIMIT_NANOS);
        assert_eq!(to_nanos(Duration::from_millis(3)), 3_000_000);
    }
}
