//! [`WatermarkStore`] on `recon_watermarks`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::WatermarkStore;

use crate::value::{Kind, Value};
use crate::{Db, Dialect, TimestampFormat};

/// Named, forward-only positions in `recon_watermarks`. Create it with [`Db::watermarks`].
///
/// Positions are kept to the microsecond; finer digits are truncated on write.
#[derive(Clone, Debug)]
pub struct SqlWatermarkStore {
    db: Db,
}

impl Db {
    /// The watermark store on this database (run [`Db::migrate`] first).
    pub fn watermarks(&self) -> SqlWatermarkStore {
        SqlWatermarkStore { db: self.clone() }
    }
}

/// recon's own tables keep microseconds.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

#[async_trait]
impl WatermarkStore for SqlWatermarkStore {
    async fn get(&self, name: &str) -> recon_core::Result<Option<DateTime<Utc>>> {
        let sql = format!(
            "SELECT position FROM recon_watermarks WHERE name = {}",
            self.db.dialect().param(1)
        );
        let rows = self
            .db
            .fetch(
                &sql,
                &[Value::Text(Some(name.into()))],
                &[Kind::Ts(TimestampFormat::Rfc3339)],
            )
            .await?;
        Ok(Value::single(rows).and_then(Value::ts))
    }

    async fn advance(&self, name: &str, to: DateTime<Utc>) -> recon_core::Result<()> {
        let to = micros(to);
        let d = self.db.dialect();
        let p = |n| d.param(n);
        let args = [
            Value::Text(Some(name.into())),
            Value::Ts(Some(to)),
            Value::Ts(Some(Utc::now())),
        ];
        let mut tx = self.db.begin().await?;
        // Read under lock: FOR UPDATE on PostgreSQL/MySQL, the write lock on SQLite.
        let lock = if d == Dialect::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        let current = tx
            .fetch(
                &format!(
                    "SELECT position FROM recon_watermarks WHERE name = {}{lock}",
                    p(1)
                ),
                &args[..1],
                &[Kind::Ts(TimestampFormat::Rfc3339)],
            )
            .await
            .map(Value::single)?
            .and_then(Value::ts);
        match current {
            Some(current) if to < current => {
                return Err(recon_core::Error::WatermarkBackwards {
                    name: name.into(),
                    current,
                    requested: to,
                });
            }
            Some(current) if to == current => return Ok(()),
            Some(_) => {
                tx.execute(
                    &format!(
                        "UPDATE recon_watermarks SET position = {}, updated_at = {} WHERE name = {}",
                        p(1),
                        p(2),
                        p(3)
                    ),
                    &[args[1].clone(), args[2].clone(), args[0].clone()],
                )
                .await?;
            }
            None => {
                // Two first advances racing: the loser gets a unique violation (transient
                // from the caller's point of view: the next run sees the row).
                tx.execute(
                    &format!(
                        "INSERT INTO recon_watermarks (name, position, updated_at) VALUES ({}, {}, {})",
                        p(1),
                        p(2),
                        p(3)
                    ),
                    &args,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
