//! `.ci/probe-databases`, which `.ci/run` runs under `CI=true` before anything else: it must
//! probe the servers the URL variables name (not a hard-coded one), pass passwords only through
//! the environment, and say plainly when a probe tool is missing or a server does not answer.
//!
//! The probe tools are replaced by stubs that log how they were called, so these tests need
//! neither the tools nor the databases; the last test runs the real tools against the real
//! servers when their URLs are set.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/probe-databases")
}

/// bash, found on the test's own PATH (the probe runs with a PATH of stubs only).
fn bash() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("bash"))
        .find(|p| p.is_file())
        .expect("bash is on PATH")
}

/// A directory holding stub `pg_isready` and `mysqladmin` that append their arguments and
/// password variables to `calls.log` and exit with the given codes.
struct Stubs {
    dir: PathBuf,
}

impl Stubs {
    fn new(test: &str, pg_exit: i32, my_exit: i32) -> Self {
        let dir =
            std::env::temp_dir().join(format!("recon-ci-probes-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bash = bash();
        for (tool, code) in [("pg_isready", pg_exit), ("mysqladmin", my_exit)] {
            let body = format!(
                "#!{}\necho \"{tool} $* PGPASSWORD=${{PGPASSWORD-}} MYSQL_PWD=${{MYSQL_PWD-}}\" >> '{}'\nexit {code}\n",
                bash.display(),
                dir.join("calls.log").display()
            );
            let path = dir.join(tool);
            std::fs::write(&path, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir }
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    fn probe(&self, pg_url: &str, my_url: &str) -> Output {
        Command::new(bash())
            .arg(script())
            .env_clear()
            .env("PATH", &self.dir)
            .env("RECON_TEST_POSTGRES_URL", pg_url)
            .env("RECON_TEST_MYSQL_URL", my_url)
            .output()
            .unwrap()
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn host_port_user_and_database_come_from_the_urls() {
    let stubs = Stubs::new("from-urls", 0, 0);
    let out = stubs.probe(
        "postgres://alice:s3cret@db.example:6543/shop",
        "mysql://bob:p%40ss@10.0.0.7:3307/orders",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = stubs.calls();
    let pg = calls.lines().find(|l| l.starts_with("pg_isready")).unwrap();
    assert!(
        pg.contains("-h db.example -p 6543 -U alice -d shop"),
        "{pg}"
    );
    assert!(pg.ends_with("PGPASSWORD=s3cret MYSQL_PWD="), "{pg}");
    let my = calls.lines().find(|l| l.starts_with("mysqladmin")).unwrap();
    assert!(my.contains("-h 10.0.0.7 -P 3307 -u bob ping"), "{my}");
    assert!(
        my.ends_with("MYSQL_PWD=p@ss"),
        "password decoded, via the environment: {my}"
    );
    for line in calls.lines() {
        let argv = line.split(" PGPASSWORD=").next().unwrap();
        assert!(
            !argv.contains("s3cret") && !argv.contains("p@ss") && !argv.contains("p%40ss"),
            "a password reached argv: {line}"
        );
    }
}

#[test]
fn default_ports_ipv6_hosts_and_no_user() {
    let stubs = Stubs::new("defaults", 0, 0);
    let out = stubs.probe("postgres://[::1]/test", "mysql://localhost");
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = stubs.calls();
    assert!(
        calls.contains("pg_isready -q -t 10 -h ::1 -p 5432 -d test PGPASSWORD="),
        "{calls}"
    );
    assert!(calls.contains("-h localhost -P 3306 ping"), "{calls}");
}

#[test]
fn a_server_that_does_not_answer_fails_and_is_named_without_its_password() {
    let stubs = Stubs::new("no-answer", 2, 1);
    let out = stubs.probe(
        "postgres://alice:s3cret@db.example:6543/shop",
        "mysql://bob:hunter2@10.0.0.7:3307/orders",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("PostgreSQL does not answer at db.example:6543"),
        "{err}"
    );
    assert!(
        err.contains("MariaDB does not answer at 10.0.0.7:3307"),
        "{err}"
    );
    assert!(!err.contains("s3cret") && !err.contains("hunter2"), "{err}");

    // one of the two is enough to fail
    let stubs = Stubs::new("one-down", 0, 1);
    let out = stubs.probe(
        "postgres://root@127.0.0.1/test",
        "mysql://root@127.0.0.1:1/test",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("MariaDB does not answer at 127.0.0.1:1"));
}

#[test]
fn a_missing_probe_tool_is_named_with_the_package_to_install() {
    let empty = std::env::temp_dir().join(format!("recon-ci-probes-{}-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(bash())
        .arg(script())
        .env_clear()
        .env("PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&empty);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("pg_isready is not installed"), "{err}");
    assert!(err.contains("install postgresql-client"), "{err}");
    assert!(err.contains("mysqladmin is not installed"), "{err}");
    assert!(err.contains("install mariadb-client"), "{err}");
    assert!(
        !err.contains("does not answer"),
        "a missing tool is not a dead server: {err}"
    );
}

#[test]
fn a_url_that_is_not_a_url_is_reported() {
    let stubs = Stubs::new("bad-url", 0, 0);
    let out = stubs.probe("127.0.0.1:5432", "mysql://root@127.0.0.1:3306/test");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("RECON_TEST_POSTGRES_URL is not a URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_real_probes_reach_the_real_servers() {
    let (Ok(pg), Ok(my)) = (
        std::env::var("RECON_TEST_POSTGRES_URL"),
        std::env::var("RECON_TEST_MYSQL_URL"),
    ) else {
        eprintln!(
            "skipped: RECON_TEST_POSTGRES_URL and RECON_TEST_MYSQL_URL must both be set to probe real servers"
        );
        return;
    };
    let out = Command::new(bash())
        .arg(script())
        .env("RECON_TEST_POSTGRES_URL", &pg)
        .env("RECON_TEST_MYSQL_URL", &my)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // and a port nothing listens on is reported, for both kinds of server
    let out = Command::new(bash())
        .arg(script())
        .env(
            "RECON_TEST_POSTGRES_URL",
            "postgres://root@127.0.0.1:1/test",
        )
        .env("RECON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:1/test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("PostgreSQL does not answer at 127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("MariaDB does not answer at 127.0.0.1:1"),
        "{err}"
    );
}
