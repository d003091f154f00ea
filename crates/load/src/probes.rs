//! Figures measured beside the load in the same run: a bare axum endpoint against the
//! catalog read (the read-path ratio, same client, interleaved), `pgbench -N` TPS on the
//! same PostgreSQL, and each service process's memory (from the fleet's pid files).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

const BODY: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","name":"baseline","price":{"amount":100,"currency":"EUR"}}"#;

/// A bare axum endpoint on a port of its own, in this process; its base URL.
pub async fn bare_endpoint() -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                BODY,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Requests per second `workers` closed-loop clients get from `url` in `seconds`.
pub async fn closed_loop(http: &reqwest::Client, url: &str, workers: usize, seconds: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let counts = futures::future::join_all((0..workers).map(|_| async {
        let mut n = 0u64;
        while Instant::now() < deadline {
            if let Ok(r) = http.get(url).send().await
                && r.bytes().await.is_ok()
            {
                n += 1;
            }
        }
        n
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}

#[derive(Debug, Serialize)]
pub struct ReadRatio {
    pub bare_rps: Vec<f64>,
    pub catalog_rps: Vec<f64>,
    /// The median of the rounds' catalog/bare ratios, percent.
    pub ratio_percent: f64,
}

/// Interleaved rounds of the bare endpoint and the catalog read.
pub async fn read_ratio(
    http: &reqwest::Client,
    catalog_url: &str,
    rounds: usize,
    seconds: f64,
) -> anyhow::Result<ReadRatio> {
    let bare = bare_endpoint().await?;
    let (mut b, mut c, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let br = closed_loop(http, &bare, 32, seconds).await;
        let cr = closed_loop(http, catalog_url, 32, seconds).await;
        ratios.push(100.0 * cr / br.max(1.0));
        b.push(br.round());
        c.push(cr.round());
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ReadRatio {
        bare_rps: b,
        catalog_rps: c,
        ratio_percent: ratios[ratios.len() / 2].round(),
    })
}

/// `pgbench -N` TPS on a scratch database of the server `database_url` names (psql and
/// pgbench from PATH, on a blocking thread).
pub async fn pgbench(database_url: &str, seconds: u64) -> anyhow::Result<f64> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || pgbench_blocking(&url, seconds)).await?
}

fn pgbench_blocking(database_url: &str, seconds: u64) -> anyhow::Result<f64> {
    use std::process::Command;
    let base = database_url
        .rsplit_once('/')
        .map_or(database_url, |(b, _)| b);
    let scratch = format!("{base}/mp_load_pgbench");
    let psql = |sql: &str| {
        Command::new("psql")
            .args([database_url, "-qtAc", sql])
            .output()
    };
    psql("drop database if exists mp_load_pgbench")?;
    let made = psql("create database mp_load_pgbench")?;
    anyhow::ensure!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let init = Command::new("pgbench")
        .args(["-q", "-i", "-s", "10", &scratch])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = Command::new("pgbench")
        .args([
            "-N",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            &scratch,
        ])
        .output()?;
    let _ = psql("drop database if exists mp_load_pgbench");
    let out = String::from_utf8_lossy(&run.stdout);
    out.lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output"))
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub process: String,
    pub pid: u32,
    /// Resident now, MB.
    pub rss_mb: f64,
    /// The high-water mark since the process started, MB.
    pub peak_mb: f64,
}

fn status_kb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every fleet process with a pid file in `run_dir` (`<instance>.pid`).
pub fn memory(run_dir: &Path) -> Vec<Memory> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(process) = name.strip_suffix(".pid") else {
            continue;
        };
        if process == "maildev" {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|p| p.trim().parse().ok())
        else {
            continue;
        };
        if let (Some(rss), Some(peak)) = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:")) {
            out.push(Memory {
                process: process.to_owned(),
                pid,
                rss_mb: (rss / 1024.0 * 10.0).round() / 10.0,
                peak_mb: (peak / 1024.0 * 10.0).round() / 10.0,
            });
        }
    }
    out.sort_by(|a, b| a.process.cmp(&b.process));
    out
}
