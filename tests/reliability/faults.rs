//! The database connection is killed in the middle of a repair (PostgreSQL
//! `pg_terminate_backend`, MariaDB `KILL`): the step reports a transient error, the later steps
//! still run, and the next run finishes the repair without counting any attempt twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_repair::{LeaseRepair, Settings};
use recon_core::{RunStatus, Runner, StepStatus};
use store_sqlx::{Db, Dialect, Metrics};

use crate::common::{self, TestDb};
use crate::table::*;

const JOBS: i64 = 30_000;

/// Kill one connection of the test's pool while it is busy with a statement; returns when one
/// was killed (or after 30 s).
async fn kill_a_busy_connection(admin: Db, namespace: String) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let killed = match admin.dialect() {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let n: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active' \
                       AND now() - query_start > interval '50 milliseconds'",
                )
                .bind(&namespace)
                .fetch_all(admin.as_postgres().unwrap())
                .await
                .unwrap();
                n.iter().any(|k| *k)
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND COMMAND IN ('Query', 'Execute') \
                     AND INFO LIKE 'SET @slept%' AND ID <> CONNECTION_ID()",
                )
                .bind(&namespace)
                .fetch_all(admin.as_mysql().unwrap())
                .await
                .unwrap();
                for id in &ids {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                        .execute(admin.as_mysql().unwrap())
                        .await;
                }
                !ids.is_empty()
            }
            _ => unreachable!(),
        };
        if killed {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

async fn slow_updates(t: &TestDb, on: bool) {
    match (t.db.dialect(), on) {
        (Dialect::Postgres, true) => {
            t.exec(
                "CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$",
            )
            .await;
            t.exec("CREATE TRIGGER slow BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION slow_update()")
                .await;
        }
        (Dialect::MySql, true) => {
            t.exec(
                "CREATE TRIGGER slow BEFORE UPDATE ON jobs FOR EACH ROW SET @slept = SLEEP(0.005)",
            )
            .await;
        }
        (Dialect::Postgres, false) => t.exec("DROP TRIGGER slow ON jobs").await,
        (Dialect::MySql, false) => t.exec("DROP TRIGGER slow").await,
        _ => {}
    }
}

fn step(t: &TestDb) -> LeaseRepair<Arc<store_sqlx::SqlLeaseStore>> {
    let mut s = Settings::new(retry_policy::presets::startup_jobs());
    s.count_interrupted_attempt = true;
    LeaseRepair::new(Arc::new(t.db.lease_store(map())), s)
        .unwrap()
        .batch_size(2000)
        .unwrap()
}

async fn connection_killed_mid_run(t: &TestDb, admin_url: &str) {
    let name = t.db.dialect().name();
    stuck_table(t, JOBS).await;
    // Each repaired row sleeps 5 ms in a trigger, so the repair statements run for seconds
    // and the kill lands in the middle of one, not in the gap between two. (MariaDB shows the
    // trigger's own statement, `SET @slept = …`, while the UPDATE runs: that is what it kills.)
    slow_updates(t, true).await;
    let runner = Runner::builder("startup")
        .time_source(Arc::new(recon_core::ManualClock::at(now())))
        .step(step(t))
        .step(
            Metrics::new(&t.db)
                .count_by("jobs", "jobs", "status")
                .unwrap(),
        )
        .build()
        .unwrap();
    let admin = Db::connect(admin_url).await.unwrap();
    let killer = tokio::spawn(kill_a_busy_connection(
        admin.clone(),
        t.namespace().unwrap().to_owned(),
    ));
    let first = runner.run().await;
    assert!(
        killer.await.unwrap(),
        "{name}: no busy connection was seen to kill"
    );
    let lease = first.step("lease-repair").unwrap();
    assert_eq!(lease.status, StepStatus::Failed, "{name}: {first:#?}");
    let err = lease.error.as_ref().unwrap();
    assert!(
        err.transient,
        "{name}: a killed connection must be transient: {}",
        err.message
    );
    assert_eq!(
        first.step("verify-metrics").unwrap().status,
        StepStatus::Succeeded,
        "{name}: the next step must still run"
    );
    assert_eq!(first.status, RunStatus::Partial);
    println!("faults {name}: first run: {}", err.message);

    slow_updates(t, false).await;
    let second = runner.run().await;
    assert_eq!(second.status, RunStatus::Success, "{name}: {second:#?}");
    assert_each_repaired_once(t, JOBS).await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_run_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = common::postgres().await {
        let url = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        connection_killed_mid_run(&t, &url).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_run_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = common::mysql().await {
        let url = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        connection_killed_mid_run(&t, &url).await;
        t.finish().await;
    }
}
