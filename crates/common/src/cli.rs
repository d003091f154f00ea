//! The command line every service binary shares:
//! `<service> [serve]`, `<service> migrate`, `<service> dlq list|redrive`,
//! `<service> rabbitmq-user`, `<service> redis-user`, `<service> keys --out DIR`,
//! `<service> service-token`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mp_events::dlq::{self, Selection};
use mp_events::{Broker, Service};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::runtime::{connect_db, shutdown_on_signal};

#[derive(Parser)]
#[command(
    version,
    about = "A Marketplace service. Every option can also be set by its environment variable."
)]
struct Cli<C: clap::Args> {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: C,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Create the schema and apply migrations, then exit.
    Migrate,
    /// Write a new key set into DIR: `user.pem` (the customer service's JWT_SIGNING_KEY),
    /// `<service>.pem` for each service's SERVICE_KEY, and `trusted.jwks.json`
    /// (TRUSTED_KEYS for every service). Existing files are never overwritten.
    Keys {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print a service token of this service for the service `--to` (valid for five
    /// minutes), signed with its SERVICE_KEY: for an operator, or the contract tests,
    /// calling an internal endpoint of that service.
    ServiceToken {
        /// The service the token is for (only it accepts it).
        #[arg(long, value_parser = parse_service)]
        to: Service,
    },
    /// Print the rabbitmqctl commands that give this service a RabbitMQ user of its own,
    /// allowed to publish only its own event types and to touch only its own queues.
    RabbitmqUser {
        /// The user's name.
        #[arg(long, default_value_t = String::new())]
        user: String,
        /// The virtual host.
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Print this service's Redis ACL rules (its own key prefixes only): a line for
    /// `ACL SETUSER <user> on ><password> <rules>` or a users.acl file, with `--json`
    /// the rules as a JSON array.
    RedisUser {
        /// Print the rules as a JSON array.
        #[arg(long)]
        json: bool,
        /// The rules of Kong's user (its rate-limit counters) instead.
        #[arg(long)]
        kong: bool,
    },
    /// Inspect and redrive this service's dead-lettered events.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print dead letters as JSON lines (they stay in the queue).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back into the service's queue.
    Redrive {
        /// Redrive only the message with this id (the event id).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        message_id: Option<String>,
        /// Redrive every dead letter present when the redrive starts.
        #[arg(long)]
        all: bool,
        /// Also redrive events older than the inbox retention (they could apply twice).
        #[arg(long)]
        force: bool,
    },
}

/// Parses the command line and runs the service's `run` or a maintenance command.
pub fn main<C, F, Fut>(service: Service, migrations: &'static Migrator, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cli = Cli::<C>::parse();
    let _log_flush = mp_log::init(&cli.config.common().log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let result = runtime.block_on(async move {
        let common = cli.config.common().clone();
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let addr = common.listen_addr(service);
                let listener = TcpListener::bind(addr).await?;
                run(cli.config, listener, shutdown_on_signal()).await
            }
            Command::Migrate => {
                let schema = common.schema(service);
                connect_db(&common, &schema, migrations).await?;
                println!("{service}: schema {schema} is migrated");
                Ok(())
            }
            Command::Keys { out } => {
                write_key_set(&out)?;
                println!("{service}: wrote a new key set into {}", out.display());
                Ok(())
            }
            Command::ServiceToken { to } => {
                let keys = crate::auth::TokenKeys::for_service(&common, Some(service))?;
                println!("{}", keys.service_token(service, to).0);
                Ok(())
            }
            Command::RabbitmqUser { user, vhost } => {
                let topology = common.topology();
                let p = topology.permissions(service);
                let user = if user.is_empty() {
                    service.as_str().to_owned()
                } else {
                    user
                };
                println!("rabbitmqctl add_user {user} \"$PASSWORD\"");
                println!(
                    "rabbitmqctl set_permissions -p {vhost} {user} '{}' '{}' '{}'",
                    p.configure, p.write, p.read
                );
                println!(
                    "rabbitmqctl set_topic_permissions -p {vhost} {user} {} '{}' '{}'",
                    topology.exchange(),
                    p.topic_write,
                    p.topic_read
                );
                Ok(())
            }
            Command::RedisUser { json, kong } => {
                let rules = if kong {
                    crate::redis::kong_acl_rules()
                } else {
                    crate::redis::acl_rules(service, &common.redis_prefix)
                };
                if json {
                    println!("{}", serde_json::to_string(&rules)?);
                } else {
                    println!("{}", rules.join(" "));
                }
                Ok(())
            }
            Command::Dlq { action } => {
                let broker = Broker::new(common.amqp_url.clone(), common.topology(), Some(service));
                match action {
                    DlqAction::List { limit } => {
                        for letter in dlq::list(&broker, service, limit).await? {
                            println!("{}", serde_json::to_string(&letter)?);
                        }
                    }
                    DlqAction::Redrive {
                        message_id,
                        all: _,
                        force,
                    } => {
                        let selection = message_id.map_or(Selection::All, Selection::MessageId);
                        let report = dlq::redrive(
                            &broker,
                            service,
                            &selection,
                            common.inbox_retention(),
                            force,
                        )
                        .await?;
                        println!(
                            "redrove {} message(s) into {}",
                            report.redriven,
                            broker.topology().queue(service)
                        );
                        for (id, why) in &report.refused {
                            println!("refused {}: {why}", id.as_deref().unwrap_or("(no id)"));
                        }
                    }
                }
                broker.close().await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{service} failed");
            eprintln!("{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a [`KeySet`](crate::keys::KeySet): private keys readable by the owner only.
fn write_key_set(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use secrecy::ExposeSecret;

    std::fs::create_dir_all(dir)?;
    let set = crate::keys::KeySet::generate()?;
    let mut files: Vec<(String, String)> =
        vec![("user.pem".into(), set.user.expose_secret().to_owned())];
    for (service, pem) in &set.services {
        files.push((format!("{service}.pem"), pem.expose_secret().to_owned()));
    }
    files.push((
        "trusted.jwks.json".into(),
        serde_json::to_string_pretty(&set.trusted)? + "\n",
    ));
    for (name, _) in &files {
        anyhow::ensure!(
            !dir.join(name).exists(),
            "{} exists; keys are never overwritten (move the old set away to rotate)",
            dir.join(name).display()
        );
    }
    for (name, content) in files {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(&name))?;
        f.write_all(content.as_bytes())?;
    }
    Ok(())
}

fn parse_service(name: &str) -> Result<Service, String> {
    Service::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| format!("unknown service {name:?}"))
}
