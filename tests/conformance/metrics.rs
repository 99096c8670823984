//! The metrics step reads the same figures on every SQL backend.

use recon_core::{Reconciler, RunContext};
use store_sqlx::{HEALTHY, Metrics};

use crate::Backend;
use crate::jobs::{Jobs, Shape};

async fn scenario_a_metrics(be: &Backend<'_>) {
    let Backend::Sql(t) = be else { return };
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let at = |s: &str| Some(s.parse().unwrap());
    use lease_repair::StoredJob;
    jobs.insert(
        &[
            StoredJob::new(
                42,
                "processing",
                Some("worker-001"),
                at("2024-01-24T10:00:00Z"),
                Some(1),
            ),
            StoredJob::new(43, "processing", None, None, Some(2)),
            StoredJob::new(44, "pending", None, None, Some(0)),
        ],
        Shape::default(),
    )
    .await;
    t.exec(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, processing_status VARCHAR(20), total_amount DECIMAL(10,2))",
    )
    .await;
    t.exec(
        "INSERT INTO orders VALUES (1, 'pending', 10.50), (2, 'processing', 20.25), \
         (3, 'completed', 100.00), (4, 'pending', 5.00), (5, NULL, 1.00)",
    )
    .await;
    let step = Metrics::new(&t.db)
        .count_by("jobs", "processing_jobs", "status")
        .unwrap()
        .average("avg_attempts", "processing_jobs", "attempts")
        .unwrap()
        .count_by("orders", "orders", "processing_status")
        .unwrap()
        .sum("revenue", "orders", "total_amount")
        .unwrap();
    let r = step
        .reconcile(&RunContext::new(chrono::Utc::now()))
        .await
        .unwrap();
    let n = |k: &str| {
        r.get(k)
            .unwrap_or_else(|| panic!("{}: no counter {k}", be.name()))
    };
    assert_eq!(r.count(HEALTHY), 1);
    assert_eq!(
        (n("jobs_processing"), n("jobs_pending"), n("jobs_total")),
        (2, 1, 3)
    );
    assert_eq!(
        (
            n("orders_pending"),
            n("orders_processing"),
            n("orders_completed"),
            n("orders_null"),
            n("orders_total")
        ),
        (2, 1, 1, 1, 5),
        "{}",
        be.name()
    );
    let revenue = r.details()["revenue"].as_f64().unwrap();
    assert!(
        (revenue - 136.75).abs() < 1e-9,
        "{}: revenue {revenue}",
        be.name()
    );
    assert_eq!(r.details()["avg_attempts"].as_f64(), Some(1.0));
}

async fn an_unreachable_database_fails_the_step_transiently(be: &Backend<'_>) {
    let Backend::Sql(t) = be else { return };
    let db = t.db.clone();
    db.close().await;
    let err = Metrics::new(&db)
        .reconcile(&RunContext::new(chrono::Utc::now()))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{}: {err}", be.name());
}

async fn bad_names_are_rejected(be: &Backend<'_>) {
    let Backend::Sql(t) = be else { return };
    assert!(
        Metrics::new(&t.db)
            .count_by("x", "orders; DROP TABLE orders", "s")
            .is_err()
    );
    assert!(
        Metrics::new(&t.db)
            .sum("x", "orders", "total_amount)--")
            .is_err()
    );
    let missing = Metrics::new(&t.db)
        .count_by("x", "no_such_table", "s")
        .unwrap();
    let err = missing
        .reconcile(&RunContext::new(chrono::Utc::now()))
        .await
        .unwrap_err();
    assert!(
        !err.is_transient(),
        "{}: a missing table is not transient: {err}",
        be.name()
    );
}

crate::conformance!(
    scenario_a_metrics,
    an_unreachable_database_fails_the_step_transiently,
    bad_names_are_rejected,
);
