//! Token issuing and verification, shared by every service: the claims here, the keys
//! and JWKS in `tokens`, the request extractors in `extractors`.
//!
//! Access tokens are short-lived ES256 JWTs whose header names the signing key (`kid`).
//! Only the customer service holds the private user key; every other service verifies
//! with public keys only: those configured (`TRUSTED_KEYS`) and those the customer
//! service's JWKS lists, read again every `JWKS_REFRESH_SECS` and when a token names a
//! key not seen yet (a rotation), so a key that left the JWKS stops being trusted. Each service signs
//! its service tokens with a key of its own (see [`crate::keys`]). A user token carries the customer id, the login
//! session id (`sid`), roles and vendor memberships; every service checks it itself and
//! also checks that the session was not revoked (logout revokes at once, through Redis).
//! Service tokens have their own audience, so a user token never opens an internal
//! endpoint and a service token never acts as a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header, encode};
use mp_events::Service;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::CommonConfig;
use crate::keys::{self, KeyUse, PublicKey, Signer};
use crate::problem::{ApiError, Problem};
use crate::redis::RedisKeys;

pub const ISSUER: &str = "marketplace";
pub const USER_AUDIENCE: &str = "marketplace-api";
/// The prefix of a service token's audience: a service token names the one service it
/// is for (`marketplace-internal/order`), and only that service takes it.
pub const SERVICE_AUDIENCE: &str = "marketplace-internal";

/// The audience of service tokens meant for `target`.
pub fn service_audience(target: Service) -> String {
    format!("{SERVICE_AUDIENCE}/{target}")
}
pub const ROLE_ADMIN: &str = "admin";
pub const ROLE_CUSTOMER: &str = "customer";
pub const ROLE_VENDOR: &str = "vendor";
pub const ROLE_SERVICE: &str = "service";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Customer id, or the calling service's name.
    pub sub: String,
    /// Login session of a user token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Vendors the customer is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vendors: Vec<Uuid>,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// Leeway between the clocks of the token's issuer and the verifier that records a new
/// session epoch after a Redis loss.
const EPOCH_LEEWAY_SECS: i64 = 5;

fn invalid_token() -> Problem {
    Problem::unauthorized("The access token is invalid or expired.")
}

mod extractors;
mod tokens;

pub use extractors::{AuthUser, Authenticator, ServiceCaller};
pub use tokens::TokenKeys;

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use sha2::Digest;

    use super::*;

    fn signer(usage: KeyUse) -> Signer {
        keys::signer_from_pem(&keys::generate_pem(), usage).unwrap()
    }

    fn issuer(user: &Signer) -> TokenKeys {
        TokenKeys::new(
            Some(user.clone()),
            vec![],
            vec![],
            None,
            Duration::from_secs(60),
        )
    }

    fn verifier(trusted: Vec<PublicKey>) -> TokenKeys {
        TokenKeys::new(None, vec![], trusted, None, Duration::from_secs(60))
    }

    fn user_token(keys: &TokenKeys) -> String {
        keys.user_token(
            Uuid::new_v4(),
            Uuid::new_v4(),
            vec!["customer".into()],
            vec![],
        )
        .0
    }

    #[test]
    fn a_user_token_verifies_with_the_public_key_and_its_audience_only() {
        let user = signer(KeyUse::User);
        let token = user_token(&issuer(&user));
        let v = verifier(vec![user.public.clone()]);
        assert!(v.verify(&token, USER_AUDIENCE).is_ok());
        assert_eq!(v.verify(&token, SERVICE_AUDIENCE).unwrap_err().status, 401);
        let other = signer(KeyUse::User);
        assert!(
            verifier(vec![other.public])
                .verify(&token, USER_AUDIENCE)
                .is_err()
        );
    }

    #[test]
    fn a_service_key_signs_for_its_own_service_only() {
        let cart = signer(KeyUse::Service(Service::Cart));
        // A key of the cart service presented as the order service's: refused.
        let forger = TokenKeys::new(
            None,
            vec![(Service::Order, cart.clone())],
            vec![],
            None,
            Duration::from_secs(60),
        );
        let (forged, _) = forger.service_token(Service::Order, Service::Inventory);
        let v = verifier(vec![cart.public.clone()]);
        let for_inventory = service_audience(Service::Inventory);
        assert!(v.verify(&forged, &for_inventory).is_err());
        let honest = TokenKeys::new(
            None,
            vec![(Service::Cart, cart)],
            vec![],
            None,
            Duration::from_secs(60),
        );
        let (token, _) = honest.service_token(Service::Cart, Service::Inventory);
        assert_eq!(v.verify(&token, &for_inventory).unwrap().sub, "cart");
        // Meant for inventory: no other service takes it.
        assert!(v.verify(&token, &service_audience(Service::Order)).is_err());
        assert!(v.verify(&token, SERVICE_AUDIENCE).is_err());
        // A user key cannot sign service tokens, nor a service key user tokens.
        assert!(v.verify(&token, USER_AUDIENCE).is_err());
    }

    #[test]
    fn tampered_tokens_and_other_algorithms_are_rejected() {
        let user = signer(KeyUse::User);
        let token = user_token(&issuer(&user));
        let v = verifier(vec![user.public.clone()]);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(v.verify(&parts.join("."), USER_AUDIENCE).is_err());
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(user.kid.clone());
        let claims = v.verify(&token, USER_AUDIENCE).unwrap();
        let hs = encode(&header, &claims, &EncodingKey::from_secret(b"guess")).unwrap();
        assert!(v.verify(&hs, USER_AUDIENCE).is_err());
    }

    #[test]
    fn development_keys_are_refused_outside_development_mode() {
        let mut config = CommonConfig::from_env();
        config.dev_mode = false;
        config.jwt_signing_key = None;
        config.service_key = None;
        let err = TokenKeys::for_service(&config, Some(Service::Cart)).unwrap_err();
        assert!(err.to_string().contains("SERVICE_KEY"), "{err}");
        config.service_key = Some(keys::generate_pem());
        assert!(TokenKeys::for_service(&config, Some(Service::Cart)).is_ok());
        let dev_pem = {
            use p256::pkcs8::EncodePrivateKey;
            let seed = sha2::Sha256::digest("marketplace development key: user");
            let secret = p256::SecretKey::from_slice(&seed).unwrap();
            secrecy::SecretString::from(
                secret
                    .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                    .unwrap()
                    .to_string(),
            )
        };
        config.jwt_signing_key = Some(dev_pem);
        let err = TokenKeys::for_service(&config, Some(Service::Cart)).unwrap_err();
        assert!(err.to_string().contains("development key"), "{err}");
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
    }
}
