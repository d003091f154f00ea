//! Token issuing and verification, shared by every service.
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

/// The keys a service signs with and the public keys it trusts (see [`crate::keys`]).
pub struct TokenKeys {
    /// The user-token key: the customer service's alone.
    user: Option<Signer>,
    /// Service keys this process may sign with: its own (every key in development mode).
    services: HashMap<Service, Signer>,
    /// Public keys by id that are trusted whatever the JWKS says: own public halves and
    /// `TRUSTED_KEYS`.
    trusted: HashMap<String, PublicKey>,
    /// User keys as the JWKS last listed them, replaced by each reading: a key that
    /// left it is no longer trusted.
    published: RwLock<HashMap<String, PublicKey>>,
    /// Where user keys are published (the customer service).
    jwks_url: Option<String>,
    last_fetch: Mutex<Option<Instant>>,
    /// When the JWKS was last read successfully, and how often to read it again.
    read_at: Mutex<Option<Instant>>,
    jwks_refresh: Duration,
    http: reqwest::Client,
    pub access_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("user", &self.user.as_ref().map(|s| &s.kid))
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug)]
enum Refusal {
    /// Signed by a key this process does not know (yet).
    UnknownKey,
    Invalid,
}

/// Leeway between the clocks of the token's issuer and the verifier that records a new
/// session epoch after a Redis loss.
const EPOCH_LEEWAY_SECS: i64 = 5;

/// How often the JWKS may be fetched again for an unknown key id: tokens with made-up
/// key ids must not turn into a flood of requests.
const JWKS_REFETCH: Duration = Duration::from_secs(5);

impl TokenKeys {
    /// Keys from signers and trusted public keys.
    pub fn new(
        user: Option<Signer>,
        services: Vec<(Service, Signer)>,
        trusted: Vec<PublicKey>,
        jwks_url: Option<String>,
        access_ttl: Duration,
    ) -> Self {
        let mut known: HashMap<String, PublicKey> =
            trusted.into_iter().map(|k| (k.kid.clone(), k)).collect();
        for signer in user.iter().chain(services.iter().map(|(_, s)| s)) {
            known.insert(signer.kid.clone(), signer.public.clone());
        }
        Self {
            user,
            services: services.into_iter().collect(),
            trusted: known,
            published: RwLock::new(HashMap::new()),
            jwks_url,
            last_fetch: Mutex::new(None),
            read_at: Mutex::new(None),
            jwks_refresh: Duration::from_secs(300),
            http: crate::tls::http_client_builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client builds"),
            access_ttl,
        }
    }

