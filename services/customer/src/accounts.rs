//! The account service: registration with its password hash, profiles, the password
//! check of a login and the administrator the configuration names. Every transaction
//! and outbox row of an account is here; the routes parse, call these and map
//! [`AccountError`] to problem+json.

use std::time::Duration;

use mp_common::auth::{ROLE_ADMIN, ROLE_CUSTOMER, ROLE_VENDOR};
use mp_events::Service;
use mp_events::catalog::{CustomerCreated, CustomerUpdated};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, CustomerRow};
use crate::domain::{self, Email};

/// Why an account operation was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another account has this email (in any letter case).
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("no such customer")]
    NotFound,
    /// Every hashing slot stayed busy for the whole wait.
    #[error("password hashing is busy")]
    Busy,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// An account with the vendors its customer is a member of.
#[derive(Debug)]
pub struct Account {
    pub row: CustomerRow,
    pub vendor_ids: Vec<Uuid>,
}

impl Account {
    /// The roles its tokens carry: always customer, vendor with a membership, admin.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = vec![ROLE_CUSTOMER.to_owned()];
        if !self.vendor_ids.is_empty() {
            roles.push(ROLE_VENDOR.to_owned());
        }
        if self.row.is_admin {
            roles.push(ROLE_ADMIN.to_owned());
        }
        roles
    }
}

/// A registration whose fields have been checked (the password against the policy).
pub struct Registration {
    pub email: Email,
    /// Never in `Debug` output or a log line.
    pub password: SecretString,
    pub name: String,
    pub phone: Option<String>,
}

/// A profile change: `None` leaves a field as it is (`Some(None)` removes the phone).
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub name: Option<String>,
    pub phone: Option<Option<String>>,
}

#[derive(Clone)]
pub struct Accounts {
    pub db: PgPool,
}

/// Password hashing is memory-hard on purpose (argon2id, 19 MiB each): at most one hash
/// per core at a time, and a request waits at most a few seconds for its turn, so a
/// flood of logins is answered 503 instead of exhausting memory.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2),
    )
});

async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AccountError> {
    let _turn = tokio::time::timeout(Duration::from_secs(5), HASHING.acquire())
        .await
        .map_err(|_| AccountError::Busy)?
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AccountError::Internal(e.into()))
}

/// A real hash to verify against when the email is unknown, so timing tells nothing.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    domain::hash_password("dummy password for timing").expect("hashing works")
});

fn created(row: &CustomerRow) -> CustomerCreated {
    CustomerCreated {
        customer_id: row.id,
        email: row.email.clone(),
        name: row.name.clone(),
        phone: row.phone.clone(),
        revision: row.revision,
    }
}

impl Accounts {
    /// Registers a customer (`customer.created` in the same transaction).
    pub async fn register(&self, r: Registration) -> Result<Account, AccountError> {
        let password = r.password;
        let password_hash =
            hashing(move || domain::hash_password(password.expose_secret())).await??;
        let mut tx = self.db.begin().await?;
        let row = db::insert(
            &mut tx,
            &db::NewCustomer {
                id: Uuid::now_v7(),
                email: r.email.as_str(),
                email_normalized: &r.email.normalized(),
                password_hash: &password_hash,
                name: &r.name,
                phone: r.phone.as_deref(),
                is_admin: false,
            },
        )
        .await
        .map_err(|e| {
            if mp_common::problem::violates(&e, db::EMAIL_UNIQUE) {
                AccountError::EmailTaken
            } else {
                e.into()
            }
        })?;
        mp_events::enqueue(&mut tx, Service::Customer, created(&row)).await?;
        tx.commit().await?;
        tracing::info!(customer_id = %row.id, "customer registered");
        Ok(Account {
            row,
            vendor_ids: vec![],
        })
    }

    /// The account of `id`.
    pub async fn account(&self, id: Uuid) -> Result<Account, AccountError> {
        let mut conn = self.db.acquire().await?;
        let row = db::by_id(&mut conn, id)
            .await?
            .ok_or(AccountError::NotFound)?;
        let vendor_ids = db::vendor_ids(&mut conn, id).await?;
        Ok(Account { row, vendor_ids })
    }

