//! The headers the consumer writes on retried and dead-lettered messages, and reading
//! them back (here and in the dead-letter tooling).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

pub const ATTEMPTS_HEADER: &str = "x-attempts";
pub const REASON_HEADER: &str = "x-dead-letter-reason";
pub const HANDLER_HEADER: &str = "x-dead-letter-handler";
pub const DEAD_LETTERED_AT_HEADER: &str = "x-dead-lettered-at";
pub const ROUTING_KEY_HEADER: &str = "x-original-routing-key";

/// The attempt a delivery is: one more than the attempts recorded on it.
pub(super) fn attempt_of(props: &BasicProperties) -> u32 {
    header_u32(props, ATTEMPTS_HEADER).unwrap_or(0) + 1
}

pub(crate) fn headers_of(props: &BasicProperties) -> FieldTable {
    props.headers().clone().unwrap_or_default()
}

pub(crate) fn header_u32(props: &BasicProperties, name: &str) -> Option<u32> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        _ => None,
    }
}

pub(crate) fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{LongString, ShortString};

    use super::*;

    fn with(name: &str, value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(name.into(), value);
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn a_first_delivery_without_headers_is_attempt_one() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        assert_eq!(attempt_of(&with("other", AMQPValue::LongUInt(7))), 1);
    }

    #[test]
    fn a_retried_delivery_is_one_attempt_past_the_recorded_ones() {
        assert_eq!(
            attempt_of(&with(ATTEMPTS_HEADER, AMQPValue::LongUInt(3))),
            4
        );
    }

    #[test]
    fn an_attempt_count_of_any_integer_width_is_read() {
        let read = |v| header_u32(&with(ATTEMPTS_HEADER, v), ATTEMPTS_HEADER);
        assert_eq!(read(AMQPValue::LongUInt(5)), Some(5));
        assert_eq!(read(AMQPValue::LongInt(5)), Some(5));
        assert_eq!(read(AMQPValue::LongLongInt(5)), Some(5));
        assert_eq!(read(AMQPValue::ShortInt(5)), Some(5));
        assert_eq!(read(AMQPValue::ShortUInt(5)), Some(5));
    }

    #[test]
    fn a_count_that_is_negative_too_large_or_not_a_number_is_no_count() {
        let read = |v| header_u32(&with(ATTEMPTS_HEADER, v), ATTEMPTS_HEADER);
        assert_eq!(read(AMQPValue::LongInt(-1)), None);
        assert_eq!(read(AMQPValue::ShortInt(-1)), None);
        assert_eq!(read(AMQPValue::LongLongInt(i64::from(u32::MAX) + 1)), None);
        assert_eq!(read(AMQPValue::LongString(LongString::from("3"))), None);
        // A count that cannot be read counts as none recorded.
        assert_eq!(
            attempt_of(&with(ATTEMPTS_HEADER, AMQPValue::LongInt(-1))),
            1
        );
    }

    #[test]
    fn a_text_header_is_read_from_long_and_short_strings_only() {
        let read = |v| header_str(&with(REASON_HEADER, v), REASON_HEADER);
        assert_eq!(
            read(AMQPValue::LongString(LongString::from("boom"))).as_deref(),
            Some("boom")
        );
        assert_eq!(
            read(AMQPValue::ShortString(ShortString::from("short"))).as_deref(),
            Some("short")
        );
        assert_eq!(read(AMQPValue::LongUInt(1)), None);
        assert_eq!(header_str(&BasicProperties::default(), REASON_HEADER), None);
        assert_eq!(
            header_str(&with(REASON_HEADER, AMQPValue::LongUInt(1)), "missing"),
            None
        );
    }

    #[test]
    fn the_headers_of_a_message_without_any_are_empty() {
        assert!(headers_of(&BasicProperties::default()).inner().is_empty());
        let kept = headers_of(&with(ATTEMPTS_HEADER, AMQPValue::LongUInt(2)));
        assert_eq!(
            kept.inner().get(ATTEMPTS_HEADER),
            Some(&AMQPValue::LongUInt(2))
        );
    }
}
