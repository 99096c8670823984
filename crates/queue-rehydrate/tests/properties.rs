//! Property tests: the predicate evaluator follows SQL's three-valued logic, a dry run's
//! "as if maintenance had run" equals the real run, and the queue diff converges.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use queue_rehydrate::conformance::{self, MemoryHarness};
use queue_rehydrate::memory::{MemoryDerivedQueue, MemorySourceStore};
use queue_rehydrate::{
    ColumnType, DiffSettings, JobPlan, Key, KeyType, Operand, Operator, Predicate,
    QueueDiffReconciler, QueuedJob, RehydrateReconciler, Row, TableMapping, Truth, Value,
};
use recon_core::{Reconciler, RunContext};

fn now() -> DateTime<Utc> {
    conformance::now()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ----- predicates ---------------------------------------------------------------------------

fn table() -> TableMapping {
    TableMapping::builder("t", "id", KeyType::Integer)
        .column("n", ColumnType::Integer)
        .column("s", ColumnType::Text)
        .column("t", ColumnType::Timestamp)
        .build()
        .unwrap()
}

/// A row as plain options, the oracle's view: (n, s, t as days from now).
#[derive(Clone, Debug)]
struct Plain {
    n: Option<i64>,
    s: Option<&'static str>,
    t: Option<i64>,
}

impl Plain {
    fn row(&self) -> Row {
        table()
            .row([
                ("id", 1.into()),
                ("n", self.n.into()),
                ("s", self.s.into()),
                ("t", self.t.map(|d| now() + TimeDelta::days(d)).into()),
            ])
            .unwrap()
    }
}

const WORDS: [&str; 3] = ["pending", "sent", "Pending"];

fn plain() -> impl Strategy<Value = Plain> {
    (
        proptest::option::of(-3_i64..4),
        proptest::option::of(proptest::sample::select(&WORDS[..])),
        proptest::option::of(-5_i64..5),
    )
        .prop_map(|(n, s, t)| Plain { n, s, t })
}

fn op() -> impl Strategy<Value = Operator> {
    proptest::sample::select(
        &[
            Operator::Eq,
            Operator::Ne,
            Operator::Lt,
            Operator::Le,
            Operator::Gt,
            Operator::Ge,
        ][..],
    )
}

fn atom() -> impl Strategy<Value = Predicate> {
    prop_oneof![
        (op(), -3_i64..4).prop_map(|(op, v)| Predicate::Compare {
            column: "n".into(),
            op,
            value: Operand::Value(Value::Int(v)),
        }),
        (any::<bool>(), proptest::sample::select(&WORDS[..])).prop_map(|(eq, w)| {
            if eq {
                Predicate::eq("s", w)
            } else {
                Predicate::ne("s", w)
            }
        }),
        (op(), -5_i64..5).prop_map(|(op, d)| Predicate::Compare {
            column: "t".into(),
            op,
            value: Operand::Now {
                offset_secs: d * 86_400,
            },
        }),
        proptest::collection::vec(-3_i64..4, 1..4).prop_map(|v| Predicate::is_in("n", v)),
        proptest::collection::vec(proptest::sample::select(&WORDS[..]), 1..3)
            .prop_map(|v| Predicate::is_in("s", v)),
        (0_u32..5).prop_map(|d| Predicate::within_days("t", d)),
        proptest::sample::select(&["n", "s", "t"][..]).prop_map(Predicate::is_null),
        proptest::sample::select(&["n", "s", "t"][..]).prop_map(Predicate::is_not_null),
        Just(Predicate::All),
    ]
}

fn predicate() -> impl Strategy<Value = Predicate> {
    atom().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Predicate::And),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Predicate::Or),
            inner.prop_map(|p| !p),
        ]
    })
}

/// Kleene logic by numbers: false 0, unknown 1, true 2; AND = min, OR = max, NOT = 2 - x.
fn num(b: Option<bool>) -> u8 {
    match b {
        Some(false) => 0,
        None => 1,
        Some(true) => 2,
    }
}

fn cmp<T: Ord>(a: Option<T>, op: Operator, b: T) -> Option<bool> {
    let a = a?;
    Some(match op {
        Operator::Eq => a == b,
        Operator::Ne => a != b,
        Operator::Lt => a < b,
        Operator::Le => a <= b,
        Operator::Gt => a > b,
        Operator::Ge => a >= b,
    })
}

