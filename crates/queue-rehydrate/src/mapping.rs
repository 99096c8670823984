//! The host's description of one of its tables: name, key column, typed columns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ColumnType, Error, Key, KeyType, Result, Row, Value};

/// Longest identifier accepted (PostgreSQL's limit; MySQL allows 64).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Check that `name` is a plain identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_IDENTIFIER_LEN`] bytes. Such a name needs no escaping inside quotes on any backend.
pub fn validate_identifier(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER_LEN;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidIdentifier {
            name: name.to_owned(),
        })
    }
}

/// One mapped column: its name and declared type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name in the host's table.
    pub name: String,
    /// Its declared type; predicates and maintenance values are checked against it.
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// The raw, unchecked form of a [`TableMapping`] (what a configuration file holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMappingSpec {
    /// `table` or `schema.table`.
    pub table: String,
    /// The key column: unique, never NULL, indexed. Keyset pagination orders by it.
    pub key: String,
    /// The key column's type.
    pub key_type: KeyType,
    /// The other columns the host lets recon read or write.
    #[serde(default)]
    pub columns: Vec<Column>,
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    schema: Option<String>,
    table: String,
    key: String,
    key_type: KeyType,
    columns: Vec<Column>,
}

/// A checked description of a host table: its name (optionally `schema.table`), its key
/// column and the typed columns recon may use. Nothing else of the table is touched.
///
/// Every identifier is validated at construction (`[A-Za-z_][A-Za-z0-9_]*`); a SQL store
/// quotes them and binds every value, so no host text ever becomes SQL. Cheap to clone.
///
/// ```
/// use queue_rehydrate::{ColumnType, KeyType, TableMapping};
/// let sessions = TableMapping::builder("user_sessions", "phone", KeyType::Text)
///     .column("contact_status", ColumnType::Text)
///     .column("follow_up_attempts", ColumnType::Integer)
///     .column("cooldown_until", ColumnType::Timestamp)
///     .column("last_activity", ColumnType::Timestamp)
///     .build()?;
/// assert_eq!(sessions.column_type("cooldown_until"), Some(ColumnType::Timestamp));
/// assert!(TableMapping::builder("users; DROP TABLE x", "id", KeyType::Integer).build().is_err());
/// # Ok::<(), queue_rehydrate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TableMappingSpec", into = "TableMappingSpec")]
pub struct TableMapping(Arc<Inner>);

impl TableMapping {
    /// Start describing `table` with key column `key` of type `key_type`.
    pub fn builder(
        table: impl Into<String>,
        key: impl Into<String>,
        key_type: KeyType,
    ) -> TableMappingBuilder {
        TableMappingBuilder {
            spec: TableMappingSpec {
                table: table.into(),
                key: key.into(),
                key_type,
                columns: Vec::new(),
            },
        }
    }

