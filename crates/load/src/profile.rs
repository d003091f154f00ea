//! Where a run's work goes, from outside the processes: the CPU time of every fleet
//! process (its pid file) and of PostgreSQL, RabbitMQ and Redis (found in /proc by
//! name), PostgreSQL's commits (`pg_stat_database`), and the events published and
//! deliveries handled (the services' own counters, summed over every replica). Two
//! snapshots around a run, divided by what the run completed, give the cost of one
//! unit of work per component.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::fleet::Fleet;

/// This process, the load generator: shown beside the fleet, not in its total.
const GENERATOR: &str = "load generator";

/// The counters at one moment.
pub struct Snapshot {
    /// CPU seconds (user + system, children reaped included) by component.
    cpu: BTreeMap<String, f64>,
    commits: Option<f64>,
    /// Rows inserted, updated or deleted so far, by schema (`pg_stat_user_tables`).
    rows: BTreeMap<String, f64>,
    published: f64,
    consumed: BTreeMap<String, f64>,
}

/// The difference of two snapshots divided by the units of work between them.
#[derive(Debug, Clone, Serialize)]
pub struct PerUnit {
    pub units: usize,
    /// Milliseconds of CPU per unit, by component, and their sum (the generator's own
    /// share apart).
    pub cpu_ms: BTreeMap<String, f64>,
    pub cpu_ms_total: f64,
    pub generator_cpu_ms: f64,
    /// PostgreSQL's `xact_commit`: transactions, a statement outside one included.
    pub commits: Option<f64>,
    /// Rows written per unit, by schema: which service's database does the work.
    pub rows_written: BTreeMap<String, f64>,
    pub events_published: f64,
    pub deliveries_handled: f64,
    /// Deliveries per unit by the service (queue) that handled them.
    pub deliveries_by_queue: BTreeMap<String, f64>,
}

impl PerUnit {
    /// One line: total and the components by size.
    pub fn summary(&self) -> String {
        let mut parts: Vec<(&String, &f64)> = self.cpu_ms.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts
            .iter()
            .filter(|(_, ms)| **ms >= 0.05)
            .map(|(name, ms)| format!("{name} {ms:.1}"))
            .collect();
        let by = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "CPU {:.1} ms ({}; the generator {:.1} more), {} PostgreSQL transactions (reads \
             included), rows written ({}), {:.1} events published, {:.1} deliveries handled ({})",
            self.cpu_ms_total,
            parts.join(", "),
            self.generator_cpu_ms,
            self.commits.map_or("?".to_owned(), |c| format!("{c:.1}")),
            by(&self.rows_written),
            self.events_published,
            self.deliveries_handled,
            by(&self.deliveries_by_queue)
        )
    }
}

/// Clock ticks per second of /proc's times.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime + cutime + cstime of a process, in ticks.
fn cpu_ticks(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is the state (field 3), so utime (14) .. cstime (17) are 11..=14.
    fields
        .get(11..=14)?
        .iter()
        .map(|f| f.parse::<f64>().ok())
        .sum()
}

/// The component a process belongs to: the fleet's pid files name services (and their
/// replicas, summed); the dependencies by their process name.
pub fn cpu_seconds(run_dir: &Path) -> BTreeMap<String, f64> {
    let mut ticks: BTreeMap<String, f64> = BTreeMap::new();
    let mut fleet_pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(process) = name.strip_suffix(".pid") else {
                continue;
            };
            let Ok(pid) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let pid = pid.trim().to_owned();
            let component = match process {
                "maildev" => "mail catcher".to_owned(),
                p => p
                    .rsplit_once('-')
                    .filter(|(_, n)| n.parse::<u16>().is_ok())
                    .map_or(p, |(svc, _)| svc)
                    .to_owned(),
            };
            if let Some(t) = cpu_ticks(&pid) {
                *ticks.entry(component).or_default() += t;
                fleet_pids.push(pid);
            }
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || fleet_pids.contains(&pid) {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let component = match comm.trim() {
                "postgres" => "postgresql",
                "beam.smp" | "erl_child_setup" => "rabbitmq",
                "redis-server" => "redis",
                _ => continue,
            };
            if let Some(t) = cpu_ticks(&pid) {
                *ticks.entry(component.to_owned()).or_default() += t;
            }
        }
    }
    if let Some(t) = cpu_ticks(&std::process::id().to_string()) {
        ticks.insert(GENERATOR.to_owned(), t);
    }
    let hz = ticks_per_sec();
    ticks.into_iter().map(|(c, t)| (c, t / hz)).collect()
}

