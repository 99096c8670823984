//! Introspection shared by every mapped host table: does the table exist, which columns
//! does it have, and a clear error naming exactly what is missing.

use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Ident, Result, TableName};

impl Db {
    /// The columns of `table` in order, or `None` if there is no such table.
    pub async fn columns(&self, table: &TableName) -> Result<Option<Vec<String>>> {
        let d = self.dialect();
        let schema = table.schema().map(|s| s.as_str().to_owned());
        let name = Value::Text(Some(table.table().as_str().to_owned()));
        let rows = match d {
            Dialect::Sqlite => {
                self.fetch(
                    "SELECT name FROM pragma_table_info(?1, ?2) ORDER BY cid",
                    &[
                        name,
                        Value::Text(Some(schema.unwrap_or_else(|| "main".into()))),
                    ],
                    &[Kind::Text],
                )
                .await?
            }
            Dialect::Postgres => {
                self.fetch(
                    "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                     WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 \
                     ORDER BY ordinal_position",
                    &[Value::Text(schema), name],
                    &[Kind::Text],
                )
                .await?
            }
            Dialect::MySql => {
                self.fetch(
                    "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                     WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                     ORDER BY ordinal_position",
                    &[Value::Text(schema), name],
                    &[Kind::Text],
                )
                .await?
            }
        };
        let cols: Vec<String> = rows
            .into_iter()
            .filter_map(|mut r| r.pop()?.text())
            .collect();
        Ok(if cols.is_empty() { None } else { Some(cols) })
    }

    /// Check that `table` exists with every column of `required`; the error names exactly what
    /// is missing (and a differently-cased match, since quoted identifiers are case-sensitive).
    pub async fn verify_columns(&self, table: &TableName, required: &[&Ident]) -> Result<()> {
        let Some(cols) = self.columns(table).await? else {
            let hint = self.case_hint_table(table).await.unwrap_or_default();
            return Err(Error::MissingTable {
                table: table.to_string(),
                hint,
            });
        };
        // PostgreSQL compares quoted names exactly; SQLite and MySQL compare column names
        // without regard to ASCII case, quoted or not.
        let same = |c: &str, w: &str| match self.dialect() {
            Dialect::Postgres => c == w,
            Dialect::Sqlite | Dialect::MySql => c.eq_ignore_ascii_case(w),
        };
        let mut missing = Vec::new();
        let mut hints = Vec::new();
        for want in required {
            if !cols.iter().any(|c| same(c, want.as_str())) {
                missing.push(want.to_string());
                if let Some(c) = cols.iter().find(|c| c.eq_ignore_ascii_case(want.as_str())) {
                    hints.push(format!("`{c}` for `{want}`"));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let hint = if hints.is_empty() {
            format!(" (it has: {})", cols.join(", "))
        } else {
            format!(
                " (names are case-sensitive; did you mean {}?)",
                hints.join(", ")
            )
        };
        Err(Error::MissingColumns {
            table: table.to_string(),
            missing,
            hint,
        })
    }

    async fn case_hint_table(&self, table: &TableName) -> Result<String> {
        let lower = table.table().as_str().to_ascii_lowercase();
        if lower == table.table().as_str() {
            return Ok(String::new());
        }
        let alt = Ident::new(&lower, "table")?;
        let alt = match table.schema() {
            Some(s) => TableName::new(&format!("{s}.{alt}"), "table")?,
            None => TableName::new(alt.as_str(), "table")?,
        };
        Ok(match self.columns(&alt).await? {
            Some(_) => format!(" (names are case-sensitive; did you mean `{alt}`?)"),
            None => String::new(),
        })
    }
}
