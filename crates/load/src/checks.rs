//! The business invariants, checked through the public APIs after a run (and after
//! faults): what the shop's operator would look at.
//!
//! - every accepted order ends terminal, or waits where an operator sees it
//!   (`/api/admin/orders/stuck`);
//! - the scarce product never oversold: units in confirmed orders <= its stock;
//! - the ledger equals the stock: the movements of each product sum to its on-hand,
//!   and on-hand is the initial stock less what confirmed orders took;
//! - every confirmed order has exactly one stock commit, one successful charge and no
//!   refund, one confirmation email and one SMS, both sent (not merely recorded);
//! - every failed order has its stock back (commits and releases cancel out) and any
//!   charge refunded;
//! - no dead-letter queue holds a message other than the bad ones the run sent itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::shop::{Placed, Shop, is_terminal};

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// The figure behind the verdict, as printed.
    pub figure: String,
}

fn check(name: impl Into<String>, ok: bool, figure: String) -> Check {
    Check {
        name: name.into(),
        ok,
        figure,
    }
}

async fn get(fleet: &Fleet, url: String, token: &str) -> Value {
    for _ in 0..20 {
        if let Ok(a) = fleet
            .call(None, Method::GET, url.clone(), Some(token), None, &[])
            .await
            && a.status.is_success()
        {
            return a.body;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Value::Null
}

/// Every movement of a product, all pages.
async fn movements(fleet: &Fleet, product: Uuid, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/inventory/{product}/movements?limit=100",
            fleet.inventory.pick()
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get(fleet, url, token).await;
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

/// Waits (up to `settle`) for every order to end, then checks everything.
pub async fn run(
    fleet: &Fleet,
    shop: &Shop,
    placed: &[Placed],
    settle: Duration,
    own_dead_letters: usize,
    dead_before: usize,
) -> Vec<Check> {
    let admin = &fleet.admin_token();
    // 1. Every order ends (or is visibly waiting).
    let deadline = Instant::now() + settle;
    let mut orders: HashMap<Uuid, Value> = HashMap::new();
    loop {
        let pending: Vec<&Placed> = placed
            .iter()
            .filter(|p| {
                !orders
                    .get(&p.order_id)
                    .is_some_and(|o| o["status"].as_str().is_some_and(is_terminal))
            })
            .collect();
        let read: Vec<(Uuid, Value)> = futures::stream::iter(pending)
            .map(|p| async move {
                let url = format!("{}/api/orders/{}", fleet.order.pick(), p.order_id);
                (p.order_id, get(fleet, url, admin).await)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let settled = read
            .iter()
            .all(|(_, o)| o["status"].as_str().is_some_and(is_terminal));
        orders.extend(read);
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for o in orders.values() {
        *by_status
            .entry(o["status"].as_str().unwrap_or("unreadable").to_owned())
            .or_default() += 1;
    }
    let open: Vec<Uuid> = orders
        .iter()
        .filter(|(_, o)| !o["status"].as_str().is_some_and(is_terminal))
        .map(|(id, _)| *id)
        .collect();
    let stuck = get(
        fleet,
        format!("{}/api/admin/orders/stuck?limit=100", fleet.order.pick()),
        admin,
    )
    .await;
    let visible: Vec<String> = stuck["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let unseen = open
        .iter()
        .filter(|id| !visible.contains(&id.to_string()))
        .count();
    let mut statuses: Vec<_> = by_status.iter().collect();
    statuses.sort();
    let mut checks = vec![check(
        "every order ends terminal or visibly waiting",
        unseen == 0,
        format!(
            "{} orders: {}; {} still open, {} of them not listed as stuck",
            orders.len(),
            statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            open.len(),
            unseen
        ),
    )];

    // 2. Per order: charges, refunds, notifications.
    let confirmed = |o: &Value| {
        matches!(
            o["status"].as_str(),
            Some("confirmed" | "shipped" | "delivered")
        )
    };
    let failed = |o: &Value| {
        matches!(
            o["status"].as_str(),
            Some("payment_failed" | "rejected" | "cancelled")
        )
    };
    let payments = |o: &Value, kind: &str| {
        o["payments"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter(|p| p["kind"] == kind && p["status"] == "succeeded")
                .count()
        })
    };
    let (mut bad_charges, mut unrefunded, mut confirmed_n, mut failed_n) = (0, 0, 0, 0);
    for o in orders.values() {
        if confirmed(o) {
            confirmed_n += 1;
            if payments(o, "charge") != 1 || payments(o, "refund") != 0 {
                bad_charges += 1;
            }
        } else if failed(o) {
            failed_n += 1;
            if payments(o, "charge") > payments(o, "refund") {
                unrefunded += 1;
            }
        }
    }
    checks.push(check(
        "every confirmed order has exactly one successful charge and no refund",
        bad_charges == 0,
        format!("{confirmed_n} confirmed, {bad_charges} with another count"),
    ));
    checks.push(check(
        "every failed order has any charge refunded",
        unrefunded == 0,
        format!("{failed_n} failed, {unrefunded} keeping money"),
    ));
    let confirmed_ids: Vec<Uuid> = orders
        .iter()
        .filter(|(_, o)| confirmed(o))
        .map(|(id, _)| *id)
        .collect();
    let notified: Vec<(usize, usize)> = futures::stream::iter(confirmed_ids.iter())
        .map(|id| {
            // As the admin: a customer's session may be gone (a Redis flush ends them).
            let token = admin;
            async move {
                // The notifications follow the confirmation within hops, or after their
                // backoff when a fault held them up: wait for them.
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let url = format!(
                        "{}/api/notifications?order_id={id}&limit=100",
                        fleet.notification.pick()
                    );
                    let list = get(fleet, url, token).await;
                    let count = |channel: &str| {
                        list["items"].as_array().map_or(0, |items| {
                            items
                                .iter()
                                .filter(|n| {
                                    n["channel"] == channel
                                        && n["template"] == "order_confirmed"
                                        && n["status"] == "sent"
                                })
                                .count()
                        })
                    };
                    let (email, sms) = (count("email"), count("sms"));
                    if (email >= 1 && sms >= 1) || Instant::now() > deadline {
                        return (email, sms);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wrong = notified.iter().filter(|(e, s)| *e != 1 || *s != 1).count();
    checks.push(check(
        "every confirmed order has one confirmation email and one SMS sent",
        wrong == 0,
        format!(
            "{} confirmed orders read, {wrong} without exactly one of each",
            notified.len()
        ),
    ));

    // 3. Stock and ledger.
    let mut sold: HashMap<Uuid, i64> = HashMap::new();
    for o in orders.values().filter(|o| confirmed(o)) {
        for line in o["items"].as_array().into_iter().flatten() {
            if let Some(p) = line["product_id"].as_str().and_then(|p| p.parse().ok()) {
                *sold.entry(p).or_default() += line["quantity"].as_i64().unwrap_or(0);
            }
        }
    }
    let scarce_sold = sold.get(&shop.scarce).copied().unwrap_or(0);
    checks.push(check(
        "the scarce product is never oversold",
        scarce_sold <= shop.scarce_stock,
        format!(
            "{scarce_sold} units in confirmed orders of {} in stock; {} shoppers got one into an accepted checkout",
            shop.scarce_stock,
            placed.iter().filter(|p| p.scarce).count()
        ),
    ));
    for (name, product, initial) in [
        ("ample", shop.ample, shop.ample_stock),
        ("scarce", shop.scarce, shop.scarce_stock),
    ] {
        let stock = get(
            fleet,
            format!("{}/api/inventory/{product}", fleet.inventory.pick()),
            admin,
        )
        .await;
        let on_hand = stock["on_hand"].as_i64().unwrap_or(i64::MIN);
        let moves = movements(fleet, product, admin).await;
        let ledger: i64 = moves.iter().filter_map(|m| m["delta"].as_i64()).sum();
        let expected = initial - sold.get(&product).copied().unwrap_or(0);
        checks.push(check(
            format!("the ledger equals the stock ({name} product)"),
            ledger == on_hand && on_hand == expected,
            format!(
                "on hand {on_hand}, ledger sum {ledger} over {} movements, initial less confirmed {expected}; reserved {}",
                moves.len(),
                stock["reserved"]
            ),
        ));
        // Per order: confirmed ones committed once, failed ones net zero.
        let mut net: HashMap<&str, (i64, i64)> = HashMap::new();
        for m in &moves {
            if let Some(r) = m["reference"].as_str() {
                let e = net.entry(r).or_default();
                match m["kind"].as_str() {
                    Some("order") => e.0 += 1,
                    Some("order_release") => e.1 += 1,
                    _ => {}
                }
            }
        }
        let mut wrong = 0;
        for (id, o) in &orders {
            let holds = o["items"]
                .as_array()
                .is_some_and(|ls| ls.iter().any(|l| l["product_id"] == product.to_string()));
            if !holds {
                continue;
            }
            let (commits, releases) = net.get(id.to_string().as_str()).copied().unwrap_or((0, 0));
            let right = if confirmed(o) {
                commits == 1 && releases == 0
            } else if failed(o) {
                commits == releases && commits <= 1
            } else {
                true
            };
            wrong += usize::from(!right);
        }
        checks.push(check(
            format!("one stock commit per confirmed order, none kept by a failed one ({name})"),
            wrong == 0,
            format!("{wrong} orders with another count"),
        ));
    }

    // 4. Dead letters.
    match crate::bad::dead_letters(fleet).await {
        Ok(letters) => {
            let healthy = letters.total.saturating_sub(letters.own + dead_before);
            checks.push(check(
                "no dead-letter queue holds a message a healthy run should have handled",
                healthy == 0 && letters.own >= own_dead_letters && letters.own_with_reason == letters.own,
                format!(
                    "{} dead letters ({dead_before} before the run): {} from the {own_dead_letters} bad messages this run sent ({} with their reason), {healthy} others",
                    letters.total, letters.own, letters.own_with_reason
                ),
            ));
        }
        Err(e) => checks.push(check(
            "no dead-letter queue holds a message a healthy run should have handled",
            false,
            format!("could not read the dead-letter queues: {e:#}"),
        )),
    }
    checks
}