    /// The keys of `service` (or of a tool, `None`) from its configuration: its own
    /// service key (`SERVICE_KEY`), the user key where configured (`JWT_SIGNING_KEY`, the
    /// customer service), `TRUSTED_KEYS` and `JWKS_URL`. In development mode missing keys
    /// are the development keys; outside it, they are refused.
    pub fn for_service(config: &CommonConfig, service: Option<Service>) -> anyhow::Result<Self> {
        let dev = config.dev_mode;
        let checked = |signer: Signer, usage: KeyUse, what: &str| -> anyhow::Result<Signer> {
            anyhow::ensure!(
                dev || !keys::is_dev_key(&signer, usage),
                "{what} is the development key; set a real one, or DEV_MODE=true for local development"
            );
            Ok(signer)
        };
        let set = |k: &Option<SecretString>| {
            k.as_ref()
                .filter(|k| !k.expose_secret().trim().is_empty())
                .cloned()
        };
        let user = match &set(&config.jwt_signing_key) {
            Some(pem) => Some(checked(
                keys::signer_from_pem(pem, KeyUse::User)
                    .map_err(|e| anyhow::anyhow!("JWT_SIGNING_KEY: {e}"))?,
                KeyUse::User,
                "JWT_SIGNING_KEY",
            )?),
            None if dev => Some(keys::dev_signer(KeyUse::User)),
            None => None,
        };
        let mut services = Vec::new();
        match (&set(&config.service_key), service) {
            (Some(pem), Some(s)) => services.push((
                s,
                checked(
                    keys::signer_from_pem(pem, KeyUse::Service(s))
                        .map_err(|e| anyhow::anyhow!("SERVICE_KEY: {e}"))?,
                    KeyUse::Service(s),
                    "SERVICE_KEY",
                )?,
            )),
            _ if dev => {
                // Development keys are public anyway: tests may speak for any service.
                for s in Service::ALL {
                    services.push((s, keys::dev_signer(KeyUse::Service(s))));
                }
            }
            (None, Some(s)) => anyhow::bail!(
                "SERVICE_KEY is not set: the {s} service needs a key of its own (`{s} keys --out DIR` makes a set), or DEV_MODE=true for local development"
            ),
            (_, None) => {}
        }
        let trusted = match &config.trusted_keys {
            Some(text) if !text.trim().is_empty() => {
                keys::parse_jwks(text).map_err(|e| anyhow::anyhow!("TRUSTED_KEYS: {e}"))?
            }
            _ => Vec::new(),
        };
        let jwks_url = (!config.jwks_url.is_empty()).then(|| config.jwks_url.clone());
        Ok(Self::new(
            user,
            services,
            trusted,
            jwks_url,
            Duration::from_secs(config.access_token_ttl_secs),
        )
        .with_jwks_refresh(Duration::from_secs(config.jwks_refresh_secs)))
    }

    /// Reads the JWKS again every `every` (see `JWKS_REFRESH_SECS`).
    pub fn with_jwks_refresh(mut self, every: Duration) -> Self {
        self.jwks_refresh = every;
        self
    }

    /// [`for_service`](Self::for_service) for tools and tests that sign no service token
    /// of their own (development mode still gives them every key).
    pub fn from_config(config: &CommonConfig) -> anyhow::Result<Self> {
        Self::for_service(config, None)
    }

    /// Whether this process signs user tokens (the customer service).
    pub fn signs_users(&self) -> bool {
        self.user.is_some()
    }

