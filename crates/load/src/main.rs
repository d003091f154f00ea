//! `mp-load`: the project's load generator, against a fleet that `make up` runs (any
//! number of replicas: `REPLICAS=2 make up`, then `mp-load --replicas 2`).
//!
//! One run: the idle memory of every process; shoppers at `--rate` per second for
//! `--seconds` (the mix in [`shop`]), bad messages published beside them; then
//! throughput and p50/p90/p99 per operation, the business invariants ([`checks`]), the
//! catalog read against a bare axum endpoint, `pgbench -N` TPS and the memory at peak.
//! Everything goes to `--out` as JSON too. The exit status is 1 when an invariant fails.
//!
//! Tokens are signed with the user key (`JWT_SIGNING_KEY`, the fleet's
//! `.local/keys/user.pem`), as the customer service signs them; the admin logs in with
//! `ADMIN_EMAIL`/`ADMIN_PASSWORD` (`.local/admin.env`). `scripts/load.sh` sets both.

mod adds;
mod bad;
mod capacity;
mod checkout;
mod checks;
mod fleet;
mod probes;
mod profile;
mod shop;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mp_common::{CommonConfig, TokenKeys};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "mp-load",
    about = "Shop load, figures and invariants against a running fleet"
)]
struct Args {
    /// Shoppers arriving per second (open loop).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long shoppers arrive.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Replicas of each service (ports from the service's own in steps of 100).
    #[arg(long, env = "REPLICAS", default_value_t = 1)]
    replicas: u16,
    /// Units of the scarce product (fewer than the shoppers who want one).
    #[arg(long, default_value_t = 40)]
    scarce_stock: i64,
    /// The share of shoppers who try to add the scarce product.
    #[arg(long, default_value_t = 0.5)]
    scarce_share: f64,
    /// Bad messages (malformed and unauthentic) published while the load runs.
    #[arg(long, default_value_t = 200)]
    bad_messages: usize,
    /// How long to wait for every order to end before checking.
    #[arg(long, default_value_t = 90)]
    settle_seconds: u64,
    /// Skip the bare-endpoint ratio and pgbench (for short runs inside tests).
    #[arg(long)]
    no_probes: bool,
    /// The fleet's state directory (its run/ holds the pid files).
    #[arg(long, env = "FLEET_STATE_DIR", default_value = ".local")]
    state_dir: PathBuf,
    /// Where the results go, as JSON.
    #[arg(long, default_value = "load-results.json")]
    out: PathBuf,
    /// Instead of the shop mix: the checkout saga alone at these rates (checkouts/s,
    /// comma-separated), `--seconds` each, with the profile of one checkout.
    #[arg(long, value_delimiter = ',')]
    checkout_rates: Vec<f64>,
    /// Instead of the shop mix: add to cart, closed loop, for this many seconds
    /// (`--add-workers` customers at once).
    #[arg(long)]
    add_to_cart_seconds: Option<f64>,
    #[arg(long, default_value_t = 32)]
    add_workers: usize,
    /// Instead of the shop mix: this many messages through one fresh quorum queue.
    #[arg(long)]
    queue_probe: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let started_at = chrono::Utc::now();
    let stats = Arc::new(stats::Stats::default());
    let keys = TokenKeys::from_config(&CommonConfig::from_env())?;
    let fleet = Arc::new(fleet::Fleet::new(keys, args.replicas, stats.clone())?);
    let run_dir = args.state_dir.join("run");
    if !args.checkout_rates.is_empty() {
        return checkout_mode(&args, fleet, &run_dir).await;
    }
    if let Some(messages) = args.queue_probe {
        let f = capacity::quorum_queue(&fleet.broker, messages, &run_dir).await?;
        println!(
            "mp-load: one quorum queue, {} persistent messages of {} bytes, confirms 256 in flight, \
             one consumer: {} messages/s; RabbitMQ CPU {} us per message (one core: {} messages/s)",
            f.messages, f.bytes, f.per_sec, f.broker_cpu_us, f.one_core_ceiling_per_sec
        );
        std::fs::write(
            &args.out,
            serde_json::to_vec_pretty(&json!({"quorum_queue": f}))?,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(seconds) = args.add_to_cart_seconds {
        let shop = shop::Shop::open(&fleet, args.scarce_stock).await?;
        let database_url = std::env::var("DATABASE_URL").ok();
        profile::quiesce(&fleet, Duration::from_secs(60)).await;
        let before = profile::Snapshot::take(&fleet, &run_dir, database_url.as_deref()).await;
        let f = adds::run(&fleet, &shop, args.add_workers, seconds).await;
        let after = profile::Snapshot::take(&fleet, &run_dir, database_url.as_deref()).await;
        println!("  one add: {}", before.per_unit(&after, f.ok).summary());
        println!(
            "mp-load: add to cart (reservation included), {} customers closed loop for {seconds}s: \
             {} req/s (target >= 2000), p50 {:.1} ms, p99 {:.1} ms (target < 20 ms), {} refused",
            f.workers, f.per_sec, f.p50_ms, f.p99_ms, f.refused
        );
        std::fs::write(
            &args.out,
            serde_json::to_vec_pretty(&json!({"add_to_cart": f}))?,
        )?;
        return Ok(if f.refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let idle = probes::memory(&run_dir);
    let dead_before = bad::dead_letters(&fleet).await?.total;
    let shop = Arc::new(shop::Shop::open(&fleet, args.scarce_stock).await?);
    let wanted = (args.rate * args.seconds).round() as usize;
    let shoppers = shop::register(&fleet, wanted).await;
    anyhow::ensure!(
        shoppers.len() == wanted,
        "registered {} of {wanted} shoppers",
        shoppers.len()
    );
    // The registrations' events (customer.created to notification) settle first.
    profile::quiesce(&fleet, Duration::from_secs(120)).await;
    println!(
        "mp-load: {} shoppers/s for {}s against {} replica(s) of each service; scarce stock {}, bad messages {}",
        args.rate, args.seconds, args.replicas, args.scarce_stock, args.bad_messages
    );

    let load_started = Instant::now();
    let bad = {
        let (fleet, count, gap) = (fleet.clone(), args.bad_messages, args.seconds / 10.0);
        tokio::spawn(async move {
            // Spread over the run, in ten bursts; a burst the broker refuses (it may be
            // down) counts only what it confirmed.
            let mut published = 0;
            for burst in 0..10 {
                match bad::publish(&fleet.broker, &fleet.tag, burst * 1000, count / 10).await {
                    Ok(n) => published += n,
                    Err(e) => eprintln!("mp-load: publishing bad messages: {e:#}"),
                }
                tokio::time::sleep(Duration::from_secs_f64(gap)).await;
            }
            published
        })
    };
    let placed = shop::run(
        fleet.clone(),
        shop.clone(),
        args.rate,
        shoppers,
        args.scarce_share,
    )
    .await;
    let bad_published = bad.await.unwrap_or(0);
    let load_secs = load_started.elapsed().as_secs_f64();
    let figures = stats.figures(load_secs);
    let by_card: Vec<String> = shop::CARDS
        .iter()
        .map(|(card, _)| {
            let n = placed.iter().filter(|p| p.card == *card).count();
            format!("{card} {n}")
        })
        .collect();
    println!(
        "mp-load: {} checkouts accepted in {load_secs:.1}s ({}), vendor {}",
        placed.len(),
        by_card.join(", "),
        shop.vendor_id
    );
    println!(
        "{:<22} {:>7} {:>8} {:>8} {:>8} {:>8}  statuses",
        "operation", "count", "per s", "p50 ms", "p90 ms", "p99 ms"
    );
    for f in &figures {
        println!(
            "{:<22} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {:?}{}",
            f.op,
            f.count,
            f.per_sec,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.statuses,
            if f.transport_errors > 0 {
                format!(" transport errors {}", f.transport_errors)
            } else {
                String::new()
            }
        );
    }

    let checks = checks::run(
        &fleet,
        &shop,
        &placed,
        Duration::from_secs(args.settle_seconds),
        bad_published,
        dead_before,
    )
    .await;
    println!("mp-load: invariants");
    for c in &checks {
        println!(
            "  {} {}: {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.figure
        );
    }

    let (ratio, tps) = if args.no_probes {
        (None, None)
    } else {
        let catalog = format!(
            "{}/api/products/{}",
            fleet.vendor.all()[0],
            shop.catalog.first().cloned().unwrap_or_default()
        );
        let ratio = probes::read_ratio(&fleet.http, &catalog, 3, 3.0).await.ok();
        if let Some(r) = &ratio {
            println!(
                "mp-load: catalog read {:?} req/s vs bare axum {:?} (same client, interleaved): {}% (target >= 60%)",
                r.catalog_rps, r.bare_rps, r.ratio_percent
            );
        }
        (ratio, pgbench().await)
    };
    let peak = probes::memory(&run_dir);
    println!("mp-load: memory, MB (idle before the run -> now, peak)");
    for m in &peak {
        let before = idle
            .iter()
            .find(|i| i.process == m.process)
            .map_or(f64::NAN, |i| i.rss_mb);
        println!(
            "  {:<15} {before:>6.1} -> {:>6.1}, peak {:>6.1}",
            m.process, m.rss_mb, m.peak_mb
        );
    }

    let ok = checks.iter().all(|c| c.ok);
    let results = json!({
        "started_at": started_at,
        "replicas": args.replicas,
        "rate": args.rate,
        "seconds": args.seconds,
        "accepted_checkouts": placed.len(),
        "operations": figures,
        "invariants": checks,
        "read_ratio": ratio,
        "pgbench_tps": tps,
        "memory_idle": idle,
        "memory_after": peak,
        "ok": ok,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)?;
    println!(
        "mp-load: results in {}; invariants {}",
        args.out.display(),
        if ok { "hold" } else { "FAILED" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `pgbench -N` TPS on the PostgreSQL of `DATABASE_URL`, printed; `None` without it.
async fn pgbench() -> Option<f64> {
    let url = std::env::var("DATABASE_URL").ok()?;
    match probes::pgbench(&url, 10).await {
        Ok(tps) => {
            println!("mp-load: pgbench -N (8 clients, 10 s) on the same PostgreSQL: {tps:.0} TPS");
            Some(tps)
        }
        Err(e) => {
            eprintln!("mp-load: pgbench: {e:#}");
            None
        }
    }
}

/// `--checkout-rates`: the saga alone at each rate ([`checkout`]), then `pgbench -N`.
async fn checkout_mode(
    args: &Args,
    fleet: Arc<fleet::Fleet>,
    run_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let started_at = chrono::Utc::now();
    let shop = shop::Shop::open(&fleet, args.scarce_stock).await?;
    let most = args
        .checkout_rates
        .iter()
        .map(|r| (r * args.seconds).round() as usize)
        .max()
        .unwrap_or(0);
    let tokens = checkout::customers(&fleet, most).await;
    anyhow::ensure!(
        tokens.len() == most,
        "registered {} of {most} customers",
        tokens.len()
    );
    let database_url = std::env::var("DATABASE_URL").ok();
    let mut rates = Vec::new();
    for &rate in &args.checkout_rates {
        let f = checkout::run_rate(
            &fleet,
            &shop,
            &tokens,
            rate,
            args.seconds,
            run_dir,
            database_url.as_deref(),
        )
        .await;
        println!(
            "mp-load: checkout {rate}/s offered for {}s: {}/{} accepted, {} shed (503 checkout-busy), \
             {} failed, {} confirmed, {} with email and SMS sent, {:.1} completed/s, \
             202->confirmed p50 {:.1} ms p99 {:.1} ms",
            args.seconds,
            f.accepted,
            f.carts,
            f.shed,
            f.failed,
            f.confirmed,
            f.notified,
            f.completed_per_sec,
            f.p50_ms,
            f.p99_ms
        );
        println!("  one checkout: {}", f.per_checkout.summary());
        rates.push(f);
    }
    let tps = pgbench().await;
    let best = rates
        .iter()
        .filter(|f| f.p99_ms < 250.0)
        .map(|f| f.offered_per_sec)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let most_completed = rates
        .iter()
        .map(|f| f.completed_per_sec)
        .fold(0.0, f64::max);
    println!(
        "mp-load: highest offered checkout rate with p99 under 250 ms: {}; most completed/s: {most_completed:.1} (targets: 300/s; p99 < 250 ms at 150/s)",
        best.map_or("none".to_owned(), |r| format!("{r}/s"))
    );
    let lost: usize = rates.iter().map(|f| f.accepted - f.confirmed).sum();
    let results = json!({
        "started_at": started_at,
        "replicas": args.replicas,
        "checkout": rates,
        "pgbench_tps": tps,
        "highest_rate_p99_under_250ms": best,
        "most_completed_per_sec": most_completed,
        "accepted_not_confirmed": lost,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)?;
    println!("mp-load: results in {}", args.out.display());
    // A good card's accepted checkout that did not confirm is a lost checkout.
    Ok(if lost == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("mp-load: {lost} accepted checkouts did not confirm");
        ExitCode::FAILURE
    })
}
