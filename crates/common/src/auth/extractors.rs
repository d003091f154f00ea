//! Bearer tokens in requests: the [`Authenticator`] and the `AuthUser` and
//! `ServiceCaller` extractors.

use super::*;

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
