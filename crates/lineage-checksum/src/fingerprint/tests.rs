use super::*;
use proptest::prelude::*;

/// The encoding written out literally from the module documentation, byte by byte, with no
/// shared code: if this and the fast encoder ever disagree, one of them broke the spec.
fn spec_bytes(domain: &str, fields: &[(&str, Value<'_>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, Value<'_>)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut schema = Vec::new();
    schema.extend_from_slice(b"recon.fp.v1.schema\0");
    schema.extend_from_slice(&(domain.len() as u32).to_be_bytes());
    schema.extend_from_slice(domain.as_bytes());
    schema.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
    for (name, _) in &sorted {
        schema.extend_from_slice(&(name.len() as u32).to_be_bytes());
        schema.extend_from_slice(name.as_bytes());
    }
    let schema_digest = Sha256::digest(&schema);
    let mut out = Vec::new();
    out.extend_from_slice(b"recon.fp.v1\0");
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&schema_digest);
    assert_eq!(out.len(), 64);
    for (_, v) in &sorted {
        match *v {
            Value::Null => out.push(0x00),
            Value::Bool(b) => out.extend_from_slice(&[0x01, b as u8]),
            Value::I64(i) => {
                out.push(0x02);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Value::U64(u) => {
                out.push(0x03);
                out.extend_from_slice(&u.to_be_bytes());
            }
            Value::F64(f) => {
                out.push(0x04);
                let bits = if f.is_nan() {
                    0x7ff8_0000_0000_0000
                } else if f == 0.0 {
                    0
                } else {
                    f.to_bits()
                };
                out.extend_from_slice(&bits.to_be_bytes());
            }
            Value::Str(s) => {
                out.push(0x05);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(0x06);
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
            Value::Timestamp(t) => {
                out.push(0x07);
                let micros = t.timestamp().checked_mul(1_000_000).unwrap()
                    + i64::from(t.timestamp_subsec_micros());
                out.extend_from_slice(&micros.to_be_bytes());
            }
            Value::Date(d) => {
                out.push(0x08);
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
                out.extend_from_slice(&((d - epoch).num_days() as i32).to_be_bytes());
            }
        }
    }
    out
}

fn spec_fingerprint(domain: &str, fields: &[(&str, Value<'_>)]) -> Fingerprint {
    Fingerprint(Sha256::digest(spec_bytes(domain, fields)).into())
}

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn fp(domain: &str, fields: &[(&str, Value<'_>)]) -> Fingerprint {
    fingerprint(domain, fields).unwrap()
}

fn case_fields<'a>(
    id: &'a str,
    subject: &'a str,
    resolution: Option<&'a str>,
    status: &'a str,
) -> [(&'a str, Value<'a>); 6] {
    [
        ("id", id.into()),
        ("last_modified", ts("2024-11-04T08:00:00Z").into()),
        ("subject", subject.into()),
        (
            "description",
            "ProLiant DL380 Gen11 server won't boot - iLO_400_MemoryErrors".into(),
        ),
        ("resolution", resolution.into()),
        ("status", status.into()),
    ]
}

/// Golden vectors: computed once from the v1 encoding and pinned here. If one of these
/// changes, every fingerprint stored by every host changes: that needs a new version string,
/// not an edit of the expected value.
#[test]
fn golden_vectors() {
    let date = NaiveDate::from_ymd_opt(2024, 2, 5).unwrap();
    let cases: Vec<(&str, Fingerprint)> = vec![
        (
            "case: scenario C key fields",
            fp(
                "case",
                &case_fields(
                    "5007T000002AbcD",
                    "ProLiant DL380 Gen11 server won't boot",
                    None,
                    "Open",
                ),
            ),
        ),
        (
            "case: resolved",
            fp(
                "case",
                &case_fields(
                    "5007T000002AbcD",
                    "ProLiant DL380 Gen11 server won't boot",
                    Some("Replaced DIMM 3"),
                    "Closed",
                ),
            ),
        ),
        (
            "reservation: scenario B",
            fp(
                "reservation",
                &[
                    ("id", "stay-123".into()),
                    ("accommodation_id", "acc-1".into()),
                    ("guest_name", "John Doe".into()),
                    ("status", "confirmed".into()),
                    ("check_in", date.into()),
                    (
                        "check_out",
                        NaiveDate::from_ymd_opt(2024, 2, 8).unwrap().into(),
                    ),
                ],
            ),
        ),
        ("empty record", fp("t", &[])),
        (
            "every type",
            fp(
                "types",
                &[
                    ("null", Value::Null),
                    ("bool", true.into()),
                    ("i64", (-42i64).into()),
                    ("u64", u64::MAX.into()),
                    ("f64", 1.5f64.into()),
                    ("str", "héllo".into()),
                    ("bytes", Value::Bytes(&[0, 1, 2, 255])),
                    ("ts", ts("1969-12-31T23:59:59.999999999Z").into()),
                    (
                        "date",
                        NaiveDate::from_ymd_opt(1969, 12, 31).unwrap().into(),
                    ),
                ],
            ),
        ),
    ];
    // The first three were also checked against an independent Python implementation of the
    // spec (hashlib + struct), written from the module documentation alone.
    let expected = [
        "07d6595ef35e1f94e82707e05faaa658ba4b4ac3d88562c4495ef0834ce07bc2",
        "3f7515aff8420ad627fcad58a33de393da879cb365723d9aa7b72af8dd59d1f6",
        "93c8000714d66b93d3ce392daef152bb122dda6a8436feebb056a356d760d1d1",
        "4bb7bb4e352850efe6709b9e3ad6108823e52bd86332256665bd5826d5a8ff23",
        "89209e01e2ac822c516b1be628415635bf8abe845698d7f7b1074039a0e26495",
    ];
    let got: Vec<String> = cases.iter().map(|(_, f)| f.to_hex()).collect();
    for ((name, f), want) in cases.iter().zip(expected) {
        assert_eq!(
            f.to_hex(),
            want,
            "golden vector `{name}` drifted; all: {got:#?}"
        );
    }
}

#[test]
fn the_worked_example_of_the_guide() {
    // docs/lineage-checksum.md, "Encoding v1, byte by byte".
    let f = fp("case", &[("status", Value::Null), ("id", "5007T".into())]);
    assert_eq!(
        f.to_hex(),
        "2b19285832b7f6bb45451b5a790e1fac8258187c74cdc85f6de1297b143ec609"
    );
    let bytes = spec_bytes("case", &[("status", Value::Null), ("id", "5007T".into())]);
    assert_eq!(
        &bytes[32..64],
        &hex32("279236b4863446220b295282632bed089a165a5131ed26f262fba78be4f603e8")
    );
    assert_eq!(
        &bytes[64..],
        &[5, 0, 0, 0, 5, b'5', b'0', b'0', b'7', b'T', 0]
    );
}

fn hex32(s: &str) -> [u8; 32] {
    Fingerprint::from_hex(s).unwrap().to_bytes()
}

#[test]
fn fast_encoder_matches_the_written_spec() {
    let date = NaiveDate::from_ymd_opt(2024, 2, 5).unwrap();
    let long = "x".repeat(1000);
    let records: Vec<Vec<(&str, Value<'_>)>> = vec![
        case_fields("1", "s", None, "Open").to_vec(),
        vec![],
        vec![("a", Value::Null)],
        vec![
            ("b", long.as_str().into()),
            ("a", Value::Bytes(long.as_bytes())),
        ],
        vec![
            ("z", f64::NAN.into()),
            ("y", (-0.0f64).into()),
            ("x", f64::INFINITY.into()),
            ("w", date.into()),
            ("v", ts("2024-01-01T00:00:00.1234567+02:00").into()),
            ("u", false.into()),
            ("t", i64::MIN.into()),
        ],
    ];
    for r in &records {
        assert_eq!(fp("d", r), spec_fingerprint("d", r), "{r:?}");
        let names: Vec<&str> = r.iter().map(|(n, _)| *n).collect();
        let values: Vec<Value<'_>> = r.iter().map(|(_, v)| *v).collect();
        let schema = Schema::new("d", names).unwrap();
        assert_eq!(schema.fingerprint(&values).unwrap(), fp("d", r));
    }
}

#[test]
fn every_buffer_and_padding_boundary_matches_the_spec() {
    // Encoded value lengths 1..=705 cover every padding case (55/56/63/64 bytes into a block)
    // and every position relative to the four-block buffer, including exactly full.
    let data: Vec<u8> = (0..700u32).map(|i| (i * 31 % 251) as u8).collect();
    for n in 0..=700 {
        let fields = [("b", Value::Bytes(&data[..n]))];
        assert_eq!(
            fp("d", &fields),
            spec_fingerprint("d", &fields),
            "bytes len {n}"
        );
    }
    let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
    for k in [0, 1, 55, 56, 63, 64, 247, 248, 255, 256, 257, 300] {
        let fields: Vec<(&str, Value<'_>)> = names[..k]
            .iter()
            .map(|n| (n.as_str(), Value::Null))
            .collect();
        assert_eq!(
            fp("d", &fields),
            spec_fingerprint("d", &fields),
            "{k} nulls"
        );
    }
}

#[test]
fn null_missing_and_empty_string_all_differ() {
    let with_null = fp("t", &[("id", "1".into()), ("note", Value::Null)]);
    let missing = fp("t", &[("id", "1".into())]);
    let empty = fp("t", &[("id", "1".into()), ("note", "".into())]);
    let null_text = fp("t", &[("id", "1".into()), ("note", "<null>".into())]);
    let all = [with_null, missing, empty, null_text];
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert_ne!(all[i], all[j], "{i} vs {j}");
        }
    }
}

#[test]
fn separators_cannot_be_forged() {
    // data-diff joins with '|': ("a|b","c") == ("a","b|c") there; never here.
    let a = fp("t", &[("f1", "a|b".into()), ("f2", "c".into())]);
    let b = fp("t", &[("f1", "a".into()), ("f2", "b|c".into())]);
    assert_ne!(a, b);
    // Length prefixes also keep names and values apart.
    let c = fp("t", &[("ab", "c".into())]);
    let d = fp("t", &[("a", "bc".into())]);
    assert_ne!(c, d);
    // And the domain apart from the names.
    assert_ne!(
        fp("ab", &[("c", Value::Null)]),
        fp("a", &[("bc", Value::Null)])
    );
}

#[test]
fn key_order_does_not_matter_but_duplicates_are_errors() {
    // LlamaIndex hashes str(dict), so insertion order changes the hash; here it does not.
    let fields = case_fields("1", "subject", Some("r"), "Open");
    let mut reversed = fields;
    reversed.reverse();
    assert_eq!(fp("case", &fields), fp("case", &reversed));
    let err = fingerprint("t", &[("a", 1.into()), ("b", 2.into()), ("a", 1.into())]).unwrap_err();
    assert!(
        matches!(err, Error::DuplicateField(ref n) if n == "a"),
        "{err}"
    );
    assert!(matches!(
        Schema::new("t", ["id", "status", "id"]),
        Err(Error::DuplicateField(ref n)) if n == "id"
    ));
}

#[test]
fn floats_follow_the_documented_rule() {
    let f = |v: f64| fp("t", &[("x", v.into())]);
    assert_eq!(f(-0.0), f(0.0));
    let other_nan = f64::from_bits(0xfff8_0000_0000_0001); // negative NaN with a payload
    assert!(other_nan.is_nan());
    assert_eq!(f(f64::NAN), f(other_nan));
    assert_eq!(f(f64::NAN), f(-f64::NAN));
    assert_ne!(f(f64::NAN), f(f64::INFINITY));
    assert_ne!(f(f64::INFINITY), f(f64::NEG_INFINITY));
    assert_ne!(f(1.0), f(1.0 + f64::EPSILON));
    assert_ne!(
        f(1.0),
        fp("t", &[("x", 1i64.into())]),
        "types are part of the value"
    );
    assert_eq!(canonical_f64_bits(-0.0), 0);
    assert_eq!(canonical_f64_bits(f64::NAN), CANONICAL_NAN_BITS);
}

#[test]
fn timestamps_are_utc_microseconds() {
    let f = |t: DateTime<Utc>| fp("t", &[("at", t.into())]);
    let utc = ts("2024-11-04T08:00:00Z");
    let offset: DateTime<FixedOffset> = "2024-11-04T10:00:00+02:00".parse().unwrap();
    assert_eq!(
        fp("t", &[("at", offset.into())]),
        f(utc),
        "same instant, other zone"
    );
    // Finer digits than microseconds are dropped toward the past.
    assert_eq!(
        f(ts("2024-11-04T08:00:00.0000019Z")),
        f(ts("2024-11-04T08:00:00.000001Z"))
    );
    assert_ne!(
        f(ts("2024-11-04T08:00:00.000001Z")),
        f(ts("2024-11-04T08:00:00.000002Z"))
    );
    // Before the epoch as well: -0.5 µs is floored to -1 µs.
    assert_eq!(
        f(ts("1969-12-31T23:59:59.9999995Z")),
        f(ts("1969-12-31T23:59:59.999999Z"))
    );
    assert_ne!(f(utc), fp("t", &[("at", utc.date_naive().into())]));
}

#[test]
fn strings_are_hashed_as_given() {
    let f = |s: &str| fp("t", &[("s", s.into())]);
    assert_ne!(f("Closed"), f("Closed "));
    assert_ne!(f("Closed"), f("closed"));
    assert_ne!(f("caf\u{e9}"), f("cafe\u{301}"), "no Unicode normalisation");
    assert_ne!(f("abc"), fp("t", &[("s", Value::Bytes(b"abc"))]));
    assert_ne!(
        fp("t", &[("n", 5i64.into())]),
        fp("t", &[("n", 5u64.into())])
    );
    assert_ne!(
        fp("t", &[("b", true.into())]),
        fp("t", &[("b", 1i64.into())])
    );
}

#[test]
fn domains_separate_record_types() {
    let fields = [("id", Value::from("1"))];
    assert_ne!(fp("case", &fields), fp("task", &fields));
    assert_ne!(fp("", &fields), fp("case", &fields));
}

#[test]
fn schema_checks_value_count_and_many_fields_work() {
    let schema = Schema::new("t", ["a", "b"]).unwrap();
    assert!(matches!(
        schema.fingerprint(&["x".into()]),
        Err(Error::FieldCount {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert_eq!(schema.domain(), "t");
    assert_eq!(schema.fields().collect::<Vec<_>>(), ["a", "b"]);
    // More fields than fit the stack buffer take the heap path and agree with the spec.
    let names: Vec<String> = (0..100).map(|i| format!("f{i:03}")).collect();
    let fields: Vec<(&str, Value<'_>)> = names
        .iter()
        .rev()
        .map(|n| (n.as_str(), Value::from(n.as_str())))
        .collect();
    assert_eq!(fp("t", &fields), spec_fingerprint("t", &fields));
    let mut dup = fields.clone();
    dup.push(("f050", Value::Null));
    assert!(matches!(
        fingerprint("t", &dup),
        Err(Error::DuplicateField(_))
    ));
}

#[test]
fn hex_display_parse_and_serde() {
    let f = fp("t", &[("id", "1".into())]);
    let hex = f.to_string();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(hex.parse::<Fingerprint>().unwrap(), f);
    assert_eq!(hex.to_uppercase().parse::<Fingerprint>().unwrap(), f);
    assert!("abc".parse::<Fingerprint>().is_err());
    assert!("g".repeat(64).parse::<Fingerprint>().is_err());
    assert!("é".repeat(32).parse::<Fingerprint>().is_err());
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), f);
    assert!(serde_json::from_str::<Fingerprint>("\"00\"").is_err());
    assert_eq!(format!("{f:?}"), format!("Fingerprint({hex})"));
    assert_eq!(Fingerprint::try_from(&f.as_bytes()[..]).unwrap(), f);
    assert!(Fingerprint::try_from(&[0u8; 31][..]).is_err());
    assert_eq!(Fingerprint::from_bytes(f.to_bytes()), f);
}

fn value_strategy() -> impl Strategy<Value = OwnedValue> {
    prop_oneof![
        Just(OwnedValue::Null),
        any::<bool>().prop_map(OwnedValue::Bool),
        any::<i64>().prop_map(OwnedValue::I64),
        any::<u64>().prop_map(OwnedValue::U64),
        any::<f64>().prop_map(OwnedValue::F64),
        ".{0,12}".prop_map(OwnedValue::Str),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(OwnedValue::Bytes),
        (-10_000_000_000_000_000i64..10_000_000_000_000_000i64).prop_map(OwnedValue::Micros),
    ]
}

#[derive(Clone, Debug)]
enum OwnedValue {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    Micros(i64),
}

impl OwnedValue {
    fn borrow(&self) -> Value<'_> {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::I64(i) => Value::I64(*i),
            Self::U64(u) => Value::U64(*u),
            Self::F64(f) => Value::F64(*f),
            Self::Str(s) => Value::Str(s),
            Self::Bytes(b) => Value::Bytes(b),
            Self::Micros(m) => Value::Timestamp(DateTime::from_timestamp_micros(*m).unwrap()),
        }
    }
}

fn record_strategy() -> impl Strategy<Value = Vec<(String, OwnedValue)>> {
    proptest::collection::btree_map("[a-z_]{1,6}", value_strategy(), 0..7)
        .prop_map(|m| m.into_iter().collect())
}

fn borrowed(r: &[(String, OwnedValue)]) -> Vec<(&str, Value<'_>)> {
    r.iter().map(|(n, v)| (n.as_str(), v.borrow())).collect()
}

proptest! {
    #[test]
    fn splitting_a_string_across_two_fields_never_collides(s in ".{0,40}", i in 0usize..41, j in 0usize..41) {
        let cut = |k: usize| {
            let mut k = k.min(s.len());
            while !s.is_char_boundary(k) { k -= 1; }
            k
        };
        let (i, j) = (cut(i), cut(j));
        let a = fp("t", &[("f1", s[..i].into()), ("f2", s[i..].into())]);
        let b = fp("t", &[("f1", s[..j].into()), ("f2", s[j..].into())]);
        prop_assert_eq!(i == j, a == b);
    }

    #[test]
    fn permutations_do_not_change_the_fingerprint(r in record_strategy(), seed in any::<u64>()) {
        let fields = borrowed(&r);
        let mut shuffled = fields.clone();
        // A deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut x = seed | 1;
        for k in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(k, (x >> 33) as usize % (k + 1));
        }
        prop_assert_eq!(fp("d", &fields), fp("d", &shuffled));
        prop_assert_eq!(fp("d", &fields), spec_fingerprint("d", &fields));
    }

    #[test]
    fn distinct_typed_records_have_distinct_encodings(a in record_strategy(), b in record_strategy()) {
        let (fa, fb) = (borrowed(&a), borrowed(&b));
        // Equal under the documented canonicalisation (floats, time precision) or not at all.
        let same = fa.len() == fb.len() && fa.iter().zip(&fb).all(|((na, va), (nb, vb))| {
            na == nb && match (va, vb) {
                (Value::F64(x), Value::F64(y)) => canonical_f64_bits(*x) == canonical_f64_bits(*y),
                _ => va == vb,
            }
        });
        prop_assert_eq!(same, spec_bytes("d", &fa) == spec_bytes("d", &fb));
        prop_assert_eq!(same, fp("d", &fa) == fp("d", &fb));
    }
}
