//! Behavioural tests every implementation of this crate's store traits must pass, written once.
//!
//! The in-memory stores run them in this crate's tests; `store-sqlx` runs the same functions
//! against SQLite, PostgreSQL and MariaDB. Each function takes the store under test and a
//! *fixture* — the test-only ability to create/seed a table and read it back — and panics
//! (with a message saying what differs) when the store misbehaves.
//!
//! Times are whole seconds. Text compares exactly, byte for byte: the probe table holds both
//! `pending` and `Pending` on purpose, so a MariaDB store must compare text with a binary
//! collation (its default collations ignore case) to pass.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use recon_core::{Reconciler, RunContext, StepReport};

use crate::memory::{
    MemoryDerivedQueue, MemoryEntitySource, MemoryJobQueue, MemoryMessageStore, MemorySourceStore,
};
use crate::{
    ColumnType, DerivedQueue, DesiredJob, DiffSettings, EntitySource, Error, FailedMessageStore,
    JobPlan, JobQueue, Key, KeyType, Maintenance, Message, MessageAdmin, MessageRecovery,
    MessageStatus, MessageStore, NamedCount, Operand, Predicate, QueueDiffReconciler, QueuedJob,
    RecoverySettings, RehydrateReconciler, Removal, Result, Row, SetValue, SourceStore,
    StatusCounts, TableMapping, Value,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Test-only access to source tables.
#[async_trait]
pub trait SourceFixture: Send + Sync {
    /// Create `table` if needed (columns as the mapping declares, key column primary key) and
    /// replace its rows with `rows`.
    async fn reset_table(&self, table: &TableMapping, rows: &[Row]) -> Result<()>;

    /// Every row of `table` with every mapped column.
    async fn table_rows(&self, table: &TableMapping) -> Result<Vec<Row>>;
}

/// Test-only access to a job queue.
#[async_trait]
pub trait JobQueueFixture: Send + Sync {
    /// Replace every job: `waiting` ones (listed by `page`) and `running` ones (not listed,
    /// not removable, but their ids exist).
    async fn reset_jobs(&self, waiting: &[QueuedJob], running: &[QueuedJob]) -> Result<()>;

    /// Every waiting job.
    async fn waiting_jobs(&self) -> Result<Vec<QueuedJob>>;
}

/// Test-only access to a message queue.
#[async_trait]
pub trait MessageFixture: Send + Sync {
    /// Replace every message.
    async fn reset_messages(&self, messages: &[Message]) -> Result<()>;

    /// Every message (archived ones included; deleted ones not).
    async fn all_messages(&self) -> Result<Vec<Message>>;
}

#[async_trait]
impl SourceFixture for MemorySourceStore {
    async fn reset_table(&self, table: &TableMapping, rows: &[Row]) -> Result<()> {
        self.replace(table, rows.iter().cloned())
    }

    async fn table_rows(&self, table: &TableMapping) -> Result<Vec<Row>> {
        Ok(self.rows(table))
    }
}

#[async_trait]
impl JobQueueFixture for MemoryJobQueue {
    async fn reset_jobs(&self, waiting: &[QueuedJob], running: &[QueuedJob]) -> Result<()> {
        self.replace(waiting.iter().cloned());
        self.insert(running.iter().cloned());
        for j in running {
            self.set_state(&j.id, crate::memory::JobState::Running);
        }
        Ok(())
    }

    async fn waiting_jobs(&self) -> Result<Vec<QueuedJob>> {
        Ok(self.waiting())
    }
}

#[async_trait]
impl MessageFixture for MemoryMessageStore {
    async fn reset_messages(&self, messages: &[Message]) -> Result<()> {
        self.replace(messages.iter().cloned());
        Ok(())
    }

    async fn all_messages(&self) -> Result<Vec<Message>> {
        Ok(self.all())
    }
}

/// The in-memory stores wired together as the suite expects, for this crate's own tests.
#[derive(Clone, Debug)]
pub struct MemoryHarness {
    /// Source tables.
    pub source: MemorySourceStore,
    /// Jobs.
    pub queue: Arc<MemoryJobQueue>,
    /// Messages.
    pub messages: Arc<MemoryMessageStore>,
}

impl MemoryHarness {
    /// Fresh, empty stores.
    pub fn new() -> Self {
        Self {
            source: MemorySourceStore::new(),
            queue: Arc::new(MemoryJobQueue::new()),
            messages: Arc::new(MemoryMessageStore::new()),
        }
    }

    /// The reservations entity source over the source tables.
    pub fn reservations(&self) -> Arc<MemoryEntitySource> {
        Arc::new(MemoryEntitySource::new(self.source.clone(), reservations()))
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario data
// ---------------------------------------------------------------------------------------------

/// Scenario A's `now`: 2024-01-24 12:00 UTC.
pub fn now() -> DateTime<Utc> {
    at("2024-01-24T12:00:00Z")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid RFC 3339 time")
}

fn ctx() -> RunContext {
    RunContext::new(now())
}

/// Seed 001's `user_sessions` table.
pub fn user_sessions() -> TableMapping {
    TableMapping::builder("user_sessions", "phone", KeyType::Text)
        .column("contact_status", ColumnType::Text)
        .column("follow_up_attempts", ColumnType::Integer)
        .column("cooldown_until", ColumnType::Timestamp)
        .column("last_activity", ColumnType::Timestamp)
        .build()
        .expect("valid mapping")
}

fn session(
    phone: &str,
    status: &str,
    attempts: i64,
    cooldown: Option<DateTime<Utc>>,
    days_idle: i64,
) -> Row {
    user_sessions()
        .row([
            ("phone", phone.into()),
            ("contact_status", status.into()),
            ("follow_up_attempts", attempts.into()),
            ("cooldown_until", cooldown.into()),
            ("last_activity", (now() - TimeDelta::days(days_idle)).into()),
        ])
        .expect("valid row")
}

/// Scenario A's five sessions, before reconciliation.
pub fn user_session_rows() -> Vec<Row> {
    vec![
        session(
            "+573001234567",
            "ACTIVE",
            3,
            Some(at("2024-01-24T11:00:00Z")),
            1,
        ),
        session("+573007654321", "ACTIVE", 1, None, 2),
        session(
            "+573000000001",
            "ACTIVE",
            1,
            Some(at("2024-01-24T18:00:00Z")),
            1,
        ),
        session("+573000000002", "INACTIVE", 0, None, 1),
        session("+573000000003", "ACTIVE", 0, None, 400),
    ]
}

/// Seed 001: clear expired cooldowns and reset attempts, counted as `cooldowns_cleared`.
pub fn clear_expired_cooldowns() -> Maintenance {
    Maintenance::new(
        "cooldowns_cleared",
        Predicate::lt("cooldown_until", Operand::now()),
    )
    .set("cooldown_until", SetValue::Null)
    .set("follow_up_attempts", SetValue::Int(0))
}

/// Seed 001: active, not in cooldown, fewer than 3 attempts, active within 365 days.
pub fn follow_up_eligibility() -> Predicate {
    Predicate::and([
        Predicate::eq("contact_status", "ACTIVE"),
        Predicate::or([
            Predicate::is_null("cooldown_until"),
            Predicate::lt("cooldown_until", Operand::now()),
        ]),
        Predicate::lt("follow_up_attempts", 3),
        Predicate::within_days("last_activity", 365),
    ])
}

/// Seed 001's `orders` table.
pub fn orders() -> TableMapping {
    TableMapping::builder("orders", "id", KeyType::Integer)
        .column("processing_status", ColumnType::Text)
        .column("total_cents", ColumnType::Integer)
        .build()
        .expect("valid mapping")
}

/// Six orders: three pending or processing, one with a NULL status.
pub fn order_rows() -> Vec<Row> {
    let statuses = [
        Some("pending"),
        Some("processing"),
        Some("completed"),
        Some("failed"),
        Some("pending"),
        None,
    ];
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            orders()
                .row([
                    ("id", Value::Int(i as i64 + 1)),
                    ("processing_status", (*s).into()),
                    ("total_cents", Value::Int(1000 * (i as i64 + 1))),
                ])
                .expect("valid row")
        })
        .collect()
}

/// Dashboard count: pending orders.
pub fn pending_orders() -> NamedCount {
    NamedCount::new(
        "pending_orders",
        orders(),
        Predicate::is_in("processing_status", ["pending", "processing"]),
    )
}

/// Seed 002's `reservations` table.
pub fn reservations() -> TableMapping {
    TableMapping::builder("reservations", "id", KeyType::Text)
        .column("status", ColumnType::Text)
        .column("check_in", ColumnType::Timestamp)
        .column("check_out", ColumnType::Timestamp)
        .column("lock_id", ColumnType::Text)
        .build()
        .expect("valid mapping")
}

/// Reservation `res-<n>` (three digits), confirmed, check-in on 2024-02-05 + n hours, three
/// nights.
pub fn reservation(n: u32) -> Row {
    let check_in = at("2024-02-05T10:00:00Z") + TimeDelta::hours(i64::from(n));
    reservations()
        .row([
            ("id", format!("res-{n:03}").into()),
            ("status", "confirmed".into()),
            ("check_in", check_in.into()),
            ("check_out", (check_in + TimeDelta::days(3)).into()),
            ("lock_id", format!("lock-{}", n % 7).into()),
        ])
        .expect("valid row")
}

/// Seed 002's plan: a confirmed reservation has `generatePin` (`gen-<id>`) at check-in − 2 h
/// and `revokePin` (`rev-<id>`) at check-out + 24 h; any other status has no jobs.
pub fn pin_plan(entity: &Row, _now: DateTime<Utc>) -> Result<Vec<DesiredJob>> {
    if entity.text("status")? != Some("confirmed") {
        return Ok(Vec::new());
    }
    let missing = |c: &str| Error::config(format!("reservation {} has no {c}", entity.key()));
    let check_in = entity
        .timestamp("check_in")?
        .ok_or_else(|| missing("check_in"))?;
    let check_out = entity
        .timestamp("check_out")?
        .ok_or_else(|| missing("check_out"))?;
    let id = entity.key().to_string();
    let payload = serde_json::json!({ "reservationId": id, "lockId": entity.text("lock_id")? });
    Ok(vec![
        DesiredJob {
            id: format!("gen-{id}"),
            kind: "generatePin".into(),
            entity_key: entity.key().clone(),
            run_at: check_in - TimeDelta::hours(2),
            payload: payload.clone(),
        },
        DesiredJob {
            id: format!("rev-{id}"),
            kind: "revokePin".into(),
            entity_key: entity.key().clone(),
            run_at: check_out + TimeDelta::hours(24),
            payload,
        },
    ])
}

/// A queued job as the host would have enqueued it from `d`.
pub fn queued(d: &DesiredJob) -> QueuedJob {
    QueuedJob {
        id: d.id.clone(),
        kind: d.kind.clone(),
        entity_key: d.entity_key.clone().into(),
        run_at: d.run_at,
    }
}

fn desired_of(rows: &[Row]) -> Vec<QueuedJob> {
    let mut out: Vec<QueuedJob> = rows
        .iter()
        .flat_map(|r| pin_plan(r, now()).expect("plannable"))
        .map(|d| queued(&d))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn sorted(mut jobs: Vec<QueuedJob>) -> Vec<QueuedJob> {
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    jobs
}

fn sorted_rows(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.key().cmp(b.key()));
    rows
}

fn count(report: &StepReport, name: &str) -> u64 {
    report.get(name).unwrap_or_else(|| {
        panic!(
            "the report has no counter `{name}`: {:?}",
            report.counters()
        )
    })
}

async fn run(r: &dyn Reconciler, ctx: &RunContext) -> StepReport {
    match r.reconcile(ctx).await {
        Ok(report) => report,
        Err(e) => panic!("step `{}` failed: {e}", r.name()),
    }
}

// ---------------------------------------------------------------------------------------------
// Derived queue rebuild (scenario A)
// ---------------------------------------------------------------------------------------------

fn follow_up_step(
    store: Arc<dyn SourceStore>,
    queue: Arc<dyn DerivedQueue>,
) -> RehydrateReconciler {
    RehydrateReconciler::builder("follow-up-queue", store, user_sessions())
        .maintenance(clear_expired_cooldowns())
        .candidates(follow_up_eligibility(), queue)
        .count(pending_orders())
        .batch_size(2)
        .build()
        .expect("valid step")
}

/// Scenario A, row by row: one expired cooldown cleared (attempts reset), two candidates
/// pushed, three pending orders; a second run clears nothing and finds the same candidates.
pub async fn scenario_a_user_sessions(store: Arc<dyn SourceStore>, fixture: &dyn SourceFixture) {
    let sessions = user_sessions();
    fixture
        .reset_table(&sessions, &user_session_rows())
        .await
        .expect("seed sessions");
    fixture
        .reset_table(&orders(), &order_rows())
        .await
        .expect("seed orders");
    let queue = Arc::new(MemoryDerivedQueue::new());
    let step = follow_up_step(store, queue.clone());

    let report = run(&step, &ctx()).await;
    assert_eq!(count(&report, "cooldowns_cleared"), 1, "{report:?}");
    assert_eq!(count(&report, "candidates"), 2, "{report:?}");
    assert_eq!(count(&report, "pending_orders"), 3, "{report:?}");
    assert_eq!(report.item_error_count(), 0);

    // row by row: only +573001234567 changed, and exactly as the rule says
    let mut expected = user_session_rows();
    expected[0].set("cooldown_until", Value::Null);
    expected[0].set("follow_up_attempts", Value::Int(0));
    let after = sorted_rows(fixture.table_rows(&sessions).await.expect("read sessions"));
    assert_eq!(after, sorted_rows(expected), "user_sessions after the run");

    let candidates: BTreeSet<Key> = queue.keys().into_iter().collect();
    let want: BTreeSet<Key> = ["+573001234567", "+573007654321"].map(Key::from).into();
    assert_eq!(candidates, want, "follow-up queue");

    // idempotent: the second run changes nothing and finds the same candidates
    let again = run(&step, &ctx()).await;
    assert_eq!(count(&again, "cooldowns_cleared"), 0, "{again:?}");
    assert_eq!(count(&again, "candidates"), 2);
    assert_eq!(queue.len(), 2, "no duplicates in the queue");
    let after2 = sorted_rows(fixture.table_rows(&sessions).await.expect("read sessions"));
    assert_eq!(after2, after, "second run changed rows");
}

/// Scenario A as a dry run: the cooldown is counted but not cleared, nothing is pushed, and
/// +573001234567 still counts as a candidate (eligibility as if maintenance had run).
pub async fn scenario_a_dry_run(store: Arc<dyn SourceStore>, fixture: &dyn SourceFixture) {
    let sessions = user_sessions();
    fixture
        .reset_table(&sessions, &user_session_rows())
        .await
        .expect("seed sessions");
    fixture
        .reset_table(&orders(), &order_rows())
        .await
        .expect("seed orders");
    let queue = Arc::new(MemoryDerivedQueue::new());
    let step = follow_up_step(store, queue.clone());

    let report = run(&step, &ctx().with_dry_run(true)).await;
    assert_eq!(count(&report, "cooldowns_cleared"), 1, "{report:?}");
    assert_eq!(
        count(&report, "candidates"),
        2,
        "as if maintenance ran: {report:?}"
    );
    assert_eq!(count(&report, "pending_orders"), 3);
    assert!(queue.is_empty(), "a dry run pushes nothing");
    let after = sorted_rows(fixture.table_rows(&sessions).await.expect("read sessions"));
    assert_eq!(
        after,
        sorted_rows(user_session_rows()),
        "a dry run changes nothing"
    );
}

/// A table with NULLs in every column, for predicate semantics.
pub fn probe() -> TableMapping {
    TableMapping::builder("recon_probe", "id", KeyType::Integer)
        .column("n", ColumnType::Integer)
        .column("s", ColumnType::Text)
        .column("b", ColumnType::Boolean)
        .column("t", ColumnType::Timestamp)
        .build()
        .expect("valid mapping")
}

/// Nine probe rows: every column NULL in some row.
pub fn probe_rows() -> Vec<Row> {
    let n: [Option<i64>; 9] = [
        Some(1),
        Some(2),
        Some(3),
        None,
        Some(-5),
        Some(3),
        None,
        Some(10),
        Some(0),
    ];
    let s = [
        Some("pending"),
        Some("processing"),
        None,
        Some("sent"),
        Some("pending"),
        Some("Pending"),
        None,
        Some("failed"),
        Some(""),
    ];
    let b = [
        Some(true),
        Some(false),
        None,
        Some(true),
        None,
        Some(false),
        None,
        Some(true),
        Some(false),
    ];
    let t: [Option<i64>; 9] = [
        Some(-1),
        Some(-400),
        Some(2),
        None,
        Some(-30),
        Some(0),
        None,
        Some(-365),
        Some(-366),
    ];
    (0..9)
        .map(|i| {
            probe()
                .row([
                    ("id", Value::Int(i as i64 + 1)),
                    ("n", n[i].into()),
                    ("s", s[i].into()),
                    ("b", b[i].into()),
                    ("t", t[i].map(|d| now() + TimeDelta::days(d)).into()),
                ])
                .expect("valid row")
        })
        .collect()
}

/// Predicates exercised by [`predicates_match_the_reference_evaluator`].
pub fn probe_predicates() -> Vec<Predicate> {
    use Predicate as P;
    vec![
        P::All,
        P::lt("n", 3),
        !P::lt("n", 3),
        P::le("n", 3),
        P::gt("n", 0),
        P::ge("n", 3),
        P::eq("n", 3),
        P::ne("n", 3),
        !P::ne("n", 3),
        P::is_in("n", [1, 3, 10]),
        !P::is_in("n", [1, 3, 10]),
        P::eq("s", "pending"),
        P::ne("s", "pending"),
        P::is_in("s", ["pending", "processing"]),
        !P::is_in("s", ["pending", "processing"]),
        P::eq("s", ""),
        P::eq("b", true),
        P::ne("b", true),
        P::is_null("t"),
        P::is_not_null("s"),
        P::within_days("t", 365),
        !P::within_days("t", 365),
        P::lt("t", Operand::now()),
        P::ge("t", Operand::now_minus(TimeDelta::days(30))),
        P::le("t", Operand::now_plus(TimeDelta::days(2))),
        P::and([P::lt("n", 3), P::eq("b", true)]),
        !P::and([P::lt("n", 3), P::eq("b", true)]),
        P::or([P::lt("n", 3), P::eq("b", true)]),
        !P::or([P::lt("n", 3), P::eq("b", true)]),
        P::or([P::is_null("n"), P::lt("n", 0)]),
        P::and([
            P::ge("n", 0),
            P::or([P::eq("s", "pending"), !P::eq("b", false)]),
        ]),
        P::is_in("id", [2, 4, 6, 8]),
        P::gt("id", 4),
    ]
}

/// Count and keyset reads agree with [`Predicate::eval`] (SQL three-valued logic) on rows full
/// of NULLs, for every predicate of [`probe_predicates`]; a comparison with NULL never
/// selects a row, not even under `NOT`.
pub async fn predicates_match_the_reference_evaluator(
    store: Arc<dyn SourceStore>,
    fixture: &dyn SourceFixture,
) {
    let table = probe();
    let rows = probe_rows();
    fixture
        .reset_table(&table, &rows)
        .await
        .expect("seed probe");
    for p in probe_predicates() {
        let want: Vec<Key> = rows
            .iter()
            .filter(|r| p.matches(r, now()))
            .map(|r| r.key().clone())
            .collect();
        let n = store.count(&table, &p, now()).await.expect("count");
        assert_eq!(n, want.len() as u64, "count of {p:?}");
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .read_matching(&table, &p, now(), after.clone(), 3)
                .await
                .expect("read");
            assert!(page.len() <= 3, "more rows than the limit for {p:?}");
            let full = page.len() == 3;
            after = page.last().map(|r| r.key().clone());
            got.extend(page.into_iter().map(|r| r.key().clone()));
            if !full {
                break;
            }
        }
        assert_eq!(got, want, "rows of {p:?} (ascending integer keys)");
    }
    // NULL is neither `< 3` nor `NOT < 3`
    let lt = Predicate::lt("n", 3);
    let yes = store.count(&table, &lt, now()).await.expect("count");
    let no = store.count(&table, &!lt, now()).await.expect("count");
    let nulls = rows.iter().filter(|r| r.get("n").is_null()).count() as u64;
    assert!(nulls > 0);
    assert_eq!(
        yes + no + nulls,
        rows.len() as u64,
        "NULLs must fall in neither"
    );
}

