//! Rules of notifications, without I/O: channels, statuses, which order changes are
//! told to the customer, how money reads, how long an SMS may be, when to retry.

use std::time::Duration;

use mp_events::Money;
use mp_events::catalog::OrderStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        match s {
            "email" => Ok(Channel::Email),
            "sms" => Ok(Channel::Sms),
            _ => Err("must be email or sms"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its first or next attempt.
    Pending,
    Sent,
    /// Given up, with the reason in `last_error`.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Status::Pending),
            "sent" => Some(Status::Sent),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// Whom a notification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Customer,
    Vendor,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Customer => "customer",
            Audience::Vendor => "vendor",
        }
    }
}

/// The template telling the customer about an order's new status, if that status is
/// one the customer is told about.
pub fn order_template(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::Confirmed => Some("order_confirmed"),
        OrderStatus::PaymentFailed => Some("order_payment_failed"),
        OrderStatus::Rejected => Some("order_rejected"),
        OrderStatus::Cancelled => Some("order_cancelled"),
        _ => None,
    }
}

pub const SHIPPED_TEMPLATE: &str = "order_shipped";
pub const LOW_STOCK_TEMPLATE: &str = "low_stock";

/// Every template name, for metrics that show zeros from the start.
pub const TEMPLATES: [&str; 6] = [
    "order_confirmed",
    "order_payment_failed",
    "order_rejected",
    "order_cancelled",
    SHIPPED_TEMPLATE,
    LOW_STOCK_TEMPLATE,
];

/// An amount in its currency's major units with the ISO code: `1,234.50 EUR`,
/// `1999 JPY`.
pub fn format_money(money: &Money) -> String {
    let currency = money.currency();
    let exponent = u32::from(currency.exponent().unwrap_or(2));
    let sign = if money.amount() < 0 { "-" } else { "" };
    let abs = money.amount().unsigned_abs();
    let scale = 10u64.pow(exponent);
    let (major, minor) = (abs / scale, abs % scale);
    let major = group_thousands(major);
    if exponent == 0 {
        format!("{sign}{major} {currency}")
    } else {
        format!(
            "{sign}{major}.{minor:0width$} {currency}",
            width = exponent as usize
        )
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Characters of the GSM 03.38 basic set (and its extension table, which costs two).
fn gsm_cost(c: char) -> Option<usize> {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENDED: &str = "^{}\\[~]|€";
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The most an SMS may hold in two segments: 2 × 153 GSM-7 septets, or 2 × 67 UCS-2
/// characters when any character is outside the GSM alphabet.
pub const SMS_GSM_LIMIT: usize = 306;
pub const SMS_UCS2_LIMIT: usize = 134;

/// How many segments `text` takes.
pub fn sms_segments(text: &str) -> usize {
    match text.chars().map(gsm_cost).sum::<Option<usize>>() {
        Some(septets) if septets <= 160 => 1,
        Some(septets) => septets.div_ceil(153),
        None => {
            let units: usize = text.chars().map(char::len_utf16).sum();
            if units <= 70 { 1 } else { units.div_ceil(67) }
        }
    }
}

/// `text` with whitespace runs collapsed, cut (with `...`) to fit in two segments.
pub fn fit_sms(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if sms_segments(&text) <= 2 {
        return text;
    }
    let mut out = String::new();
    for c in text.chars() {
        let candidate = format!("{out}{c}...");
        if sms_segments(&candidate) > 2 {
            break;
        }
        out.push(c);
    }
    format!("{}...", out.trim_end())
}

/// Retry schedule of a message: the code base's one backoff curve
/// ([`mp_events::backoff`]), from `min` doubling to at most `max`, with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
    /// Attempts before a refused message is failed.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`, after `attempts` attempts (1 or more).
    pub fn delay(&self, attempts: u32) -> Duration {
        mp_events::backoff::delay_for_attempt(self.min, self.max, attempts)
    }
}

/// Why a delivery attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider could not be reached or did not answer (connection refused, timeout,
    /// 5xx, throttled): the message waits, however long the outage lasts.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this message for now: retried until the attempts run out.
    #[error("refused for now: {0}")]
    Transient(String),
    /// The provider refused this message for good (unknown mailbox, invalid number).
    #[error("refused: {0}")]
    Permanent(String),
}

/// What becomes of a message after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    RetryIn(Duration),
    Fail,
}

impl RetryPolicy {
    /// An outage never fails a message; a refusal fails it at once if permanent, or
    /// after the last attempt.
    pub fn after_failure(&self, error: &SendError, attempts: u32) -> AfterFailure {
        match error {
            SendError::Unavailable(_) => AfterFailure::RetryIn(self.delay(attempts)),
            SendError::Transient(_) if attempts < self.max_attempts => {
                AfterFailure::RetryIn(self.delay(attempts))
            }
            _ => AfterFailure::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use mp_events::Currency;

    use super::*;

    #[test]
    fn money_reads_in_major_units_of_its_currency() {
        assert_eq!(format_money(&Money::new(1999, Currency::EUR)), "19.99 EUR");
        assert_eq!(
            format_money(&Money::new(123_450, Currency::USD)),
            "1,234.50 USD"
        );
        assert_eq!(
            format_money(&Money::parse(1999, "JPY").unwrap()),
            "1,999 JPY"
        );
        assert_eq!(format_money(&Money::new(5, Currency::EUR)), "0.05 EUR");
        assert_eq!(
            format_money(&Money::parse(12_345, "BHD").unwrap()),
            "12.345 BHD"
        );
    }

    #[test]
    fn only_final_and_confirmed_statuses_are_told() {
        assert_eq!(
            order_template(OrderStatus::Confirmed),
            Some("order_confirmed")
        );
        assert_eq!(order_template(OrderStatus::Paid), None);
        assert_eq!(order_template(OrderStatus::Pending), None);
    }

    #[test]
    fn an_sms_is_cut_to_two_segments() {
        let short = "Your order is confirmed.";
        assert_eq!(fit_sms(short), short);
        assert_eq!(sms_segments(short), 1);

        let long = "word ".repeat(200);
        let fitted = fit_sms(&long);
        assert!(fitted.ends_with("..."));
        assert_eq!(sms_segments(&fitted), 2);
        assert!(fitted.len() <= SMS_GSM_LIMIT);

        let unicode = "Bestellung 🎉 ".repeat(40);
        let fitted = fit_sms(&unicode);
        assert_eq!(sms_segments(&fitted), 2);
        assert!(fitted.encode_utf16().count() <= SMS_UCS2_LIMIT);
    }

    #[test]
    fn outages_wait_and_refusals_end_after_the_last_attempt() {
        let policy = RetryPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_attempts: 3,
        };
        let down = SendError::Unavailable("connection refused".into());
        assert!(matches!(
            policy.after_failure(&down, 50),
            AfterFailure::RetryIn(d) if d <= Duration::from_secs(20)
        ));
        let busy = SendError::Transient("451 try later".into());
        assert!(matches!(
            policy.after_failure(&busy, 2),
            AfterFailure::RetryIn(_)
        ));
        assert_eq!(policy.after_failure(&busy, 3), AfterFailure::Fail);
        let gone = SendError::Permanent("550 no such mailbox".into());
        assert_eq!(policy.after_failure(&gone, 1), AfterFailure::Fail);
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 3,
        };
        assert!(policy.delay(1) >= Duration::from_millis(100));
        assert!(policy.delay(1) < Duration::from_millis(250));
        assert!(policy.delay(30) <= Duration::from_secs(2));
    }
}