    /// Changes the name or phone of `id` (`customer.updated` if anything changed).
    pub async fn update_profile(
        &self,
        id: Uuid,
        change: ProfileChange,
    ) -> Result<Account, AccountError> {
        let mut tx = self.db.begin().await?;
        let current = db::by_id_for_update(&mut tx, id)
            .await?
            .ok_or(AccountError::NotFound)?;
        let new_name = change.name.unwrap_or_else(|| current.name.clone());
        let new_phone = change.phone.unwrap_or_else(|| current.phone.clone());
        let row = if new_name == current.name && new_phone == current.phone {
            current
        } else {
            let row = db::update_profile(&mut tx, id, &new_name, new_phone.as_deref()).await?;
            mp_events::enqueue(
                &mut tx,
                Service::Customer,
                CustomerUpdated {
                    customer_id: row.id,
                    email: row.email.clone(),
                    name: row.name.clone(),
                    phone: row.phone.clone(),
                    revision: row.revision,
                },
            )
            .await?;
            row
        };
        let vendor_ids = db::vendor_ids(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Account { row, vendor_ids })
    }

    /// The account whose (normalized) email and password these are, if any. An unknown
    /// email costs the same hash as a wrong password.
    pub async fn authenticate(
        &self,
        email_normalized: &str,
        password: SecretString,
    ) -> Result<Option<CustomerRow>, AccountError> {
        let row = db::by_email(&mut *self.db.acquire().await?, email_normalized).await?;
        let hash = row
            .as_ref()
            .map_or_else(|| DUMMY_HASH.clone(), |r| r.password_hash.clone());
        let ok = hashing(move || domain::verify_password(password.expose_secret(), &hash)).await?;
        Ok(row.filter(|_| ok))
    }

    /// Makes sure the configured administrator exists with the configured password.
    ///
    /// What it does, and does not: with no account for `email` it creates the
    /// administrator; with an administrator account it sets the configured password if
    /// it changed; an existing account that is *not* an administrator is never promoted
    /// (it is logged as an error and left alone). Replicas starting together may race:
    /// the unique email settles it.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> anyhow::Result<()> {
        let email = Email::parse(email).map_err(|m| anyhow::anyhow!("ADMIN_EMAIL {m}"))?;
        domain::check_password(password, Some(email.as_str()))
            .map_err(|m| anyhow::anyhow!("ADMIN_PASSWORD {m}"))?;
        let mut tx = self.db.begin().await?;
        let existing = db::by_email(&mut tx, &email.normalized()).await?;
        match existing {
            Some(row) if row.is_admin && domain::verify_password(password, &row.password_hash) => {
                return Ok(());
            }
            // The configured password changed: the administrator's password follows it.
            Some(row) if row.is_admin => {
                db::set_password(&mut tx, row.id, &domain::hash_password(password)?).await?
            }
            // Never promote an existing customer: whoever registered that address first
            // (and may be logged in right now) would become an administrator without
            // anyone deciding so. The operator picks another ADMIN_EMAIL or promotes
            // deliberately.
            Some(_) => {
                tracing::error!(
                    email = email.as_str(),
                    "ADMIN_EMAIL belongs to an existing customer account, which is not an administrator; it is NOT promoted. Choose another ADMIN_EMAIL."
                );
                return Ok(());
            }
            None => {
                let row = db::insert(
                    &mut tx,
                    &db::NewCustomer {
                        id: Uuid::now_v7(),
                        email: email.as_str(),
                        email_normalized: &email.normalized(),
                        password_hash: &domain::hash_password(password)?,
                        name: "Administrator",
                        phone: None,
                        is_admin: true,
                    },
                )
                .await?;
                mp_events::enqueue(&mut tx, Service::Customer, created(&row)).await?;
            }
        }
        tx.commit().await?;
        tracing::info!(email = email.as_str(), "administrator ensured");
        Ok(())
    }
}