/// Every row of the probe table comes back exactly once in ascending key order, whatever the
/// batch size; rows carry every mapped column.
pub async fn keyset_pagination(store: Arc<dyn SourceStore>, fixture: &dyn SourceFixture) {
    let table = probe();
    let rows = probe_rows();
    fixture
        .reset_table(&table, &rows)
        .await
        .expect("seed probe");
    for limit in [1, 2, 4, 9, 10, 1000] {
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .read_matching(&table, &Predicate::All, now(), after.clone(), limit)
                .await
                .expect("read");
            let full = page.len() == limit;
            after = page.last().map(|r| r.key().clone());
            got.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(got, rows, "pages of {limit}");
    }
}

/// Bad predicates and rules — unknown column, empty in-list, a value of the wrong type —
/// give those errors from every store method and change nothing; the reconciler refuses to
/// be built with them.
pub async fn bad_predicates_change_nothing(
    store: Arc<dyn SourceStore>,
    fixture: &dyn SourceFixture,
) {
    let sessions = user_sessions();
    fixture
        .reset_table(&sessions, &user_session_rows())
        .await
        .expect("seed sessions");
    let before = sorted_rows(fixture.table_rows(&sessions).await.expect("read"));

    type Check = fn(&Error) -> bool;
    let cases: Vec<(Predicate, Check)> = vec![
        (
            Predicate::eq("contact_state", "ACTIVE"),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column == "contact_state"),
        ),
        (
            Predicate::is_in("contact_status", Vec::<Value>::new()),
            |e| matches!(e, Error::EmptyInList { column } if column == "contact_status"),
        ),
        (
            Predicate::lt("follow_up_attempts", "3"),
            |e| matches!(e, Error::TypeMismatch { column, .. } if column == "follow_up_attempts"),
        ),
    ];
    for (p, is_expected) in &cases {
        let e = store
            .count(&sessions, p, now())
            .await
            .expect_err("count must refuse");
        assert!(is_expected(&e), "count {p:?}: unexpected error {e}");
        let e = store
            .read_matching(&sessions, p, now(), None, 10)
            .await
            .expect_err("read must refuse");
        assert!(is_expected(&e), "read {p:?}: unexpected error {e}");
        let rule = Maintenance::new("x", p.clone()).set("follow_up_attempts", SetValue::Int(0));
        let e = store
            .apply_maintenance(&sessions, &rule, now())
            .await
            .expect_err("maintenance must refuse");
        assert!(is_expected(&e), "maintenance {p:?}: unexpected error {e}");
        let built = RehydrateReconciler::builder("q", store.clone(), sessions.clone())
            .candidates(p.clone(), Arc::new(MemoryDerivedQueue::new()))
            .build();
        assert!(
            matches!(&built, Err(e) if is_expected(e)),
            "builder accepted {p:?}"
        );
    }
    // a rule whose `when` is fine but whose value has the wrong type
    let rule =
        Maintenance::new("x", Predicate::All).set("follow_up_attempts", SetValue::Text("0".into()));
    let e = store
        .apply_maintenance(&sessions, &rule, now())
        .await
        .expect_err("must refuse");
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");

    let after = sorted_rows(fixture.table_rows(&sessions).await.expect("read"));
    assert_eq!(after, before, "a refused call changed rows");
}

