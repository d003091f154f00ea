//! Token issuing and verification, shared by every service.
//!
//! Access tokens are short-lived HS256 JWTs whose header names the signing key (`kid`),
//! so keys can rotate: `JWT_PREVIOUS_KEYS` keeps old keys valid for verification while
//! new tokens use the current one. A user token carries the customer id, the login
//! session id (`sid`), roles and vendor memberships; every service checks it itself and
//! also checks that the session was not revoked (logout revokes at once, through Redis).
//! Service tokens have their own audience, so a user token never opens an internal
//! endpoint and a service token never acts as a user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use mp_events::Service;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::CommonConfig;
use crate::problem::{ApiError, Problem};
use crate::redis::RedisKeys;

pub const ISSUER: &str = "marketplace";
pub const USER_AUDIENCE: &str = "marketplace-api";
pub const SERVICE_AUDIENCE: &str = "marketplace-internal";
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

/// The signing key and every key accepted for verification.
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    pub access_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(
        kid: &str,
        secret: &str,
        previous: &[(String, String)],
        access_ttl: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(secret.len() >= 32, "JWT_SECRET must be at least 32 bytes");
        let mut decoding = HashMap::new();
        decoding.insert(kid.to_owned(), DecodingKey::from_secret(secret.as_bytes()));
        for (k, s) in previous {
            decoding
                .entry(k.clone())
                .or_insert_with(|| DecodingKey::from_secret(s.as_bytes()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding,
            access_ttl,
        })
    }

    pub fn from_config(config: &CommonConfig) -> anyhow::Result<Self> {
        let previous = config
            .jwt_previous_keys
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, s)| (k.trim().to_owned(), s.trim().to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("JWT_PREVIOUS_KEYS entries are kid=secret"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::new(
            &config.jwt_kid,
            &config.jwt_secret,
            &previous,
            Duration::from_secs(config.access_token_ttl_secs),
        )
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// A user access token; returns it with its lifetime in seconds.
    pub fn user_token(
        &self,
        customer_id: Uuid,
        sid: Uuid,
        roles: Vec<String>,
        vendors: Vec<Uuid>,
    ) -> (String, u64) {
        let now = chrono::Utc::now().timestamp();
        let ttl = self.access_ttl.as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: USER_AUDIENCE.into(),
            sub: customer_id.to_string(),
            sid: Some(sid),
            roles,
            vendors,
            iat: now,
            exp: now + ttl as i64,
            jti: Uuid::new_v4(),
        };
        (self.sign(&claims), ttl)
    }

    /// A token a service presents to another service.
    pub fn service_token(&self, service: Service) -> (String, i64) {
        let now = chrono::Utc::now().timestamp();
        let exp = now + 300;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: SERVICE_AUDIENCE.into(),
            sub: service.as_str().into(),
            sid: None,
            roles: vec![ROLE_SERVICE.into()],
            vendors: vec![],
            iat: now,
            exp,
            jti: Uuid::new_v4(),
        };
        (self.sign(&claims), exp)
    }

    /// Checks signature (by key id), expiry, issuer and audience.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, Problem> {
        let invalid = || Problem::unauthorized("The access token is invalid or expired.");
        let header = decode_header(token).map_err(|_| invalid())?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or_else(invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|_| invalid())
    }
}

/// Verifies bearer tokens and knows revoked sessions.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Arc<TokenKeys>,
    redis: ConnectionManager,
    redis_keys: RedisKeys,
}

impl Authenticator {
    pub fn new(keys: Arc<TokenKeys>, redis: ConnectionManager, redis_keys: RedisKeys) -> Self {
        Self {
            keys,
            redis,
            redis_keys,
        }
    }

    fn revoked_key(&self, sid: Uuid) -> String {
        self.redis_keys.key(format_args!("auth:revoked:{sid}"))
    }

    /// Makes every access token of session `sid` invalid at once, everywhere.
    pub async fn revoke_session(&self, sid: Uuid) -> Result<(), redis::RedisError> {
        // Kept as long as a token of the session can still be unexpired.
        let ttl = self.keys.access_ttl.as_secs() + 60;
        self.redis
            .clone()
            .set_ex::<_, _, ()>(self.revoked_key(sid), 1, ttl)
            .await
    }

