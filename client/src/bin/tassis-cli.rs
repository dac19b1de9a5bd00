//! `tassis-cli`: try a tassis server from a terminal.
//!
//! Exists so a person can exercise a running server by hand: make an identity key, register a
//! device, send a message anonymously, listen for (and ack) messages, fetch prekeys, get upload
//! authorizations. Key material other than the identity key is random bytes: the server treats
//! prekeys and message payloads as opaque.
//!
//! Device ids are given as text and sent as their UTF-8 bytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use tassis_client::{ConnectOptions, Connection, Identity, Scheme, ServerEvent, frame};

#[derive(Parser)]
#[command(
    name = "tassis-cli",
    version,
    about = "Try a tassis messaging server from the terminal"
)]
struct Cli {
    /// Request timeout in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ServerArg {
    /// WebSocket URL of the server.
    #[arg(long, env = "TASSIS_SERVER", default_value = "ws://127.0.0.1:8080/api")]
    server: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity key file and print its public key (hex).
    Keygen {
        /// ed25519 (the documented scheme) or curve25519 (Signal-style, signs with XEdDSA).
        #[arg(long, default_value = "ed25519", value_parser = parse_scheme)]
        scheme: Scheme,
        /// Where to write the key (contains the secret).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key (hex) of a key file.
    Pubkey {
        #[arg(long)]
        key: PathBuf,
    },
    /// Log in and register a device with a random signed prekey and one-time prekeys.
    Register {
        #[command(flatten)]
        server: ServerArg,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        device: String,
        #[arg(long, default_value_t = 20)]
        one_time_keys: usize,
    },
    /// Log in and delete a device's registration.
    Unregister {
        #[command(flatten)]
        server: ServerArg,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        device: String,
    },
    /// Send a text message anonymously to a device.
    Send {
        #[command(flatten)]
        server: ServerArg,
        /// Recipient identity key (hex).
        #[arg(long)]
        to: String,
        /// Recipient device id.
        #[arg(long)]
        device: String,
        #[arg(long)]
        text: String,
    },
    /// Log in, print inbound messages and ack them.
    Listen {
        #[command(flatten)]
        server: ServerArg,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        device: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Fetch prekeys of an identity's devices (consumes one one-time key per device).
    Prekeys {
        #[command(flatten)]
        server: ServerArg,
        /// Identity key (hex).
        #[arg(long)]
        identity: String,
        /// Device ids to skip.
        #[arg(long = "known")]
        known: Vec<String>,
    },
    /// Ask for attachment upload authorizations and print them as JSON.
    Uploads {
        #[command(flatten)]
        server: ServerArg,
        #[arg(long, default_value_t = 1)]
        count: i32,
    },
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse().map_err(|e: tassis_client::ClientError| e.to_string())
}

fn read_key(path: &Path) -> anyhow::Result<Identity> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    Identity::from_hex(&text).with_context(|| format!("parsing key file {}", path.display()))
}

fn write_key(path: &Path, identity: &Identity, force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (use --force to overwrite)", path.display()))?;
    writeln!(file, "{}", identity.to_hex())?;
    Ok(())
}

fn identity_key_from_hex(s: &str) -> anyhow::Result<Bytes> {
    let bytes = hex::decode(s.trim()).context("identity key is not hex")?;
    if bytes.len() != 32 {
        bail!("identity key is {} bytes, want 32", bytes.len());
    }
    Ok(bytes.into())
}

fn printable(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            format!("text {text:?}")
        }
        _ => format!("hex {}", hex::encode(payload)),
    }
}

fn random_keys(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|_| Bytes::copy_from_slice(&rand::random::<[u8; 32]>()))
        .collect()
}

struct Ctx {
    options: ConnectOptions,
}

impl Ctx {
    async fn connect(&self, server: &ServerArg) -> anyhow::Result<Connection> {
        Connection::connect_with(&server.server, self.options.clone())
            .await
            .with_context(|| format!("connecting to {}", server.server))
    }

