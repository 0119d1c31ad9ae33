//! [`PgServer`]: a PostgreSQL server of one test's own (`scripts/pg-test-server`, its own data
//! directory and port), which the test may stop and start again (an outage) without disturbing
//! the other tests on `PG_TEST_URL`; stopped when dropped.

use std::path::{Path, PathBuf};

use sqlx::Connection;

/// A PostgreSQL server of one test's own, stopped when dropped.
pub(crate) struct PgServer {
    dir: tempfile::TempDir,
    url: String,
}

impl PgServer {
    fn script(command: &str, dir: &Path) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server");
        let out = std::process::Command::new(script)
            .arg(command)
            .arg(dir)
            .output()
            .expect("scripts/pg-test-server runs");
        assert!(
            out.status.success(),
            "pg-test-server {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn start() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        Self::script("start", dir.path());
        let url = std::fs::read_to_string(dir.path().join("url")).unwrap();
        Self {
            url: url.trim().to_owned(),
            dir,
        }
    }

    /// `pg_ctl stop -m fast`: every connection ends, nothing answers on the port.
    pub(crate) fn pause(&self) {
        Self::script("pause", self.dir.path());
    }

    /// The same server again, on its data and port.
    pub(crate) fn resume(&self) {
        Self::script("resume", self.dir.path());
    }

    /// A new database on this server named `<prefix>_<random>`: its URL (node ids derive from
    /// its name, so they are unique on the shared NATS server).
    pub(crate) async fn database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = self.url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        Self::script("stop", self.dir.path());
    }
}
