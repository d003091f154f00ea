//! `scripts/infra.sh` on a PostgreSQL as a fresh Debian/Ubuntu install sets it up: TCP
//! clients must give a password (scram-sha-256) and the postgres role has none. A second
//! cluster with those defaults is created for the test (on a free port, dropped at the
//! end); the machine's own cluster and its pg_hba.conf are not touched.
//!
//! Needs root (or passwordless sudo) for `pg_createcluster`, as `make test` on CI has.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mp_events::Service;
use mp_test_support::TestEnv;
use reqwest::{Method, StatusCode};
use sqlx::Connection;

/// Runs a command as root: directly when we are root, else through `sudo -n`.
fn as_root(program: &str, args: &[&str]) -> Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of the installed version with the defaults of a fresh install,
/// dropped (stopped first) when this is dropped.
struct FreshCluster {
    version: String,
    name: String,
    port: u16,
}

impl FreshCluster {
    fn create(id: &str) -> Self {
        let mut versions: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (make infra)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
        let version = versions.pop().expect("a PostgreSQL version");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self {
            version,
            name: format!("mp_fresh_{id}"),
            port,
        };
        let port = port.to_string();
        check(
            "pg_createcluster",
            &as_root(
                "pg_createcluster",
                &[&cluster.version, &cluster.name, "--port", &port],
            ),
        );
        check(
            "pg_ctlcluster start",
            &as_root(
                "pg_ctlcluster",
                &[
                    "--skip-systemctl-redirect",
                    &cluster.version,
                    &cluster.name,
                    "start",
                ],
            ),
        );
        cluster
    }

    fn hba(&self) -> String {
        let path = format!("/etc/postgresql/{}/{}/pg_hba.conf", self.version, self.name);
        let out = as_root("cat", &[&path]);
        check("reading pg_hba.conf", &out);
        String::from_utf8(out.stdout).expect("text")
    }
}

impl Drop for FreshCluster {
    fn drop(&mut self) {
        let _ = as_root("pg_dropcluster", &["--stop", &self.version, &self.name]);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// `bash scripts/infra.sh ensure` against the given port and state directory.
fn infra_ensure(port: u16, state_dir: &Path) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/infra.sh"))
        .arg("ensure")
        .env("INFRA_PG_PORT", port.to_string())
        // The RabbitMQ the other tests are using right now is never restarted from here
        // (a restart for more open files cut them all off mid-run once).
        .env("INFRA_RABBIT_MIN_FILES", "0")
        .env("FLEET_STATE_DIR", state_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs");
    check("scripts/infra.sh ensure", &out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn psql_as_postgres_over_tcp(port: u16) -> Output {
    Command::new("psql")
        .args(["-X", "-w", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-c", "select 1"])
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infra_makes_a_fresh_password_only_postgresql_usable_by_the_services() {
    let mut env = TestEnv::new();
    let cluster = FreshCluster::create(&env.id);
    let state_dir = std::env::temp_dir().join(format!("mp-infra-{}", env.id));
    let hba_before = cluster.hba();
    assert!(
        !psql_as_postgres_over_tcp(cluster.port).status.success(),
        "a fresh cluster asks TCP clients for a password"
    );

    let first = infra_ensure(cluster.port, &state_dir);
    assert!(
        first.contains("creating PostgreSQL role marketplace"),
        "{first}"
    );
    let second = infra_ensure(cluster.port, &state_dir);
    assert!(
        !second.contains("creating") && !second.contains("setting the password"),
        "a second run changes nothing: {second}"
    );
    assert_eq!(cluster.hba(), hba_before, "pg_hba.conf is left as it was");

    let db_env = state_dir.join("db.env");
    let mode = std::fs::metadata(&db_env)
        .expect("db.env")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "db.env is readable by its owner only");
    let url = std::fs::read_to_string(&db_env)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .expect("a DATABASE_URL in db.env")
        .to_owned();
    assert!(
        url.starts_with("postgres://marketplace:"),
        "the project role"
    );
    assert!(
        url.ends_with(&format!(
            "@127.0.0.1:{}/marketplace?sslmode=disable",
            cluster.port
        )),
        "loopback without TLS: {url}"
    );

    // The cluster also serves verified TLS, as a managed provider does: the CA
    // infra.sh made signs a certificate for localhost, which verify-full accepts.
    let ca = state_dir.join("tls/postgres-ca.crt");
    assert!(ca.is_file(), "the CA is kept at {}", ca.display());
    let verified = url.replace("@127.0.0.1:", "@localhost:").replace(
        "sslmode=disable",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let mut conn = sqlx::PgConnection::connect(&verified)
        .await
        .unwrap_or_else(|e| panic!("verified TLS to the fresh cluster: {e}"));
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "the session is encrypted");
    conn.close().await.unwrap();

    // A service on that URL migrates its schema, becomes ready and serves from it.
    env.configure(|c| c.database_url = url.clone());
    let vendor = env
        .spawn(Service::Vendor, |common, listener, shutdown| {
            vendor::run(vendor::Config::with_common(common), listener, shutdown)
        })
        .await;
    let (status, body) = vendor.call(Method::GET, "/api/products", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"], serde_json::json!([]));

    drop(vendor);
    drop(env);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&state_dir);
}
