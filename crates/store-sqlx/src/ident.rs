//! Validated identifiers. Table and column names are checked once, at construction, and
//! quoted for the backend whenever they are written into SQL; values never are.

use std::fmt;

use crate::{Dialect, Error, Result};

/// A validated SQL identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes.
///
/// ```
/// use store_sqlx::Ident;
/// assert!(Ident::new("locked_until", "lease column").is_ok());
/// assert!(Ident::new("x; DROP TABLE jobs", "lease column").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Check `name`; `what` says what it names, for the error message.
    pub fn new(name: &str, what: &str) -> Result<Self> {
        let mut chars = name.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok_first && ok_rest && name.len() <= 63 {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::ident(what, name))
        }
    }

    /// The identifier as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier quoted for `dialect`.
    pub fn quoted(&self, dialect: Dialect) -> String {
        // Validation guarantees no quote characters inside, so wrapping is enough.
        match dialect {
            Dialect::MySql => format!("`{}`", self.0),
            Dialect::Sqlite | Dialect::Postgres => format!("\"{}\"", self.0),
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table name, optionally schema-qualified (`schema.table`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<Ident>,
    table: Ident,
}

impl TableName {
    /// Check `name` (`table` or `schema.table`).
    pub fn new(name: &str, what: &str) -> Result<Self> {
        match name.split_once('.') {
            None => Ok(Self {
                schema: None,
                table: Ident::new(name, what)?,
            }),
            Some((schema, table)) => Ok(Self {
                schema: Some(Ident::new(schema, what).map_err(|_| Error::ident(what, name))?),
                table: Ident::new(table, what).map_err(|_| Error::ident(what, name))?,
            }),
        }
    }

    /// The schema, if qualified.
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }

    /// The unqualified table name.
    pub fn table(&self) -> &Ident {
        &self.table
    }

    /// The name quoted for `dialect` (`"schema"."table"`).
    pub fn quoted(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.quoted(dialect), self.table.quoted(dialect)),
            None => self.table.quoted(dialect),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => write!(f, "{}", self.table),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for good in ["jobs", "_x", "Locked_Until2", &"a".repeat(63)] {
            assert!(Ident::new(good, "t").is_ok(), "{good}");
        }
        for bad in [
            "",
            "1jobs",
            "jobs;",
            "jo bs",
            "jobs\"",
            "jobs`",
            "jobs'--",
            "é",
            "a.b",
            &"a".repeat(64),
            "x\0",
        ] {
            let err = Ident::new(bad, "status column").unwrap_err();
            assert!(err.to_string().contains("status column"), "{err}");
        }
    }

    #[test]
    fn quoting_per_dialect() {
        let t = TableName::new("app.processing_jobs", "job table").unwrap();
        assert_eq!(t.quoted(Dialect::Postgres), "\"app\".\"processing_jobs\"");
        assert_eq!(t.quoted(Dialect::MySql), "`app`.`processing_jobs`");
        assert_eq!(t.to_string(), "app.processing_jobs");
        assert!(TableName::new("a.b.c", "t").is_err());
        assert!(TableName::new(".b", "t").is_err());
        assert!(TableName::new("a.", "t").is_err());
    }
}