    pub async fn is_revoked(&self, sid: Uuid) -> Result<bool, redis::RedisError> {
        self.redis.clone().exists(self.revoked_key(sid)).await
    }

    /// Verified claims of the request's bearer token for `audience`.
    fn claims(&self, parts: &Parts, audience: &str) -> Result<Claims, Problem> {
        self.keys.verify(Self::bearer(parts)?, audience)
    }

    fn bearer(parts: &Parts) -> Result<&str, Problem> {
        let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("Send an access token: Authorization: Bearer <token>.")
        })?;
        value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("The Authorization header must be: Bearer <token>.")
            })
    }
}

/// An authenticated customer (possibly an admin or a vendor member).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub session_id: Uuid,
    pub roles: Vec<String>,
    pub vendors: Vec<Uuid>,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_ADMIN)
    }

    /// Admins manage every vendor; members manage their own.
    pub fn can_manage_vendor(&self, vendor_id: Uuid) -> bool {
        self.is_admin() || self.vendors.contains(&vendor_id)
    }

    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("Only an administrator may do this."))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser
where
    Authenticator: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Authenticator::from_ref(state);
        let claims = auth.claims(parts, USER_AUDIENCE)?;
        let id = claims
            .sub
            .parse()
            .map_err(|_| Problem::unauthorized("The access token is invalid."))?;
        let sid = claims
            .sid
            .ok_or_else(|| Problem::unauthorized("The access token is invalid."))?;
        if auth.is_revoked(sid).await? {
            return Err(Problem::unauthorized("The session has ended; log in again.").into());
        }
        Ok(AuthUser {
            id,
            session_id: sid,
            roles: claims.roles,
            vendors: claims.vendors,
        })
    }
}

/// Another service calling an internal endpoint.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub service: String,
}

impl ServiceCaller {
    /// 403 unless the caller is one of `allowed`: each internal endpoint names the
    /// services that may call it.
    pub fn allow(&self, allowed: &[Service]) -> Result<(), Problem> {
        if allowed.iter().any(|s| s.as_str() == self.service) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "The {} service may not call this endpoint.",
                self.service
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ServiceCaller
where
    Authenticator: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let claims = Authenticator::from_ref(state).claims(parts, SERVICE_AUDIENCE)?;
        if !claims.roles.iter().any(|r| r == ROLE_SERVICE) {
            return Err(Problem::forbidden("Only services may call this endpoint.").into());
        }
        Ok(ServiceCaller {
            service: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str, secret: &str) -> TokenKeys {
        TokenKeys::new(kid, secret, &[], Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_token_verifies_with_its_key_and_audience_only() {
        let k = keys("a", &"s".repeat(32));
        let (token, ttl) = k.user_token(
            Uuid::new_v4(),
            Uuid::new_v4(),
            vec!["customer".into()],
            vec![],
        );
        assert_eq!(ttl, 60);
        assert!(k.verify(&token, USER_AUDIENCE).is_ok());
        assert_eq!(k.verify(&token, SERVICE_AUDIENCE).unwrap_err().status, 401);
        assert_eq!(
            keys("a", &"t".repeat(32))
                .verify(&token, USER_AUDIENCE)
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn previous_keys_keep_old_tokens_valid_during_rotation() {
        let old = keys("old", &"o".repeat(32));
        let (token, _) = old.service_token(Service::Cart);
        let rotated = TokenKeys::new(
            "new",
            &"n".repeat(32),
            &[("old".into(), "o".repeat(32))],
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            rotated.verify(&token, SERVICE_AUDIENCE).unwrap().sub,
            "cart"
        );
    }

    #[test]
    fn tampered_tokens_are_rejected() {
        let k = keys("a", &"s".repeat(32));
        let (token, _) = k.user_token(
            Uuid::new_v4(),
            Uuid::new_v4(),
            vec!["customer".into()],
            vec![],
        );
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(k.verify(&parts.join("."), USER_AUDIENCE).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new("a", "short", &[], Duration::from_secs(1)).is_err());
    }
}