    async fn login(&self, server: &ServerArg, key: &Path, device: &str) -> anyhow::Result<(Connection, Identity)> {
        let identity = read_key(key)?;
        let conn = self.connect(server).await?;
        conn.login(&identity, device.as_bytes()).await.context("login")?;
        Ok((conn, identity))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(cli.timeout);
    let ctx = Ctx {
        options: ConnectOptions {
            request_timeout: timeout,
            handshake_timeout: timeout,
        },
    };

    match cli.command {
        Command::Keygen { scheme, out, force } => {
            let identity = Identity::generate(scheme);
            write_key(&out, &identity, force)?;
            println!("{}", hex::encode(identity.public_key()));
        }
        Command::Pubkey { key } => {
            println!("{}", hex::encode(read_key(&key)?.public_key()));
        }
        Command::Register {
            server,
            key,
            device,
            one_time_keys,
        } => {
            let (conn, identity) = ctx.login(&server, &key, &device).await?;
            let signed_pre_key = Bytes::copy_from_slice(&rand::random::<[u8; 32]>());
            conn.register(signed_pre_key, random_keys(one_time_keys))
                .await
                .context("register")?;
            println!(
                "registered {} device {device:?} with {one_time_keys} one-time keys",
                hex::encode(identity.public_key())
            );
            conn.close().await.ok();
        }
        Command::Unregister { server, key, device } => {
            let (conn, _) = ctx.login(&server, &key, &device).await?;
            conn.unregister().await.context("unregister")?;
            println!("unregistered device {device:?}");
            conn.close().await.ok();
        }
        Command::Send {
            server,
            to,
            device,
            text,
        } => {
            let identity_key = identity_key_from_hex(&to)?;
            let conn = ctx.connect(&server).await?;
            conn.send(
                frame::address(identity_key, device.clone().into_bytes()),
                text.into_bytes(),
            )
            .await
            .context("send")?;
            println!("sent to {to} device {device:?}");
            conn.close().await.ok();
        }
        Command::Listen {
            server,
            key,
            device,
            count,
        } => {
            let (conn, identity) = ctx.login(&server, &key, &device).await?;
            eprintln!("listening as {} device {device:?}", hex::encode(identity.public_key()));
            let mut received = 0usize;
            while count.is_none_or(|n| received < n) {
                match conn.next_event().await {
                    Some(ServerEvent::Inbound { sequence, payload }) => {
                        println!("#{sequence} {}", printable(&payload));
                        conn.ack(sequence).await.context("ack")?;
                        received += 1;
                    }
                    Some(ServerEvent::PreKeysLow { keys_requested }) => {
                        eprintln!("server asks for {keys_requested} more one-time prekeys (run register again)");
                    }
                    Some(ServerEvent::Error {
                        sequence,
                        name,
                        description,
                    }) => {
                        eprintln!("server error (sequence {sequence}): {name}:{description}");
                    }
                    Some(ServerEvent::Unsolicited(m)) => {
                        eprintln!(
                            "unsolicited {} (sequence {})",
                            frame::payload_name_opt(m.payload.as_ref()),
                            m.sequence
                        );
                    }
                    Some(ServerEvent::Closed { code, reason }) => {
                        bail!(
                            "connection closed ({}): {reason}",
                            code.map_or("no code".into(), |c| c.to_string())
                        );
                    }
                    None => bail!("connection closed"),
                }
            }
            conn.close().await.ok();
        }
        Command::Prekeys {
            server,
            identity,
            known,
        } => {
            let identity_key = identity_key_from_hex(&identity)?;
            let conn = ctx.connect(&server).await?;
            let known = known.into_iter().map(|d| Bytes::from(d.into_bytes())).collect();
            let pre_keys = conn
                .request_pre_keys(identity_key, known)
                .await
                .context("requestPreKeys")?;
            if pre_keys.is_empty() {
                println!("no devices");
            }
            for pk in pre_keys {
                println!(
                    "device {:?} signedPreKey {} oneTimePreKey {}",
                    String::from_utf8_lossy(&pk.device_id),
                    hex::encode(&pk.signed_pre_key),
                    if pk.one_time_pre_key.is_empty() {
                        "(none left)".into()
                    } else {
                        hex::encode(&pk.one_time_pre_key)
                    }
                );
            }
            conn.close().await.ok();
        }
        Command::Uploads { server, count } => {
            let conn = ctx.connect(&server).await?;
            let auths = conn
                .request_upload_authorizations(count)
                .await
                .context("requestUploadAuthorizations")?;
            let json: Vec<_> = auths
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "uploadURL": a.upload_url,
                        "uploadFormData": a.upload_form_data,
                        "authorizationExpiresAt": a.authorization_expires_at,
                        "maxUploadSize": a.max_upload_size,
                        "downloadURL": a.download_url,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
            conn.close().await.ok();
        }
    }
    Ok(())
}