/// The sum of every sample of the counter `name` in a Prometheus text exposition.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The rows of `sql` (psql -tA, fields separated by a space) on the database
/// `database_url` names, on a blocking thread; empty when psql fails.
async fn psql_rows(database_url: &str, sql: &'static str) -> Vec<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(out) = std::process::Command::new("psql")
            .args([&url, "-qtA", "-F", " ", "-c", sql])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Events published and deliveries handled so far (by the service whose queue they
/// came from), summed over every replica.
async fn event_counts(fleet: &Fleet) -> (f64, BTreeMap<String, f64>) {
    let (mut published, mut consumed) = (0.0, BTreeMap::new());
    for (service, replicas) in fleet.every_service() {
        for url in replicas.all() {
            let Ok(resp) = fleet.http.get(format!("{url}/metrics")).send().await else {
                continue;
            };
            let text = resp.text().await.unwrap_or_default();
            published += counter_sum(&text, "outbox_published_total");
            *consumed.entry(service.to_owned()).or_insert(0.0) +=
                counter_sum(&text, "events_consumed_total");
        }
    }
    (published, consumed)
}

/// Waits (up to `timeout`) until no event has been published or handled for two
/// seconds: the work an earlier step set off (registrations, say) is done and does not
/// count into what comes next.
pub async fn quiesce(fleet: &Fleet, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = event_counts(fleet).await;
    let mut calm = 0;
    while calm < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = event_counts(fleet).await;
        calm = if now == last { calm + 1 } else { 0 };
        last = now;
    }
}

impl Snapshot {
    pub async fn take(fleet: &Fleet, run_dir: &Path, database_url: Option<&str>) -> Self {
        let (published, consumed) = event_counts(fleet).await;
        let (commits, rows) = match database_url {
            Some(url) => {
                let commits = psql_rows(
                    url,
                    "select xact_commit from pg_stat_database where datname = current_database()",
                )
                .await
                .first()
                .and_then(|r| r.first()?.parse().ok());
                let rows = psql_rows(
                    url,
                    "select schemaname, sum(n_tup_ins + n_tup_upd + n_tup_del) \
                     from pg_stat_user_tables group by 1",
                )
                .await
                .into_iter()
                .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.parse().ok()?)))
                .collect();
                (commits, rows)
            }
            None => (None, BTreeMap::new()),
        };
        Self {
            cpu: cpu_seconds(run_dir),
            commits,
            rows,
            published,
            consumed,
        }
    }

    /// What happened from `self` to `later`, per unit of work (`units` at least 1).
    pub fn per_unit(&self, later: &Snapshot, units: usize) -> PerUnit {
        let n = units.max(1) as f64;
        let mut cpu_ms: BTreeMap<String, f64> = later
            .cpu
            .iter()
            .map(|(c, s)| {
                let before = self.cpu.get(c).copied().unwrap_or(0.0);
                (
                    c.clone(),
                    ((s - before).max(0.0) * 1000.0 / n * 10.0).round() / 10.0,
                )
            })
            .collect();
        let generator_cpu_ms = cpu_ms.remove(GENERATOR).unwrap_or(0.0);
        PerUnit {
            units,
            generator_cpu_ms,
            cpu_ms_total: (cpu_ms.values().sum::<f64>() * 10.0).round() / 10.0,
            cpu_ms,
            commits: match (self.commits, later.commits) {
                (Some(a), Some(b)) => Some(((b - a) / n * 10.0).round() / 10.0),
                _ => None,
            },
            rows_written: later
                .rows
                .iter()
                .map(|(schema, r)| {
                    let before = self.rows.get(schema).copied().unwrap_or(0.0);
                    (schema.clone(), ((r - before) / n * 10.0).round() / 10.0)
                })
                .filter(|(_, r)| *r > 0.0)
                .collect(),
            events_published: ((later.published - self.published) / n * 10.0).round() / 10.0,
            deliveries_handled: ((later.consumed.values().sum::<f64>()
                - self.consumed.values().sum::<f64>())
                / n
                * 10.0)
                .round()
                / 10.0,
            deliveries_by_queue: later
                .consumed
                .iter()
                .map(|(q, c)| {
                    let before = self.consumed.get(q).copied().unwrap_or(0.0);
                    (q.clone(), ((c - before) / n * 10.0).round() / 10.0)
                })
                .filter(|(_, c)| *c > 0.0)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels_and_nothing_else() {
        let text = "# HELP events_consumed_total Deliveries handled.\n\
                    # TYPE events_consumed_total counter\n\
                    events_consumed_total{event_type=\"a\",outcome=\"ok\"} 3\n\
                    events_consumed_total{event_type=\"b\",outcome=\"ok\"} 4.5\n\
                    events_consumed_total_other 100\n\
                    outbox_published_total 7\n";
        assert_eq!(counter_sum(text, "events_consumed_total"), 7.5);
        assert_eq!(counter_sum(text, "outbox_published_total"), 7.0);
        assert_eq!(counter_sum(text, "missing_total"), 0.0);
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        let me = std::process::id().to_string();
        assert!(cpu_ticks(&me).is_some_and(|t| t >= 0.0));
        assert!(cpu_ticks("0").is_none());
    }

    #[test]
    fn per_unit_divides_the_difference() {
        let before = Snapshot {
            cpu: BTreeMap::from([("order".to_owned(), 1.0)]),
            commits: Some(100.0),
            rows: BTreeMap::from([("orders".to_owned(), 50.0)]),
            published: 10.0,
            consumed: BTreeMap::from([("order".to_owned(), 20.0)]),
        };
        let after = Snapshot {
            cpu: BTreeMap::from([
                ("order".to_owned(), 1.5),
                ("postgresql".to_owned(), 1.0),
                (GENERATOR.to_owned(), 0.2),
            ]),
            commits: Some(500.0),
            rows: BTreeMap::from([("orders".to_owned(), 150.0), ("cart".to_owned(), 0.0)]),
            published: 110.0,
            consumed: BTreeMap::from([("order".to_owned(), 170.0), ("cart".to_owned(), 50.0)]),
        };
        let per = before.per_unit(&after, 10);
        assert_eq!(per.cpu_ms["order"], 50.0);
        assert_eq!(per.cpu_ms["postgresql"], 100.0);
        assert_eq!(per.cpu_ms_total, 150.0);
        assert_eq!(per.generator_cpu_ms, 20.0);
        assert_eq!(per.commits, Some(40.0));
        assert_eq!(
            per.rows_written,
            BTreeMap::from([("orders".to_owned(), 10.0)])
        );
        assert_eq!(per.events_published, 10.0);
        assert_eq!(per.deliveries_handled, 20.0);
        assert_eq!(per.deliveries_by_queue["order"], 15.0);
        assert_eq!(per.deliveries_by_queue["cart"], 5.0);
    }
}
