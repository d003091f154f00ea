//! TLS to what production calls managed services: PostgreSQL with `sslmode=verify-full`
//! (the local server has a certificate for "localhost" from a local CA, made by
//! `make infra`), Redis over `rediss://` (a throw-away `redis-server --tls-port` with a
//! test CA's certificate), RabbitMQ over `amqps://` (the local broker behind a TLS
//! terminator with a test CA's certificate) and HTTPS. Each connection is verified, and
//! a certificate for another host is refused.

use std::path::PathBuf;

use mp_events::Service;
use mp_integration_tests::Fleet;
use mp_test_support::TestEnv;
use mp_test_support::tls::{Leaf, TestCa, TlsRedis, serve_https, terminate_tls};

/// The local CA of PostgreSQL's certificate (`scripts/infra.sh pg-tls-ca`).
fn postgres_ca() -> PathBuf {
    let path = std::env::var_os("PG_TLS_CA_FILE").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.local/tls/postgres-ca.crt"
            ))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no {}: run `make infra` (it gives PostgreSQL its certificate)",
        path.display()
    );
    path
}

/// The project's `DATABASE_URL`, to `host` with verify-full against `ca`.
fn verified_url(host: &str, ca: &std::path::Path) -> String {
    let base = mp_common::CommonConfig::from_env().database_url;
    let base = base.split('?').next().unwrap_or(&base).to_owned();
    let (scheme_creds, rest) = base
        .rsplit_once('@')
        .expect("DATABASE_URL with credentials");
    let (_, port_db) = rest.split_once(':').expect("host:port/db");
    format!(
        "{scheme_creds}@{host}:{port_db}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    )
}

/// The project's `AMQP_URL` as `amqps://` to `localhost:<port>` of a TLS terminator with
/// `leaf`, in front of the local broker.
async fn amqps_url(leaf: &Leaf) -> String {
    let plain = mp_common::CommonConfig::from_env().amqp_url;
    let rest = plain.strip_prefix("amqp://").expect("an amqp:// AMQP_URL");
    let (creds, rest) = rest.rsplit_once('@').expect("AMQP_URL with credentials");
    let (host_port, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream = tokio::net::lookup_host(host_port)
        .await
        .expect("the broker's address")
        .next()
        .expect("an address");
    let port = terminate_tls(upstream, leaf).await.port();
    format!("amqps://{creds}@localhost:{port}/{vhost}")
}

/// All six services on PostgreSQL, Redis and RabbitMQ over verified TLS: they get ready
/// and a checkout goes through (the only way to the broker is the TLS terminator);
/// every PostgreSQL session they opened is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_reaches_postgres_redis_and_rabbitmq_over_verified_tls() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca.leaf(&["localhost"]), &ca).await;
    let bundle = ca.bundle_with(&[&postgres_ca()]);
    let mut env = TestEnv::new();
    let url = verified_url("localhost", &bundle);
    let redis_url = format!("rediss://localhost:{}", redis.port);
    let amqp_url = amqps_url(&ca.leaf(&["localhost"])).await;
    let ca_file = bundle.clone();
    env.configure(|c| {
        c.database_url = url;
        c.redis_url = redis_url;
        c.amqp_url = amqp_url;
        c.tls_ca_file = Some(ca_file);
    });
    let f = Fleet::start_in(env).await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 5, 850).await;
    let customer = f.register("Ada Lovelace").await;
    let order_id = f.shop(&customer, &[(product, 1)], "tok_visa").await;
    f.wait_order(&customer, order_id, "confirmed").await;

    // The services' pools are named after their schemas (the test's own pool, on the
    // plain loopback URL, is `t_<id>_test`).
    let db = f.db(Service::Order).await;
    let names: Vec<String> = Service::ALL.iter().map(|s| f.env.schema(*s)).collect();
    let (sessions, plain): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where not s.ssl)
         from pg_stat_activity a join pg_stat_ssl s using (pid)
         where a.application_name = any($1)",
    )
    .bind(&names)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(sessions >= 6, "each service has sessions open: {sessions}");
    assert_eq!(plain, 0, "every service session is on TLS");
}

/// A certificate for another host is refused, by each client: PostgreSQL asked for by
/// an address its certificate does not name, a Redis, a RabbitMQ and an HTTPS server
/// whose certificates name another host. The right names connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused_by_postgres_redis_rabbitmq_and_https_clients() {
    let ca = TestCa::new();
    let mut config = mp_common::CommonConfig::from_env();
    config.tls_ca_file = Some(ca.bundle_with(&[&postgres_ca()]));
    mp_common::tls::init(&config).unwrap();

    let pg = |host: &str| {
        let url = verified_url(host, &postgres_ca());
        async move {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(&url)
                .await
        }
    };
    assert!(pg("localhost").await.is_ok(), "the name on the certificate");
    let err = pg("127.0.0.1")
        .await
        .expect_err("an address the certificate does not name");
    assert!(
        format!("{err}").to_lowercase().contains("certificate"),
        "{err}"
    );

    let right = TlsRedis::start(&ca.leaf(&["localhost"]), &ca).await;
    let wrong = TlsRedis::start(&ca.leaf(&["cache.example.test"]), &ca).await;
    let mut conn = mp_common::redis::connect(&format!("rediss://localhost:{}", right.port))
        .await
        .expect("verified Redis");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        mp_common::redis::connect(&format!("rediss://localhost:{}", wrong.port))
            .await
            .is_err(),
        "a Redis certificate for another host"
    );

    let app = axum::Router::new().route("/", axum::routing::get(|| async { "verified" }));
    let good = serve_https(app.clone(), &ca.leaf(&["localhost"])).await;
    let bad = serve_https(app, &ca.leaf(&["elsewhere.example.test"])).await;
    let http = mp_common::client::http_client_builder().build().unwrap();
    let body = http
        .get(format!("https://localhost:{}/", good.port()))
        .send()
        .await
        .expect("verified HTTPS")
        .text()
        .await
        .unwrap();
    assert_eq!(body, "verified");
    assert!(
        http.get(format!("https://localhost:{}/", bad.port()))
            .send()
            .await
            .is_err(),
        "an HTTPS certificate for another host"
    );

    let env = TestEnv::new();
    let topology = env.config(Service::Customer).topology();
    let broker = |url: String| {
        mp_events::Broker::new(url, topology.clone(), None).with_tls_ca(Some(ca.ca_pem()))
    };
    let good = broker(amqps_url(&ca.leaf(&["localhost"])).await);
    good.connection().await.expect("verified amqps");
    let bad = broker(amqps_url(&ca.leaf(&["mq.example.test"])).await);
    let err = bad
        .connection()
        .await
        .expect_err("a RabbitMQ certificate for another host");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
}