    /// The public user keys to publish at `/.well-known/jwks.json`: the current one and
    /// the trusted previous ones (a rotation keeps old tokens valid until they expire).
    pub fn user_jwks(&self) -> Value {
        let mut keys: Vec<&PublicKey> = self
            .trusted
            .values()
            .filter(|k| k.kid.starts_with("user-"))
            .collect();
        keys.sort_by_key(|k| (Some(&k.kid) != self.user.as_ref().map(|u| &u.kid), &k.kid));
        json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() })
    }

    fn sign_with(signer: &Signer, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signer.kid.clone());
        encode(&header, claims, &signer.encoding).expect("ES256 signing with a parsed key")
    }

    /// Signs arbitrary claims with the key their audience calls for (the user key, or
    /// the key of the service named in `sub`): for tests and tools that need a token
    /// the normal paths would not make, such as an expired one.
    pub fn sign(&self, claims: &Claims) -> String {
        let signer = if claims.aud == USER_AUDIENCE {
            self.user.as_ref().expect("no user key")
        } else {
            let service = Service::ALL
                .into_iter()
                .find(|s| s.as_str() == claims.sub)
                .expect("sub names a service");
            self.services.get(&service).expect("no key of that service")
        };
        Self::sign_with(signer, claims)
    }

    /// Keys nobody trusts: a fresh random user key and service keys, for tests of
    /// tokens signed with the wrong key.
    pub fn stranger() -> Self {
        let random = |usage| {
            keys::signer_from_pem(&keys::generate_pem(), usage).expect("a fresh key parses")
        };
        Self::new(
            Some(random(KeyUse::User)),
            Service::ALL
                .into_iter()
                .map(|s| (s, random(KeyUse::Service(s))))
                .collect(),
            vec![],
            None,
            Duration::from_secs(900),
        )
    }

    /// A user access token; returns it with its lifetime in seconds. Only the customer
    /// service holds the key (panics elsewhere: a programming error).
    pub fn user_token(
        &self,
        customer_id: Uuid,
        sid: Uuid,
        roles: Vec<String>,
        vendors: Vec<Uuid>,
    ) -> (String, u64) {
        let signer = self
            .user
            .as_ref()
            .expect("only the customer service signs user tokens (JWT_SIGNING_KEY)");
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
        (Self::sign_with(signer, &claims), ttl)
    }

    /// A token `service` presents to `target`, signed with its own key and good for
    /// `target` alone (panics if this process does not hold that service's key: a
    /// programming error).
    pub fn service_token(&self, service: Service, target: Service) -> (String, i64) {
        let signer = self
            .services
            .get(&service)
            .unwrap_or_else(|| panic!("this process holds no key of the {service} service"));
        let now = chrono::Utc::now().timestamp();
        let exp = now + 300;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: service_audience(target),
            sub: service.as_str().into(),
            sid: None,
            roles: vec![ROLE_SERVICE.into()],
            vendors: vec![],
            iat: now,
            exp,
            jti: Uuid::new_v4(),
        };
        (Self::sign_with(signer, &claims), exp)
    }

    /// Checks signature (by key id), expiry, issuer and audience, and that the key is
    /// one for this kind of token: a user key for user tokens, the named service's own
    /// key for service tokens. Only keys known now; see [`verify_fetching`].
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, Problem> {
        self.check(token, audience).map_err(|_| invalid_token())
    }

    fn check(&self, token: &str, audience: &str) -> Result<Claims, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Invalid)?;
        if header.alg != Algorithm::ES256 {
            return Err(Refusal::Invalid);
        }
        let kid = header.kid.ok_or(Refusal::Invalid)?;
        let user_token = audience == USER_AUDIENCE;
        if user_token != kid.starts_with("user-") {
            return Err(Refusal::Invalid);
        }
        let published = self.published.read().unwrap_or_else(|e| e.into_inner());
        let key = self
            .trusted
            .get(&kid)
            .or_else(|| published.get(&kid))
            .ok_or(Refusal::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = 5;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Claims>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| Refusal::Invalid)?;
        if !user_token && !kid.starts_with(&format!("svc-{}-", claims.sub)) {
            // A service's key signs for that service only.
            return Err(Refusal::Invalid);
        }
        Ok(claims)
    }

    /// [`verify`](Self::verify), reading the customer service's JWKS when a user token
    /// names a key not known yet (a rotation happened) and whenever the last reading is
    /// older than the refresh interval (so a key that left it stops being trusted).
    pub async fn verify_fetching(&self, token: &str, audience: &str) -> Result<Claims, Problem> {
        if audience == USER_AUDIENCE && self.jwks_url.is_some() {
            let stale = self
                .read_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|at| at.elapsed() >= self.jwks_refresh);
            if stale {
                self.refresh_jwks().await;
            }
        }
        match self.check(token, audience) {
            Ok(claims) => Ok(claims),
            Err(Refusal::UnknownKey) if audience == USER_AUDIENCE && self.refresh_jwks().await => {
                self.verify(token, audience)
            }
            Err(_) => Err(invalid_token()),
        }
    }

    /// Fetches the JWKS (at most every few seconds); whether new keys came.
    async fn refresh_jwks(&self) -> bool {
        let Some(url) = &self.jwks_url else {
            return false;
        };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let fetched = async {
            let text = self
                .http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            keys::parse_jwks(&text)
        }
        .await;
        match fetched {
            Ok(found) => {
                let fresh: HashMap<String, PublicKey> = found
                    .into_iter()
                    .filter(|k| k.kid.starts_with("user-"))
                    .map(|k| (k.kid.clone(), k))
                    .collect();
                *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
                let new = fresh.keys().any(|kid| !published.contains_key(kid));
                for retired in published.keys().filter(|kid| !fresh.contains_key(*kid)) {
                    tracing::info!(kid = %retired, "a user key left the JWKS; no longer trusted");
                }
                *published = fresh;
                new
            }
            Err(e) => {
                tracing::warn!(url = %url, error = %format!("{e:#}"), "could not fetch the JWKS");
                false
            }
        }
    }
}