/// A rule's count is the number of rows its `when` matches, also when the assignment leaves
/// a row's values as they were (MySQL counts such rows only with `CLIENT_FOUND_ROWS`), and
/// `SetValue::Now` writes the run's `now`.
pub async fn maintenance_counts_matched_rows(
    store: Arc<dyn SourceStore>,
    fixture: &dyn SourceFixture,
) {
    let sessions = user_sessions();
    fixture
        .reset_table(&sessions, &user_session_rows())
        .await
        .expect("seed sessions");
    // rows with attempts >= 1: +573001234567 (3), +573007654321 (1), +573000000001 (1)
    let cap = Maintenance::new("attempts_capped", Predicate::ge("follow_up_attempts", 1))
        .set("follow_up_attempts", SetValue::Int(1))
        .set("last_activity", SetValue::Now);
    let n = store
        .apply_maintenance(&sessions, &cap, now())
        .await
        .expect("maintenance");
    assert_eq!(n, 3, "matched rows, changed or not");
    let mut expected = user_session_rows();
    for r in &mut expected {
        cap.apply(r, now());
    }
    let after = sorted_rows(fixture.table_rows(&sessions).await.expect("read"));
    assert_eq!(after, sorted_rows(expected));
    assert_eq!(
        after[0].get("last_activity"),
        &Value::Timestamp(now()),
        "{after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Queued jobs vs truth (scenario B)
// ---------------------------------------------------------------------------------------------

/// Scenario B's starting point: 150 reservations had `generatePin` jobs and 120 of them
/// `revokePin` jobs (270 queued); reservations 149 and 150 were deleted since.
/// Returns (the reservations that exist, the queued jobs).
pub fn scenario_b_data() -> (Vec<Row>, Vec<QueuedJob>) {
    let all: Vec<Row> = (1..=150).map(reservation).collect();
    let mut jobs = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let plan = pin_plan(r, now()).expect("plannable");
        jobs.push(queued(&plan[0]));
        if i < 120 {
            jobs.push(queued(&plan[1]));
        }
    }
    let existing = all.into_iter().take(148).collect();
    (existing, jobs)
}

fn diff_step(
    queue: Arc<dyn JobQueue>,
    entities: Arc<dyn EntitySource>,
    batch: usize,
) -> QueueDiffReconciler {
    let plan: Arc<dyn JobPlan> = Arc::new(pin_plan);
    QueueDiffReconciler::new("pin-jobs", queue, entities, plan)
        .with_settings(DiffSettings::new().batch_size(batch))
        .expect("valid settings")
}

/// Scenario B: 270 queued jobs, 2 of them for deleted reservations → 2 removed, the other 268
/// untouched, the 28 missing `revokePin` jobs enqueued; the queue then equals the desired
/// set, and a second run changes nothing.
pub async fn scenario_b_orphans(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
) {
    let (rows, jobs) = scenario_b_data();
    assert_eq!(jobs.len(), 270);
    entity_fixture
        .reset_table(entity_table, &rows)
        .await
        .expect("seed reservations");
    queue_fixture
        .reset_jobs(&jobs, &[])
        .await
        .expect("seed jobs");
    let step = diff_step(queue, entities, 50);

    let report = run(&step, &ctx()).await;
    assert_eq!(count(&report, "orphaned"), 2, "{report:?}");
    assert_eq!(count(&report, "enqueued"), 28, "{report:?}");
    assert_eq!(count(&report, "rescheduled"), 0, "{report:?}");
    assert_eq!(count(&report, "obsolete"), 0, "{report:?}");
    assert_eq!(report.item_error_count(), 0, "{:?}", report.item_errors());

    let after = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    let gone: BTreeSet<&str> = ["gen-res-149", "gen-res-150"].into();
    let untouched: Vec<&QueuedJob> = jobs
        .iter()
        .filter(|j| !gone.contains(j.id.as_str()))
        .collect();
    assert_eq!(untouched.len(), 268);
    for j in untouched {
        assert!(after.contains(j), "job {} was changed or removed", j.id);
    }
    assert!(
        after.iter().all(|j| !gone.contains(j.id.as_str())),
        "orphans still queued"
    );
    assert_eq!(after, desired_of(&rows), "queue == desired set");

    let again = run(&step, &ctx()).await;
    for c in ["orphaned", "obsolete", "enqueued", "rescheduled"] {
        assert_eq!(count(&again, c), 0, "second run {c}: {again:?}");
    }
    let after2 = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    assert_eq!(after2, after);
}

/// An [`EntitySource`] that counts the calls made to another one (to show which lookups a
/// reconciler makes).
pub struct CountingEntities {
    inner: Arc<dyn EntitySource>,
    pages: std::sync::atomic::AtomicU64,
    lookups: std::sync::atomic::AtomicU64,
}

impl CountingEntities {
    /// Count the calls to `inner`.
    pub fn new(inner: Arc<dyn EntitySource>) -> Self {
        Self {
            inner,
            pages: Default::default(),
            lookups: Default::default(),
        }
    }

    /// `(page calls, get_many calls)` so far.
    pub fn calls(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.pages.load(Relaxed), self.lookups.load(Relaxed))
    }
}

