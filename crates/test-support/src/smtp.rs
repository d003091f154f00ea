//! A small SMTP server for tests: accepts every message and keeps it, so a test can
//! check what a service really sent over SMTP (recipient, subject, bodies, headers).
//!
//! It speaks just enough ESMTP for a client such as lettre (EHLO/HELO, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT), without TLS or authentication.
//! [`SmtpSink::stop`] closes the port and every connection, as an outage would;
//! [`SmtpSink::start_on`] brings a server back on the same port; [`SmtpSink::refuse`]
//! makes it answer `RCPT TO` of one address with an error reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One message as received: the envelope and the raw RFC 5322 data.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

impl ReceivedMail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a parsable message")
    }

    pub fn subject(&self) -> Option<String> {
        self.parsed().subject().map(str::to_owned)
    }

    /// The Message-ID header with its angle brackets, e.g. `<id@domain>`.
    pub fn message_id(&self) -> Option<String> {
        self.parsed().message_id().map(|id| format!("<{id}>"))
    }

    /// The first `text/plain` part, decoded.
    pub fn text(&self) -> Option<String> {
        let m = self.parsed();
        let part = m.text_part(0)?;
        part.is_text()
            .then(|| part.text_contents().map(str::to_owned))?
    }

    /// The first `text/html` part, decoded.
    pub fn html(&self) -> Option<String> {
        let m = self.parsed();
        let part = m.html_part(0)?;
        part.is_text_html()
            .then(|| part.text_contents().map(str::to_owned))?
    }

    /// The addresses of the `To` header.
    pub fn to(&self) -> Vec<String> {
        self.parsed()
            .to()
            .map(|to| {
                to.iter()
                    .filter_map(|a| a.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running test SMTP server.
pub struct SmtpSink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    refused: Refused,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts a server on `port` (0 for any), e.g. again after [`stop`](Self::stop).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let refused = Refused::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            received.clone(),
            refused.clone(),
            stop.clone(),
        ));
        Self {
            addr,
            received,
            refused,
            stop,
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers `RCPT TO:<address>` with `reply` from now on, e.g. `450 4.2.1 mailbox
    /// busy` (try again later) or `550 5.1.1 no such user` (never).
    pub fn refuse(&self, address: &str, reply: &str) {
        self.refused
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_owned(), reply.to_owned());
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the port and every open connection; returns what was received.
    pub async fn stop(mut self) -> Vec<ReceivedMail> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Addresses whose `RCPT TO` gets an error reply, and the reply.
#[derive(Clone, Default)]
struct Refused(Arc<Mutex<HashMap<String, String>>>);

impl Refused {
    fn reply(&self, address: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .cloned()
    }
}

async fn serve(
    listener: TcpListener,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    refused: Refused,
    stop: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let (received, refused, stop) =
                        (received.clone(), refused.clone(), stop.clone());
                    connections.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::timeout(
                                Duration::from_secs(60),
                                session(stream, received, refused),
                            ) => {}
                        }
                    });
                }
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn session(stream: TcpStream, received: Arc<Mutex<Vec<ReceivedMail>>>, refused: Refused) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    if !reply(&mut writer, "220 test-sink ESMTP ready\r\n").await {
        return;
    }
    let (mut mail_from, mut rcpt_to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-test-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK\r\n".to_owned(),
            "HELO" | "NOOP" => "250 OK\r\n".to_owned(),
            "RSET" => {
                mail_from.clear();
                rcpt_to.clear();
                "250 OK\r\n".to_owned()
            }
            "MAIL" => {
                mail_from = address(&command);
                rcpt_to.clear();
                "250 OK\r\n".to_owned()
            }
            "RCPT" => {
                let to = address(&command);
                match refused.reply(&to) {
                    Some(reply) => format!("{reply}\r\n"),
                    None => {
                        rcpt_to.push(to);
                        "250 OK\r\n".to_owned()
                    }
                }
            }
            "DATA" => {
                if !reply(&mut writer, "354 end with <CRLF>.<CRLF>\r\n").await {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    match reader.read_until(b'\n', &mut l).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    // Dot-unstuffing: a leading dot was doubled by the client.
                    let l = if l.starts_with(b"..") {
                        &l[1..]
                    } else {
                        &l[..]
                    };
                    data.extend_from_slice(l);
                }
                received
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ReceivedMail {
                        mail_from: std::mem::take(&mut mail_from),
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data,
                    });
                "250 OK queued\r\n".to_owned()
            }
            "QUIT" => {
                let _ = reply(&mut writer, "221 bye\r\n").await;
                return;
            }
            _ => "502 command not implemented\r\n".to_owned(),
        };
        if !reply(&mut writer, &answer).await {
            return;
        }
    }
}

async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    w.write_all(text.as_bytes()).await.is_ok()
}

/// The address inside `<...>` of `MAIL FROM:<a@b> ...` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_default()
}
