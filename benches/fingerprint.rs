//! Fingerprints per second on 200-byte records (6 fields) against raw SHA-256 over the same
//! 200 bytes, in the same run.
//!
//! ```text
//! cargo bench --bench fingerprint -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! After criterion's groups, a short summary prints both rates and their ratio
//! (target: fingerprint ≥ 0.7 × raw, ≥ 4 M/s on one core).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput};
use lineage_checksum::{Schema, Value, fingerprint};
use sha2::{Digest, Sha256};

const FIELDS: [&str; 6] = [
    "id",
    "last_modified",
    "subject",
    "description",
    "resolution",
    "status",
];

/// One record: 16 + 8 + 40 + 100 + 30 + 6 = 200 bytes of field values.
struct Record {
    id: String,
    modified: DateTime<Utc>,
    subject: String,
    description: String,
    resolution: String,
    status: String,
    /// The same 200 bytes, concatenated, for the raw baseline.
    raw: Vec<u8>,
}

fn records(n: usize) -> Vec<Record> {
    let base: DateTime<Utc> = "2024-11-04T08:00:00Z".parse().expect("valid time");
    (0..n)
        .map(|i| {
            let id = format!("5007T{i:011}");
            let modified = base + chrono::Duration::seconds(i as i64);
            let subject = format!("{:<40}", format!("Server {i} won't boot"));
            let description = format!("{:<100}", format!("iLO_400_MemoryErrors on DL380 #{i}"));
            let resolution = format!("{:<30}", "Replaced DIMM 3");
            let status = "Closed".to_owned();
            let mut raw = Vec::with_capacity(200);
            raw.extend_from_slice(id.as_bytes());
            raw.extend_from_slice(&modified.timestamp_micros().to_be_bytes());
            raw.extend_from_slice(subject.as_bytes());
            raw.extend_from_slice(description.as_bytes());
            raw.extend_from_slice(resolution.as_bytes());
            raw.extend_from_slice(status.as_bytes());
            assert_eq!(raw.len(), 200);
            Record {
                id,
                modified,
                subject,
                description,
                resolution,
                status,
                raw,
            }
        })
        .collect()
}

fn values(r: &Record) -> [Value<'_>; 6] {
    [
        Value::Str(&r.id),
        Value::Timestamp(r.modified),
        Value::Str(&r.subject),
        Value::Str(&r.description),
        Value::Str(&r.resolution),
        Value::Str(&r.status),
    ]
}

fn schema_fp(schema: &Schema, r: &Record) -> [u8; 32] {
    schema
        .fingerprint(&values(r))
        .expect("valid record")
        .to_bytes()
}

fn adhoc_fp(r: &Record) -> [u8; 32] {
    let v = values(r);
    let fields: [(&str, Value<'_>); 6] = std::array::from_fn(|i| (FIELDS[i], v[i]));
    fingerprint("case", &fields)
        .expect("valid record")
        .to_bytes()
}

fn raw_sha(r: &Record) -> [u8; 32] {
    Sha256::digest(&r.raw).into()
}

fn bench(c: &mut Criterion, recs: &[Record], schema: &Schema) {
    let mut g = c.benchmark_group("fingerprint_200B_6_fields");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("raw_sha256_200B", |b| {
        b.iter(|| {
            i = (i + 1) % recs.len();
            black_box(raw_sha(black_box(&recs[i])))
        })
    });
    g.bench_function("schema_fingerprint", |b| {
        b.iter(|| {
            i = (i + 1) % recs.len();
            black_box(schema_fp(schema, black_box(&recs[i])))
        })
    });
    g.bench_function("adhoc_fingerprint", |b| {
        b.iter(|| {
            i = (i + 1) % recs.len();
            black_box(adhoc_fp(black_box(&recs[i])))
        })
    });
    g.finish();
}

/// Nanoseconds per record of one pass of `f` over `recs`.
fn pass(recs: &[Record], f: &mut impl FnMut(&Record) -> [u8; 32]) -> f64 {
    let start = Instant::now();
    for r in recs {
        black_box(f(black_box(r)));
    }
    start.elapsed().as_nanos() as f64 / recs.len() as f64
}

fn main() {
    let recs = records(1024);
    let schema = Schema::new("case", FIELDS).expect("valid schema");
    for r in &recs {
        assert_eq!(schema_fp(&schema, r), adhoc_fp(r), "both paths agree");
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &recs, &schema);
    c.final_summary();

    // Interleaved short passes; the fastest pass of each is kept. On a shared machine other
    // processes only ever slow a pass down, so the minimum is the figure least disturbed by
    // them, and interleaving exposes both sides to the same CPU frequency.
    let mut raw_f = raw_sha;
    let mut sch_f = |r: &Record| schema_fp(&schema, r);
    let mut adh_f = adhoc_fp;
    let (mut raw, mut sch, mut adh) = (f64::MAX, f64::MAX, f64::MAX);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        raw = raw.min(pass(&recs, &mut raw_f));
        sch = sch.min(pass(&recs, &mut sch_f));
        adh = adh.min(pass(&recs, &mut adh_f));
    }
    let per_sec = |ns: f64| 1e3 / ns; // millions per second
    println!(
        "\nsummary (one core, 200-byte records, 6 fields; fastest of interleaved passes of 1,024 records):"
    );
    println!(
        "  raw sha256 over the 200 bytes : {:>6.1} ns  {:>5.2} M/s",
        raw,
        per_sec(raw)
    );
    println!(
        "  Schema::fingerprint           : {:>6.1} ns  {:>5.2} M/s  ratio {:.2}",
        sch,
        per_sec(sch),
        raw / sch
    );
    println!(
        "  fingerprint() (ad hoc)        : {:>6.1} ns  {:>5.2} M/s  ratio {:.2}",
        adh,
        per_sec(adh),
        raw / adh
    );
}