/// An oracle written against the plain row, independent of `Predicate::eval`.
fn oracle(p: &Predicate, r: &Plain) -> u8 {
    match p {
        Predicate::All => 2,
        Predicate::Compare { column, op, value } => num(match (column.as_str(), value) {
            ("n", Operand::Value(Value::Int(v))) => cmp(r.n, *op, *v),
            ("s", Operand::Value(Value::Text(v))) => cmp(r.s, *op, v.as_str()),
            ("t", Operand::Now { offset_secs }) => cmp(r.t.map(|d| d * 86_400), *op, *offset_secs),
            other => panic!("not generated: {other:?}"),
        }),
        Predicate::In { column, values } => values
            .iter()
            .map(|v| {
                num(match (column.as_str(), v) {
                    ("n", Value::Int(v)) => r.n.map(|n| n == *v),
                    ("s", Value::Text(v)) => r.s.map(|s| s == v),
                    other => panic!("not generated: {other:?}"),
                })
            })
            .max()
            .unwrap_or(0),
        Predicate::IsNull { column } | Predicate::IsNotNull { column } => {
            let null = match column.as_str() {
                "n" => r.n.is_none(),
                "s" => r.s.is_none(),
                _ => r.t.is_none(),
            };
            num(Some(null == matches!(p, Predicate::IsNull { .. })))
        }
        Predicate::WithinDays { days, .. } => num(r.t.map(|d| d >= -i64::from(*days))),
        Predicate::And(parts) => parts.iter().map(|q| oracle(q, r)).min().unwrap_or(2),
        Predicate::Or(parts) => parts.iter().map(|q| oracle(q, r)).max().unwrap_or(0),
        Predicate::Not(q) => 2 - oracle(q, r),
    }
}

fn as_num(t: Truth) -> u8 {
    match t {
        Truth::False => 0,
        Truth::Unknown => 1,
        Truth::True => 2,
    }
}

proptest! {
    #[test]
    fn eval_follows_sql_three_valued_logic(p in predicate(), r in plain()) {
        prop_assert!(p.validate(&table()).is_ok());
        let row = r.row();
        let got = p.eval(&row, now());
        prop_assert_eq!(as_num(got), oracle(&p, &r), "{:?} on {:?}", p, r);
        // p and NOT p are never both selected; neither is selected exactly when unknown
        let neg = !p.clone();
        prop_assert!(!(p.matches(&row, now()) && neg.matches(&row, now())));
        prop_assert_eq!(
            !p.matches(&row, now()) && !neg.matches(&row, now()),
            got == Truth::Unknown
        );
    }

    #[test]
    fn de_morgan_and_double_negation_hold(a in predicate(), b in predicate(), r in plain()) {
        let row = r.row();
        let lhs = !Predicate::and([a.clone(), b.clone()]);
        let rhs = Predicate::or([!a.clone(), !b.clone()]);
        prop_assert_eq!(lhs.eval(&row, now()), rhs.eval(&row, now()));
        let lhs = !Predicate::or([a.clone(), b.clone()]);
        let rhs = Predicate::and([!a.clone(), !b]);
        prop_assert_eq!(lhs.eval(&row, now()), rhs.eval(&row, now()));
        prop_assert_eq!((!!a.clone()).eval(&row, now()), a.eval(&row, now()));
    }

    #[test]
    fn any_test_but_is_null_on_a_null_column_is_unknown(p in atom()) {
        let nulls = Plain { n: None, s: None, t: None };
        let got = p.eval(&nulls.row(), now());
        match p {
            Predicate::All => prop_assert_eq!(got, Truth::True),
            Predicate::IsNull { .. } => prop_assert_eq!(got, Truth::True),
            Predicate::IsNotNull { .. } => prop_assert_eq!(got, Truth::False),
            _ => prop_assert_eq!(got, Truth::Unknown, "{:?}", p),
        }
    }
}

// ----- dry run as if maintenance had run ------------------------------------------------------

fn sessions() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            0_i64..5,
            proptest::option::of(-48_i64..48),
            0_i64..500,
        ),
        0..25,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (active, attempts, cooldown_h, idle_days))| {
                conformance::user_sessions()
                    .row([
                        ("phone", format!("+57300{i:07}").into()),
                        (
                            "contact_status",
                            if active { "ACTIVE" } else { "INACTIVE" }.into(),
                        ),
                        ("follow_up_attempts", attempts.into()),
                        (
                            "cooldown_until",
                            cooldown_h.map(|h| now() + TimeDelta::hours(h)).into(),
                        ),
                        ("last_activity", (now() - TimeDelta::days(idle_days)).into()),
                    ])
                    .unwrap()
            })
            .collect()
    })
}