fn invalid_token() -> Problem {
    Problem::unauthorized("The access token is invalid or expired.")
}

/// Verifies bearer tokens and knows revoked sessions.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Arc<TokenKeys>,
    redis: ConnectionManager,
    redis_keys: RedisKeys,
    /// The service this process is: service tokens must be meant for it.
    service: Service,
}

impl Authenticator {
    pub fn new(
        keys: Arc<TokenKeys>,
        redis: ConnectionManager,
        redis_keys: RedisKeys,
        service: Service,
    ) -> Self {
        Self {
            keys,
            redis,
            redis_keys,
            service,
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

    fn epoch_key(&self) -> String {
        self.redis_keys.key("auth:epoch")
    }

    /// Records when Redis' memory of sessions begins, if it does not know yet: at start,
    /// and whenever a verifier finds the record gone (Redis lost its data).
    pub async fn ensure_epoch(&self) -> Result<i64, redis::RedisError> {
        let now = chrono::Utc::now().timestamp();
        let mut redis = self.redis.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.epoch_key())
            .arg(now)
            .arg("NX")
            .query_async(&mut redis)
            .await?;
        let epoch: Option<i64> = redis.get(self.epoch_key()).await?;
        Ok(epoch.unwrap_or(now))
    }

    /// Why a user token's session no longer counts, if it does not: logged out (its
    /// revocation marker), or issued before Redis last lost its data. Revocation fails
    /// closed: a Redis that lost its markers (flushed, restarted without persistence)
    /// also lost the record of when its memory began; the first verifier to notice
    /// records a new beginning, and every token issued before it is refused, logged-out
    /// ones included (everyone logs in again, which they must anyway: their refresh
    /// sessions are gone too). A few seconds of leeway allow for clocks.
    pub async fn session_refusal(
        &self,
        sid: Uuid,
        issued_at: i64,
    ) -> Result<Option<&'static str>, redis::RedisError> {
        let (revoked, epoch): (bool, Option<i64>) = redis::pipe()
            .exists(self.revoked_key(sid))
            .get(self.epoch_key())
            .query_async(&mut self.redis.clone())
            .await?;
        if revoked {
            return Ok(Some("The session has ended; log in again."));
        }
        let epoch = match epoch {
            Some(epoch) => epoch,
            None => {
                tracing::warn!(
                    "Redis holds no session epoch (it lost its data): tokens issued before now are refused"
                );
                self.ensure_epoch().await?
            }
        };
        Ok((issued_at < epoch - EPOCH_LEEWAY_SECS)
            .then_some("The session began before the sessions store lost its data; log in again."))
    }

    /// Verified claims of the request's bearer token for `audience`.
    async fn claims(&self, parts: &Parts, audience: &str) -> Result<Claims, Problem> {
        self.keys
            .verify_fetching(Self::bearer(parts)?, audience)
            .await
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
        let claims = auth.claims(parts, USER_AUDIENCE).await?;
        let id = claims
            .sub
            .parse()
            .map_err(|_| Problem::unauthorized("The access token is invalid."))?;
        let sid = claims
            .sid
            .ok_or_else(|| Problem::unauthorized("The access token is invalid."))?;
        if let Some(why) = auth.session_refusal(sid, claims.iat).await? {
            return Err(Problem::unauthorized(why).into());
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
        let auth = Authenticator::from_ref(state);
        // A token minted for another service is refused here: a service that has been
        // broken into cannot replay what it was sent.
        let claims = auth.claims(parts, &service_audience(auth.service)).await?;
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