#[async_trait]
impl EntitySource for CountingEntities {
    fn key_type(&self) -> KeyType {
        self.inner.key_type()
    }

    async fn page(&self, after: Option<Key>, limit: usize) -> Result<Vec<Row>> {
        self.pages
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.page(after, limit).await
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Row>> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_many(keys).await
    }
}

/// A [`JobQueue`] that counts the `page` calls made to another one.
pub struct CountingQueue {
    inner: Arc<dyn JobQueue>,
    pages: std::sync::atomic::AtomicU64,
}

impl CountingQueue {
    /// Count the pages read from `inner`.
    pub fn new(inner: Arc<dyn JobQueue>) -> Self {
        Self {
            inner,
            pages: Default::default(),
        }
    }

    /// `page` calls so far.
    pub fn pages(&self) -> u64 {
        self.pages.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl JobQueue for CountingQueue {
    async fn page(&self, after: Option<String>, limit: usize) -> Result<Vec<QueuedJob>> {
        self.pages
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.page(after, limit).await
    }

    async fn existing(&self, ids: &[String]) -> Result<Vec<String>> {
        self.inner.existing(ids).await
    }

    async fn remove(&self, ids: &[String]) -> Result<u64> {
        self.inner.remove(ids).await
    }

    async fn enqueue(&self, jobs: &[DesiredJob]) -> Result<u64> {
        self.inner.enqueue(jobs).await
    }

    async fn reschedule(&self, changes: &[crate::Reschedule]) -> Result<u64> {
        self.inner.reschedule(changes).await
    }
}

/// Scenario B through [`QueueDiffReconciler::with_orphan_sweeper`]: the sweep removes the 2
/// orphans among 270 jobs (a dry run counts them once and changes nothing), the 28 missing
/// jobs are enqueued, the queue ends as the desired set. With obsolete removal and
/// rescheduling off, the diff makes **no** entity lookup and reads no page of the queue: the
/// orphans are swept, the jobs without an entity key or with a key of the other type are
/// listed by the sweeper (pages of 2 here), reported and left alone, a drifted job is left
/// alone.
pub async fn scenario_b_with_orphan_sweeper(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    sweeper: Arc<dyn crate::OrphanSweeper>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
) {
    let (rows, jobs) = scenario_b_data();
    entity_fixture
        .reset_table(entity_table, &rows)
        .await
        .expect("seed reservations");
    queue_fixture
        .reset_jobs(&jobs, &[])
        .await
        .expect("seed jobs");
    let step = diff_step(queue.clone(), entities.clone(), 50).with_orphan_sweeper(sweeper.clone());

    let dry = run(&step, &ctx().with_dry_run(true)).await;
    assert_eq!(count(&dry, "orphaned"), 2, "counted once: {dry:?}");
    assert_eq!(count(&dry, "enqueued"), 28, "{dry:?}");
    assert_eq!(
        sorted(queue_fixture.waiting_jobs().await.expect("read jobs")),
        sorted(jobs.clone()),
        "a dry run changes nothing"
    );

    let report = run(&step, &ctx()).await;
    assert_eq!(count(&report, "orphaned"), 2, "{report:?}");
    assert_eq!(count(&report, "enqueued"), 28, "{report:?}");
    assert_eq!(count(&report, "obsolete"), 0, "{report:?}");
    assert_eq!(count(&report, "rescheduled"), 0, "{report:?}");
    assert_eq!(report.item_error_count(), 0, "{:?}", report.item_errors());
    let swept = &report.details()["orphan_sweep"];
    assert_eq!(
        (swept["checked"].as_u64(), swept["orphaned"].as_u64()),
        (Some(270), Some(2)),
        "{report:?}"
    );
    let after = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    assert_eq!(after, desired_of(&rows), "queue == desired set");
    let again = run(&step, &ctx()).await;
    for c in ["orphaned", "obsolete", "enqueued", "rescheduled"] {
        assert_eq!(count(&again, c), 0, "second run {c}: {again:?}");
    }

    // obsolete removal and rescheduling off: no entity lookup at all
    let mut seeded = jobs.clone();
    seeded[0].run_at += TimeDelta::hours(5); // drifted: left alone
    let no_key = QueuedJob {
        id: "gen-no-key".into(),
        kind: "generatePin".into(),
        entity_key: Value::Null,
        run_at: now(),
    };
    seeded.push(no_key.clone());
    for (id, key) in [
        ("gen-int-key-1", Value::Int(1)),
        ("gen-int-key-2", Value::Int(2)),
        ("gen-zz-no-key", Value::Null),
    ] {
        seeded.push(QueuedJob {
            id: id.into(),
            entity_key: key,
            ..no_key.clone()
        });
    }
    queue_fixture
        .reset_jobs(&seeded, &[])
        .await
        .expect("seed jobs");
    let counting = Arc::new(CountingEntities::new(entities));
    let pages = Arc::new(CountingQueue::new(queue));
    let step = QueueDiffReconciler::new(
        "pin-jobs",
        pages.clone(),
        counting.clone(),
        Arc::new(pin_plan),
    )
    .with_settings(
        DiffSettings::new()
            .batch_size(2)
            .remove_obsolete(false)
            .reschedule_drifted(false),
    )
    .expect("valid settings")
    .with_orphan_sweeper(sweeper);
    let report = run(&step, &ctx()).await;
    assert_eq!(count(&report, "orphaned"), 2, "{report:?}");
    assert_eq!(count(&report, "enqueued"), 28, "{report:?}");
    assert_eq!(count(&report, "rescheduled"), 0, "{report:?}");
    let errors: Vec<&str> = report
        .item_errors()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(
        errors,
        [
            "job gen-int-key-1",
            "job gen-int-key-2",
            "job gen-no-key",
            "job gen-zz-no-key"
        ],
        "{:?}",
        report.item_errors()
    );
    assert_eq!(counting.calls().1, 0, "no get_many after a sweep");
    assert_eq!(
        pages.pages(),
        0,
        "the sweeper listed the unjudged jobs: no queue page read"
    );
    let after = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    let gone: BTreeSet<&str> = ["gen-res-149", "gen-res-150"].into();
    for j in seeded.iter().filter(|j| !gone.contains(j.id.as_str())) {
        assert!(after.contains(j), "job {} was changed or removed", j.id);
    }
    assert_eq!(after.len(), seeded.len() - 2 + 28, "{after:?}");
}

/// Drift and obsolescence: a job at the wrong time is moved, a cancelled reservation's jobs
/// are removed, a running job is never touched (and not enqueued again).
pub async fn drift_obsolete_and_running_jobs(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
) {
    let mut rows: Vec<Row> = (1..=5).map(reservation).collect();
    rows[2].set("status", "cancelled".into()); // res-003: no jobs wanted
    entity_fixture
        .reset_table(entity_table, &rows)
        .await
        .expect("seed reservations");
    let plan = |n: usize| pin_plan(&reservation(n as u32), now()).expect("plannable");
    let mut drifted = queued(&plan(1)[0]);
    drifted.run_at += TimeDelta::hours(5);
    let waiting = vec![
        drifted.clone(),
        queued(&plan(1)[1]),
        queued(&plan(3)[0]),
        queued(&plan(3)[1]),
        queued(&plan(4)[0]),
    ];
    let running = vec![queued(&plan(2)[0])];
    queue_fixture
        .reset_jobs(&waiting, &running)
        .await
        .expect("seed jobs");

    let report = run(&diff_step(queue, entities, 2), &ctx()).await;
    assert_eq!(count(&report, "rescheduled"), 1, "{report:?}");
    assert_eq!(count(&report, "obsolete"), 2, "{report:?}");
    assert_eq!(count(&report, "orphaned"), 0, "{report:?}");
    // wanted: res-1 ×2 (present), res-2 ×2 (gen running), res-4 ×2 (gen present), res-5 ×2
    assert_eq!(count(&report, "enqueued"), 4, "{report:?}");

    let after = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    let confirmed: Vec<Row> = rows
        .iter()
        .filter(|r| r.text("status").ok().flatten() == Some("confirmed"))
        .cloned()
        .collect();
    let want: Vec<QueuedJob> = desired_of(&confirmed)
        .into_iter()
        .filter(|j| j.id != "gen-res-002")
        .collect();
    assert_eq!(after, want, "waiting jobs after the diff");
}

/// A queued job with no entity key is reported with its id and left alone; the other jobs
/// are reconciled as usual.
pub async fn queued_job_without_entity_key(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
) {
    bad_job(
        queue,
        queue_fixture,
        entities,
        entity_table,
        entity_fixture,
        Value::Null,
        "no entity key",
    )
    .await;
}

/// A queued job whose entity key has the wrong type (an integer where keys are text) is
/// reported with its id and left alone. Every store of this workspace runs it (memory, and
/// `recon_queued_jobs`, which keeps each key's type next to it).
pub async fn queued_job_with_wrong_key_type(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
) {
    bad_job(
        queue,
        queue_fixture,
        entities,
        entity_table,
        entity_fixture,
        Value::Int(1),
        "is integer, but keys are text",
    )
    .await;
}

async fn bad_job(
    queue: Arc<dyn JobQueue>,
    queue_fixture: &dyn JobQueueFixture,
    entities: Arc<dyn EntitySource>,
    entity_table: &TableMapping,
    entity_fixture: &dyn SourceFixture,
    key: Value,
    reason: &str,
) {
    let rows = vec![reservation(1)];
    entity_fixture
        .reset_table(entity_table, &rows)
        .await
        .expect("seed reservations");
    let good = pin_plan(&rows[0], now()).expect("plannable");
    let bad = QueuedJob {
        id: "gen-res-bad".into(),
        kind: "generatePin".into(),
        entity_key: key,
        run_at: now(),
    };
    let orphan = QueuedJob {
        id: "gen-res-999".into(),
        entity_key: "res-999".into(),
        ..bad.clone()
    };
    queue_fixture
        .reset_jobs(&[bad.clone(), queued(&good[0]), orphan], &[])
        .await
        .expect("seed jobs");
    let report = run(&diff_step(queue, entities, 10), &ctx()).await;
    assert_eq!(report.item_error_count(), 1, "{:?}", report.item_errors());
    let e = &report.item_errors()[0];
    assert_eq!(e.key, "job gen-res-bad");
    assert!(e.reason.contains(reason), "reason: {}", e.reason);
    assert_eq!(count(&report, "orphaned"), 1);
    assert_eq!(count(&report, "enqueued"), 1);
    let after = sorted(queue_fixture.waiting_jobs().await.expect("read jobs"));
    assert!(
        after.contains(&bad),
        "the bad job must be left untouched: {after:?}"
    );
    assert_eq!(
        after.len(),
        3,
        "bad job + the reservation's two jobs: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Message recovery (scenario D)
// ---------------------------------------------------------------------------------------------

/// Scenario D's messages: two stuck in `processing` (claimed 2 h and 1 min ago), one
/// pending, one sent, three failed (40 days ago, 2 days ago, and with no failure time), one
/// archived.
pub fn scenario_d_messages() -> Vec<Message> {
    let m = |id: i64,
             status,
             session: Option<&str>,
             attempts,
             last: Option<i64>,
             failed: Option<i64>| Message {
        id: Key::Int(id),
        status,
        session: session.map(str::to_owned),
        attempts,
        last_attempt_at: last.map(|mins| now() - TimeDelta::minutes(mins)),
        next_attempt_at: None,
        failed_at: failed.map(|days| now() - TimeDelta::days(days)),
        last_error: failed.map(|_| "number not on WhatsApp".to_owned()),
    };
    use MessageStatus::*;
    let mut no_failed_at = m(7, Failed, None, 6, Some(600), None);
    no_failed_at.last_error = Some("timeout".into());
    vec![
        m(1, Processing, Some("primary"), 1, Some(120), None),
        m(2, Processing, Some("secondary"), 0, Some(1), None),
        m(3, Pending, None, 0, None, None),
        m(4, Sent, None, 1, Some(300), None),
        m(5, Failed, None, 6, Some(40 * 1440), Some(40)),
        m(6, Failed, None, 6, Some(2 * 1440), Some(2)),
        no_failed_at,
        m(8, Archived, None, 6, Some(90 * 1440), Some(90)),
    ]
}

fn by_id(messages: &[Message], id: i64) -> Message {
    messages
        .iter()
        .find(|m| m.id == Key::Int(id))
        .cloned()
        .unwrap_or_else(|| panic!("message {id} is gone"))
}

/// Scenario D at startup: both stuck messages go back to `pending` without a session (attempts
/// kept), the 40-day-old failure is archived (not deleted), figures and level are reported; a
/// second run does nothing. A dry run reports the same and changes nothing.
pub async fn scenario_d_stuck_messages(store: Arc<dyn MessageStore>, fixture: &dyn MessageFixture) {
    let seed = scenario_d_messages();
    fixture.reset_messages(&seed).await.expect("seed messages");
    let step = MessageRecovery::new("message-recovery", store.clone())
        .with_settings(RecoverySettings::new().batch_size(1))
        .expect("valid settings");

    let dry = run(&step, &ctx().with_dry_run(true)).await;
    assert_eq!(
        fixture.all_messages().await.expect("read"),
        seed,
        "a dry run changes nothing"
    );

    let report = run(&step, &ctx()).await;
    for r in [&dry, &report] {
        assert_eq!(count(r, "stuck_released"), 2, "{r:?}");
        assert_eq!(count(r, "failed_archived"), 1, "{r:?}");
        assert_eq!(count(r, "queue_pending"), 3, "{r:?}");
        assert_eq!(count(r, "queue_processing"), 0, "{r:?}");
        assert_eq!(count(r, "queue_sent"), 1, "{r:?}");
        assert_eq!(count(r, "queue_failed"), 2, "{r:?}");
        assert_eq!(r.details()["queue_health"]["overall"], "healthy", "{r:?}");
    }

    let after = fixture.all_messages().await.expect("read");
    assert_eq!(after.len(), seed.len(), "nothing is deleted");
    for id in [1, 2] {
        let (was, got) = (by_id(&seed, id), by_id(&after, id));
        let want = Message {
            status: MessageStatus::Pending,
            session: None,
            ..was
        };
        assert_eq!(got, want, "message {id}");
    }
    assert_eq!(by_id(&after, 5).status, MessageStatus::Archived);
    for id in [3, 4, 6, 7, 8] {
        assert_eq!(
            by_id(&after, id),
            by_id(&seed, id),
            "message {id} must be untouched"
        );
    }

    let again = run(&step, &ctx()).await;
    assert_eq!(count(&again, "stuck_released"), 0);
    assert_eq!(count(&again, "failed_archived"), 0);
    assert_eq!(fixture.all_messages().await.expect("read"), after);

    // several instances: only messages claimed longer ago than `stuck_after` are released
    fixture.reset_messages(&seed).await.expect("seed messages");
    let careful = MessageRecovery::new("message-recovery", store)
        .with_settings(RecoverySettings::new().stuck_after(Some(TimeDelta::minutes(10))))
        .expect("valid settings");
    let r = run(&careful, &ctx()).await;
    assert_eq!(count(&r, "stuck_released"), 1, "{r:?}");
    let after = fixture.all_messages().await.expect("read");
    assert_eq!(
        by_id(&after, 2),
        by_id(&seed, 2),
        "a fresh claim is left to its sender"
    );
}

/// Scenario D's operator operations: list failed (keyset pages), retry one, retry all,
/// delete one, archive instead of delete where configured; operations on messages that are
/// not failed change nothing.
pub async fn scenario_d_operator_operations(
    store: Arc<dyn FailedMessageStore>,
    fixture: &dyn MessageFixture,
) {
    let seed = scenario_d_messages();
    fixture.reset_messages(&seed).await.expect("seed messages");
    let admin = MessageAdmin::new(store.clone()).batch_size(1);

    // list, a page of one at a time
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = admin.list_failed(after.clone(), 1).await.expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        listed.extend(page);
    }
    let ids: Vec<Key> = listed.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, [5, 6, 7].map(Key::Int), "failed messages, ascending");
    assert_eq!(listed[0], by_id(&seed, 5));

    // retry one
    assert!(admin.retry(&Key::Int(6), now()).await.expect("retry"));
    let m6 = by_id(&fixture.all_messages().await.expect("read"), 6);
    let want = Message {
        status: MessageStatus::Pending,
        attempts: 0,
        failed_at: None,
        next_attempt_at: None,
        session: None,
        ..by_id(&seed, 6)
    };
    assert_eq!(m6, want, "retried message keeps its last error");
    // not failed (any more, or never): nothing changes
    let before = fixture.all_messages().await.expect("read");
    assert!(!admin.retry(&Key::Int(6), now()).await.expect("retry"));
    assert!(!admin.retry(&Key::Int(4), now()).await.expect("retry"));
    assert!(!admin.retry(&Key::Int(404), now()).await.expect("retry"));
    assert_eq!(
        admin.delete(&Key::Int(3), now()).await.expect("delete"),
        Removal::NotFailed
    );
    assert_eq!(fixture.all_messages().await.expect("read"), before);

    // delete one
    assert_eq!(
        admin.delete(&Key::Int(7), now()).await.expect("delete"),
        Removal::Deleted
    );
    let after = fixture.all_messages().await.expect("read");
    assert!(
        after.iter().all(|m| m.id != Key::Int(7)),
        "message 7 deleted"
    );
    assert_eq!(after.len(), seed.len() - 1);

    // archive instead of delete where configured
    let archiving = MessageAdmin::new(store).archive_on_delete(true);
    assert_eq!(
        archiving.delete(&Key::Int(5), now()).await.expect("delete"),
        Removal::Archived
    );
    assert_eq!(
        by_id(&fixture.all_messages().await.expect("read"), 5).status,
        MessageStatus::Archived
    );

    // retry all
    fixture.reset_messages(&seed).await.expect("seed messages");
    assert_eq!(admin.retry_all(now()).await.expect("retry all"), 3);
    let after = fixture.all_messages().await.expect("read");
    for id in [5, 6, 7] {
        let m = by_id(&after, id);
        assert_eq!(
            (m.status, m.attempts, m.failed_at),
            (MessageStatus::Pending, 0, None),
            "message {id}"
        );
    }
    assert!(admin.list_failed(None, 10).await.expect("list").is_empty());
    assert_eq!(
        by_id(&after, 8).status,
        MessageStatus::Archived,
        "archived stays archived"
    );
}

/// Figures per status.
pub async fn status_counts(store: Arc<dyn MessageStore>, fixture: &dyn MessageFixture) {
    fixture
        .reset_messages(&scenario_d_messages())
        .await
        .expect("seed messages");
    let c = store.status_counts().await.expect("counts");
    assert_eq!(
        c,
        StatusCounts {
            pending: 1,
            processing: 2,
            sent: 1,
            failed: 3,
            archived: 1
        }
    );
}
