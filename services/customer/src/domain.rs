//! Customer data that cannot be invalid once parsed, and the proxies whose forwarded
//! address is believed (which client a login attempt counts against).

use std::net::IpAddr;

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use ipnet::IpNet;
use mp_common::contact;

/// A syntactically valid email address, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        contact::parse_email(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness and login compare: lower case.
    pub fn normalized(&self) -> String {
        normalize_email(&self.0)
    }
}

pub use contact::{normalize_email, parse_phone};

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;

/// Length is what makes a password strong (NIST SP 800-63B); we also refuse passwords
/// that are a single repeated character, contain the email's local part, or are on a
/// short list of the most common ones.
/// Longest email a login looks up (RFC 5321's limit for a path).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest password a login hashes: well above the 128 characters registration takes,
/// even in four-byte characters, and far below what would make argon2 a weapon.
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn check_password(password: &str, email: Option<&str>) -> Result<(), String> {
    let len = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(format!(
            "must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
        ));
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err("is too easy to guess: use more different characters".into());
    }
    const COMMON: [&str; 8] = [
        "password12",
        "password123",
        "1234567890",
        "qwertyuiop",
        "0123456789",
        "letmein123",
        "iloveyou12",
        "welcome123",
    ];
    if COMMON.contains(&password.to_lowercase().as_str()) {
        return Err("is one of the most common passwords".into());
    }
    if let Some(local) = email
        .and_then(|e| e.split('@').next())
        .filter(|l| l.len() >= 4)
        && password.to_lowercase().contains(&local.to_lowercase())
    {
        return Err("must not contain your email address".into());
    }
    Ok(())
}

/// The longest display name, in characters (as sent, before trimming).
pub const NAME_MAX: usize = 100;

/// What [`parse_name`] accepts, for the API document: no control character (Unicode
/// `Cc`), and at least one character that is not white space (what `str::trim` removes).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$";

/// A display name: 1 to [`NAME_MAX`] characters as sent, not only white space, no
/// control characters; stored trimmed. The rule judges the name as sent, so the API
/// document can state it exactly ([`NAME_PATTERN`], `maxLength`).
pub fn parse_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() || raw.chars().count() > NAME_MAX || raw.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters, not only spaces, without control characters");
    }
    Ok(name.to_owned())
}

/// Hashes with Argon2id (the crate's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client: the peer, or, from a trusted proxy, the right-most hop of the
    /// `X-Forwarded-For` values none of them made (if every hop is one of them, the
    /// left-most). A client can write anything into the header; what the proxies append
    /// comes after it, so the right-most untrusted hop is the one a proxy saw.
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        if !self.trusts(peer) {
            return peer.to_string();
        }
        let hops: Vec<IpAddr> = forwarded_for
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(hops.first())
            .unwrap_or(&peer)
            .to_string()
    }
}

/// Parses `TRUSTED_PROXIES`: comma-separated addresses or CIDR ranges.
pub fn parse_proxies(list: &str) -> Result<TrustedProxies, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is no address or CIDR range"))
        })
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(trusted: &str, peer: &str, forwarded: &[&str]) -> String {
        parse_proxies(trusted)
            .unwrap()
            .client(Some(peer.parse().unwrap()), forwarded.iter().copied())
    }

    #[test]
    fn trusted_proxy_lists_take_addresses_and_ranges() {
        assert_eq!(parse_proxies("").unwrap(), TrustedProxies::default());
        let nets = parse_proxies("10.0.0.0/8, 127.0.0.1 ,::1").unwrap();
        assert_eq!(nets.0.len(), 3);
        assert!(parse_proxies("kong").is_err());
    }

    #[test]
    fn the_client_is_the_right_most_hop_no_trusted_proxy_made() {
        // No trusted proxy: the header is ignored.
        assert_eq!(
            address("", "198.51.100.7", &["203.0.113.9"]),
            "198.51.100.7"
        );
        // Behind Kong (10.0.0.5): the hop Kong appended, whatever the client wrote.
        assert_eq!(
            address("10.0.0.0/8", "10.0.0.5", &["203.0.113.9, 198.51.100.66"]),
            "198.51.100.66"
        );
        assert_eq!(
            address(
                "10.0.0.0/8",
                "10.0.0.5",
                &["203.0.113.9", "198.51.100.66, 10.1.2.3"]
            ),
            "198.51.100.66"
        );
        // Every hop a proxy: the left-most; no header: the peer.
        assert_eq!(address("10.0.0.0/8", "10.0.0.5", &["10.9.9.9"]), "10.9.9.9");
        assert_eq!(address("10.0.0.0/8", "10.0.0.5", &[]), "10.0.0.5");
    }

    #[test]
    fn emails_are_trimmed_validated_and_normalized() {
        let e = Email::parse("  Ada.Lovelace@Example.ORG ").unwrap();
        assert_eq!(e.as_str(), "Ada.Lovelace@Example.ORG");
        assert_eq!(e.normalized(), "ada.lovelace@example.org");
        for bad in ["", "no-at-sign", "a@b", "@example.org", "a b@example.org"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        assert!(check_password("short", None).is_err());
        assert!(check_password("aaaaaaaaaaaa", None).is_err());
        assert!(check_password("Password123", None).is_err());
        assert!(check_password("ada.lovelace-rocks", Some("ada.lovelace@example.org")).is_err());
        assert!(check_password(&"x1".repeat(65), None).is_err());
        assert!(check_password("correct horse battery", Some("ada@example.org")).is_ok());
    }

    #[test]
    fn names_are_judged_as_sent_and_stored_trimmed() {
        assert_eq!(parse_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(parse_name(&"x".repeat(NAME_MAX)).unwrap().len(), NAME_MAX);
        for bad in [
            "",
            "   ",
            "\u{3000}\u{a0}",
            "Ada\nLovelace",
            "Ada\u{85}",
            &"x".repeat(NAME_MAX + 1),
            &format!(" {}", "x".repeat(NAME_MAX)),
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_verify_only_the_right_password() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