    /// Check a raw description.
    ///
    /// Errors: an invalid table, schema or column name; a column declared twice (names are
    /// compared case-insensitively, as MySQL does).
    pub fn from_spec(spec: TableMappingSpec) -> Result<Self> {
        let (schema, table) = match spec.table.split_once('.') {
            Some((s, t)) => {
                validate_identifier(s)?;
                (Some(s.to_owned()), t.to_owned())
            }
            None => (None, spec.table.clone()),
        };
        validate_identifier(&table)?;
        validate_identifier(&spec.key)?;
        let mut columns = vec![Column {
            name: spec.key.clone(),
            ty: spec.key_type.column_type(),
        }];
        for c in spec.columns {
            validate_identifier(&c.name)?;
            if let Some(prev) = columns
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(&c.name))
            {
                if prev.name == spec.key && prev.name == c.name && prev.ty == c.ty {
                    continue; // the key column listed again, consistently
                }
                return Err(Error::config(format!(
                    "column `{}` is mapped twice in table `{}`",
                    c.name, spec.table
                )));
            }
            columns.push(c);
        }
        Ok(Self(Arc::new(Inner {
            schema,
            table,
            key: spec.key,
            key_type: spec.key_type,
            columns,
        })))
    }

    /// The schema, if the table was given as `schema.table`.
    pub fn schema(&self) -> Option<&str> {
        self.0.schema.as_deref()
    }

    /// The table's name (without schema).
    pub fn table(&self) -> &str {
        &self.0.table
    }

    /// `schema.table` or `table`, for messages.
    pub fn qualified_name(&self) -> String {
        match &self.0.schema {
            Some(s) => format!("{s}.{}", self.0.table),
            None => self.0.table.clone(),
        }
    }

    /// The key column.
    pub fn key_column(&self) -> &str {
        &self.0.key
    }

    /// The key column's type.
    pub fn key_type(&self) -> KeyType {
        self.0.key_type
    }

    /// Every mapped column, the key column first.
    pub fn columns(&self) -> &[Column] {
        &self.0.columns
    }

    /// The declared type of `column`, if it is mapped (exact, case-sensitive name).
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        self.0
            .columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.ty)
    }

    /// The declared type of `column`, or [`Error::UnknownColumn`].
    pub fn require_column(&self, column: &str) -> Result<ColumnType> {
        self.column_type(column)
            .ok_or_else(|| Error::UnknownColumn {
                table: self.qualified_name(),
                column: column.to_owned(),
            })
    }

    /// A checked row of this table: every column must be mapped and every value of its
    /// column's type; the key column must be set. Columns not given are NULL.
    ///
    /// ```
    /// # use queue_rehydrate::{ColumnType, KeyType, TableMapping, Key};
    /// let orders = TableMapping::builder("orders", "id", KeyType::Integer)
    ///     .column("processing_status", ColumnType::Text)
    ///     .build()?;
    /// let row = orders.row([("id", 7.into()), ("processing_status", "pending".into())])?;
    /// assert_eq!(row.key(), &Key::Int(7));
    /// assert!(orders.row([("id", 8.into()), ("status", "x".into())]).is_err());
    /// # Ok::<(), queue_rehydrate::Error>(())
    /// ```
    pub fn row<'a>(&self, values: impl IntoIterator<Item = (&'a str, Value)>) -> Result<Row> {
        let mut map = BTreeMap::new();
        for (column, value) in values {
            let ty = self.require_column(column)?;
            value.check_type(column, ty)?;
            map.insert(column.to_owned(), value);
        }
        let key = match map.get(self.key_column()) {
            Some(v) => Key::from_value(v, self.key_type()).map_err(|reason| {
                Error::config(format!(
                    "row of `{}`: key column `{}`: {reason}",
                    self.qualified_name(),
                    self.key_column()
                ))
            })?,
            None => {
                return Err(Error::config(format!(
                    "row of `{}` has no value for its key column `{}`",
                    self.qualified_name(),
                    self.key_column()
                )));
            }
        };
        Ok(Row::new(key, map))
    }
}

impl TryFrom<TableMappingSpec> for TableMapping {
    type Error = Error;
    fn try_from(spec: TableMappingSpec) -> Result<Self> {
        Self::from_spec(spec)
    }
}

impl From<TableMapping> for TableMappingSpec {
    fn from(m: TableMapping) -> Self {
        TableMappingSpec {
            table: m.qualified_name(),
            key: m.0.key.clone(),
            key_type: m.0.key_type,
            columns: m.0.columns[1..].to_vec(),
        }
    }
}

/// Builds a [`TableMapping`]; see [`TableMapping::builder`].
#[derive(Clone, Debug)]
pub struct TableMappingBuilder {
    spec: TableMappingSpec,
}

impl TableMappingBuilder {
    /// Map one more column.
    #[must_use]
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.spec.columns.push(Column {
            name: name.into(),
            ty,
        });
        self
    }

    /// Check and build (see [`TableMapping::from_spec`] for the errors).
    pub fn build(self) -> Result<TableMapping> {
        TableMapping::from_spec(self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "user_sessions", "T1", &"a".repeat(63)] {
            assert!(validate_identifier(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a b",
            "a;b",
            "\"a\"",
            "ä",
            "a.b",
            &"a".repeat(64),
        ] {
            let e = validate_identifier(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidIdentifier { .. }), "{bad}");
        }
    }

    #[test]
    fn schema_qualified_tables_and_duplicates() {
        let m = TableMapping::builder("app.orders", "id", KeyType::Integer)
            .column("status", ColumnType::Text)
            .build()
            .unwrap();
        assert_eq!(m.schema(), Some("app"));
        assert_eq!(m.table(), "orders");
        assert_eq!(m.qualified_name(), "app.orders");
        assert!(
            TableMapping::builder("a.b.c", "id", KeyType::Integer)
                .build()
                .is_err()
        );
        let dup = TableMapping::builder("orders", "id", KeyType::Integer)
            .column("Status", ColumnType::Text)
            .column("status", ColumnType::Text)
            .build()
            .unwrap_err();
        assert!(dup.to_string().contains("mapped twice"), "{dup}");
        let unknown = m.require_column("nope").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "table `app.orders` has no mapped column `nope`"
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let m = TableMapping::builder("orders", "id", KeyType::Integer)
            .column("status", ColumnType::Text)
            .build()
            .unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: TableMapping = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let bad = r#"{"table":"orders;--","key":"id","key_type":"integer","columns":[]}"#;
        assert!(serde_json::from_str::<TableMapping>(bad).is_err());
    }
}