fn eligibility() -> impl Strategy<Value = Predicate> {
    proptest::sample::select(vec![
        conformance::follow_up_eligibility(),
        // reads the assigned columns in ways the superset must still cover
        Predicate::and([
            !Predicate::is_not_null("cooldown_until"),
            Predicate::eq("follow_up_attempts", 0),
        ]),
        !Predicate::ge("follow_up_attempts", 1),
        Predicate::or([
            Predicate::is_in("follow_up_attempts", [0, 4]),
            Predicate::gt("cooldown_until", Operand::now()),
        ]),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_dry_run_reports_what_the_real_run_does(
        rows in sessions(),
        eligible in eligibility(),
        batch in 1_usize..6,
    ) {
        let table = conformance::user_sessions();
        let step = |store: &MemorySourceStore, queue: Arc<MemoryDerivedQueue>| {
            RehydrateReconciler::builder("q", Arc::new(store.clone()), table.clone())
                .maintenance(conformance::clear_expired_cooldowns())
                .candidates(eligible.clone(), queue)
                .batch_size(batch)
                .build()
                .unwrap()
        };
        let (dry_store, real_store) = (MemorySourceStore::new(), MemorySourceStore::new());
        dry_store.replace(&table, rows.clone()).unwrap();
        real_store.replace(&table, rows.clone()).unwrap();
        let (dry_q, real_q) = (Arc::new(MemoryDerivedQueue::new()), Arc::new(MemoryDerivedQueue::new()));
        let ctx = RunContext::new(now());
        let dry = block_on(step(&dry_store, dry_q.clone()).reconcile(&ctx.clone().with_dry_run(true))).unwrap();
        let real = block_on(step(&real_store, real_q.clone()).reconcile(&ctx)).unwrap();

        prop_assert_eq!(dry.counters(), real.counters());
        prop_assert_eq!(dry_store.rows(&table), rows.clone(), "dry run changed rows");
        prop_assert!(dry_q.is_empty());
        // the real run did what the rule says, row by row, and queued what is eligible after
        let mut expected = rows;
        let rule = conformance::clear_expired_cooldowns();
        for r in &mut expected {
            rule.apply(r, now());
        }
        let eligible_keys: Vec<Key> = expected
            .iter()
            .filter(|r| eligible.matches(r, now()))
            .map(|r| r.key().clone())
            .collect();
        prop_assert_eq!(real_store.rows(&table), expected);
        prop_assert_eq!(real_q.keys(), eligible_keys);
    }
}

// ----- queue diff converges -----------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Held {
    Absent,
    Correct,
    Drifted(i64),
}

fn held() -> impl Strategy<Value = Held> {
    prop_oneof![
        Just(Held::Absent),
        Just(Held::Correct),
        (-72_i64..72)
            .prop_filter("a drift", |h| *h != 0)
            .prop_map(Held::Drifted)
    ]
}

/// Per reservation: exists?, confirmed?, what the queue holds of its two jobs.
fn world() -> impl Strategy<Value = Vec<(bool, bool, Held, Held)>> {
    proptest::collection::vec((any::<bool>(), any::<bool>(), held(), held()), 0..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_diff_makes_the_queue_equal_the_desired_set_and_is_idempotent(
        world in world(),
        batch in 1_usize..8,
    ) {
        let h = MemoryHarness::new();
        let table = conformance::reservations();
        let mut entities = Vec::new();
        let mut jobs = Vec::new();
        for (i, (exists, confirmed, gen_held, rev_held)) in world.iter().enumerate() {
            let mut row = conformance::reservation(i as u32 + 1);
            if !confirmed {
                row.set("status", "cancelled".into());
            }
            // what a confirmed reservation would have had queued at some point
            let plan = conformance::pin_plan(&conformance::reservation(i as u32 + 1), now()).unwrap();
            for (d, held) in plan.iter().zip([gen_held, rev_held]) {
                let mut j = conformance::queued(d);
                match held {
                    Held::Absent => continue,
                    Held::Correct => {}
                    Held::Drifted(hours) => j.run_at += TimeDelta::hours(*hours),
                }
                jobs.push(j);
            }
            if *exists {
                entities.push(row);
            }
        }
        h.source.replace(&table, entities.clone()).unwrap();
        h.queue.replace(jobs);
        let plan: Arc<dyn JobPlan> = Arc::new(conformance::pin_plan);
        let step = QueueDiffReconciler::new("pin-jobs", h.queue.clone(), h.reservations(), plan)
            .with_settings(DiffSettings::new().batch_size(batch))
            .unwrap();
        let ctx = RunContext::new(now());

        let first = block_on(step.reconcile(&ctx)).unwrap();
        prop_assert_eq!(first.item_error_count(), 0);
        let want: BTreeMap<String, QueuedJob> = entities
            .iter()
            .flat_map(|r| conformance::pin_plan(r, now()).unwrap())
            .map(|d| (d.id.clone(), conformance::queued(&d)))
            .collect();
        let got: BTreeMap<String, QueuedJob> =
            h.queue.waiting().into_iter().map(|j| (j.id.clone(), j)).collect();
        prop_assert_eq!(&got, &want);

        let second = block_on(step.reconcile(&ctx)).unwrap();
        for c in ["orphaned", "obsolete", "enqueued", "rescheduled"] {
            prop_assert_eq!(second.get(c), Some(0), "second run {}: {:?}", c, second);
        }
        let again: BTreeMap<String, QueuedJob> =
            h.queue.waiting().into_iter().map(|j| (j.id.clone(), j)).collect();
        prop_assert_eq!(again, want);
    }
}
