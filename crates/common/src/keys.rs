//! Signing keys: ES256 (ECDSA on P-256), private halves as PKCS#8 PEM, public halves as
//! JWKs.
//!
//! * The customer service alone holds the **user key** and signs access tokens with it;
//!   its public half (and those of previous keys still trusted during a rotation) is
//!   published at `/.well-known/jwks.json`. Key ids start with `user-`.
//! * Every service holds a **service key** of its own and signs the tokens it presents
//!   to other services with it. Key ids are `svc-<service>-<thumbprint>`: a verifier
//!   accepts a service token only if its key belongs to the service named in it, so no
//!   service can speak for another.
//! * Verifiers trust the public keys they are given (`TRUSTED_KEYS`, a JWKS) and the user
//!   keys fetched from the customer service's JWKS.
//!
//! Development mode (`DEV_MODE=true`, which the tests use) derives every key from a fixed,
//! public seed, so services started without keys still agree. Those keys are known to
//! anyone: outside development mode a service refuses to start without real keys, and
//! refuses the development keys.

use jsonwebtoken::{DecodingKey, EncodingKey};
use mp_events::Service;
use p256::SecretKey;
use p256::elliptic_curve::JwkEcKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a key signs for: user access tokens, or one service's own tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    User,
    Service(Service),
}

impl KeyUse {
    fn prefix(self) -> String {
        match self {
            KeyUse::User => "user".into(),
            KeyUse::Service(s) => format!("svc-{s}"),
        }
    }
}

/// A private key ready to sign, with its id and public JWK.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub encoding: EncodingKey,
    pub public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A public key: its id, the JWK, and the verifying key.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: String,
    pub jwk: Value,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

fn thumbprint(jwk: &JwkEcKey) -> String {
    let v = serde_json::to_value(jwk).expect("a JWK serializes");
    let digest = Sha256::digest(format!(
        "{}{}",
        v["x"].as_str().unwrap_or(""),
        v["y"].as_str().unwrap_or("")
    ));
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn public_of(secret: &SecretKey, usage: KeyUse) -> anyhow::Result<PublicKey> {
    let ec = secret.public_key().to_jwk();
    let kid = format!("{}-{}", usage.prefix(), thumbprint(&ec));
    let mut jwk = serde_json::to_value(&ec)?;
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("ES256");
    let decoding = DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap_or_default(),
        jwk["y"].as_str().unwrap_or_default(),
    )?;
    Ok(PublicKey { kid, jwk, decoding })
}

fn signer_of(secret: &SecretKey, usage: KeyUse) -> anyhow::Result<Signer> {
    let der = secret
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding a key: {e}"))?;
    let public = public_of(secret, usage)?;
    Ok(Signer {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        kid: public.kid.clone(),
        public,
    })
}

/// A signer from a PKCS#8 PEM private key.
pub fn signer_from_pem(pem: &SecretString, usage: KeyUse) -> anyhow::Result<Signer> {
    let secret = SecretKey::from_pkcs8_pem(pem.expose_secret())
        .map_err(|_| anyhow::anyhow!("not a PKCS#8 PEM P-256 private key"))?;
    signer_of(&secret, usage)
}

/// The development key for `usage`: derived from a public seed, so it is no secret.
pub fn dev_signer(usage: KeyUse) -> Signer {
    let seed = Sha256::digest(format!("marketplace development key: {}", usage.prefix()));
    let secret = SecretKey::from_slice(&seed).expect("a SHA-256 digest is a valid P-256 scalar");
    signer_of(&secret, usage).expect("development keys encode")
}

/// Whether `signer` is a development key (refused outside development mode).
pub fn is_dev_key(signer: &Signer, usage: KeyUse) -> bool {
    dev_signer(usage).kid == signer.kid
}

/// A new random private key as PKCS#8 PEM.
pub fn generate_pem() -> SecretString {
    let secret = SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .expect("a fresh key encodes");
    SecretString::from(pem.to_string())
}

/// The public JWK of a PEM private key for `usage` (to build `TRUSTED_KEYS`).
pub fn public_jwk(pem: &SecretString, usage: KeyUse) -> anyhow::Result<Value> {
    Ok(signer_from_pem(pem, usage)?.public.jwk)
}

/// Parses a JWKS (`{"keys": [...]}`) into public keys, skipping keys that are not
/// ES256/P-256 with an id.
pub fn parse_jwks(text: &str) -> anyhow::Result<Vec<PublicKey>> {
    let doc: Value = serde_json::from_str(text)?;
    let keys = doc["keys"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("a JWKS needs a \"keys\" array"))?;
    let mut out = Vec::new();
    for jwk in keys {
        let (Some(kid), Some(x), Some(y)) =
            (jwk["kid"].as_str(), jwk["x"].as_str(), jwk["y"].as_str())
        else {
            continue;
        };
        if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
            continue;
        }
        out.push(PublicKey {
            kid: kid.to_owned(),
            jwk: jwk.clone(),
            decoding: DecodingKey::from_ec_components(x, y)?,
        });
    }
    Ok(out)
}

/// A whole key set for a deployment: the user key, one key per service, and the JWKS of
/// every public half. What `<service> keys --out DIR` writes.
pub struct KeySet {
    pub user: SecretString,
    pub services: Vec<(Service, SecretString)>,
    pub trusted: Value,
}

impl KeySet {
    pub fn generate() -> anyhow::Result<Self> {
        let user = generate_pem();
        let mut keys = vec![public_jwk(&user, KeyUse::User)?];
        let mut services = Vec::new();
        for s in Service::ALL {
            let pem = generate_pem();
            keys.push(public_jwk(&pem, KeyUse::Service(s))?);
            services.push((s, pem));
        }
        Ok(Self {
            user,
            services,
            trusted: json!({ "keys": keys }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_say_what_a_key_signs_for_and_survive_a_round_trip_through_pem() {
        let pem = generate_pem();
        let signer = signer_from_pem(&pem, KeyUse::Service(Service::Cart)).unwrap();
        assert!(signer.kid.starts_with("svc-cart-"), "{}", signer.kid);
        let again = signer_from_pem(&pem, KeyUse::Service(Service::Cart)).unwrap();
        assert_eq!(signer.kid, again.kid);
        let jwks = json!({"keys": [signer.public.jwk]}).to_string();
        assert_eq!(parse_jwks(&jwks).unwrap()[0].kid, signer.kid);
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn development_keys_are_stable_and_recognised() {
        let a = dev_signer(KeyUse::User);
        assert_eq!(a.kid, dev_signer(KeyUse::User).kid);
        assert!(is_dev_key(&a, KeyUse::User));
        let real = signer_from_pem(&generate_pem(), KeyUse::User).unwrap();
        assert!(!is_dev_key(&real, KeyUse::User));
    }
}
