//! [`RunLog`] on `recon_runs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{RunLog, RunReport};

use crate::value::{Kind, Value};
use crate::{Db, Error};

/// Keeps finished runs in `recon_runs` (one row per run, the full report as JSON, and the
/// columns needed to query it). Create it with [`Db::run_log`].
#[derive(Clone, Debug)]
pub struct SqlRunLog {
    db: Db,
}

impl Db {
    /// The run log on this database (run [`Db::migrate`] first).
    pub fn run_log(&self) -> SqlRunLog {
        SqlRunLog { db: self.clone() }
    }
}

fn decode(rows: Vec<Vec<Value>>) -> recon_core::Result<Vec<RunReport>> {
    rows.into_iter()
        .map(|mut r| {
            let json = r.pop().and_then(Value::text).unwrap_or_default();
            serde_json::from_str(&json)
                .map_err(|e| recon_core::Error::permanent("decode a run report from recon_runs", e))
        })
        .collect()
}

#[async_trait]
impl RunLog for SqlRunLog {
    async fn append(&self, report: &RunReport) -> recon_core::Result<()> {
        let json = serde_json::to_string(report)
            .map_err(|e| recon_core::Error::permanent("encode a run report", e))?;
        let p = |n| self.db.dialect().param(n);
        let sql = format!(
            "INSERT INTO recon_runs (run_id, runner, started_at, finished_at, status, dry_run, \
             duration_ms, report) VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8)
        );
        self.db
            .execute(
                &sql,
                &[
                    Value::Text(Some(report.id.to_string())),
                    Value::Text(Some(report.runner.clone())),
                    Value::Ts(Some(report.started_at)),
                    Value::Ts(Some(report.finished_at)),
                    Value::Text(Some(report.status.as_str().into())),
                    Value::Int(Some(i64::from(report.dry_run))),
                    Value::Int(Some(i64::try_from(report.duration_ms).unwrap_or(i64::MAX))),
                    Value::Text(Some(json)),
                ],
            )
            .await
            .map_err(Error::into)
            .map(drop)
    }

    async fn latest(&self, runner: &str) -> recon_core::Result<Option<RunReport>> {
        Ok(self.history(runner, 1).await?.pop())
    }

    async fn history(&self, runner: &str, limit: usize) -> recon_core::Result<Vec<RunReport>> {
        let p = |n| self.db.dialect().param(n);
        let sql = format!(
            "SELECT report FROM recon_runs WHERE runner = {} \
             ORDER BY seq DESC LIMIT {}",
            p(1),
            p(2)
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .fetch(
                &sql,
                &[Value::Text(Some(runner.into())), Value::Int(Some(limit))],
                &[Kind::Text],
            )
            .await?;
        decode(rows)
    }

    async fn prune(&self, older_than: DateTime<Utc>) -> recon_core::Result<u64> {
        let sql = format!(
            "DELETE FROM recon_runs WHERE started_at < {}",
            self.db.dialect().param(1)
        );
        Ok(self
            .db
            .execute(&sql, &[Value::Ts(Some(older_than))])
            .await?)
    }
}
