//! The keys that sign and verify tokens: issuing, verifying, and the JWKS kept fresh.

use super::*;

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
