//! The attacker of the `ws` load scenario (`--attack-stub`): one more session that keeps
//! asking protocol stubs run by the node to spin (the probe's `spin` command without a limit:
//! a runaway that loops until its call deadline, over and over) while the PING load runs, and
//! what it saw: the answers by code (504 for a call past its deadline, 503 once the breaker is
//! open) with the time of the first and last of each, and the node's `rethink_stub_*` metrics
//! at the end. The load's latencies, measured at the same time, are the figure of interest:
//! what a runaway stub costs the other sessions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Event, Session, WsStream};
use crate::http::HttpConn;
use crate::runtime::{Clock, Phase};

/// Ids of spin commands start here (control messages use small ids).
const SPIN_ID_BASE: u64 = 1 << 40;
/// How long the final `close` may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the `/metrics` scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the attacker does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttackConfig {
    /// Addresses of stubs run by the node that understand the probe's `spin` command.
    pub(crate) stubs: Vec<String>,
    /// Spin commands per second sent to each stub.
    pub(crate) rate: f64,
}

/// The body of a spin command: no `ms`, so the probe loops until its call deadline.
fn spin_message(id: u64, from: &str, to: &str) -> String {
    json!({"id": id, "type": "spin", "from": from, "to": to, "body": {"op": "spin"}}).to_string()
}

/// Answers of one code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answers {
    pub(crate) count: u64,
    /// Seconds since the run's start of the first and the last.
    pub(crate) first_secs: f64,
    pub(crate) last_secs: f64,
    pub(crate) description: Option<String>,
}

/// What the attacker saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttackReport {
    pub(crate) config: AttackConfig,
    pub(crate) sent: u64,
    /// Answers to spin commands by code.
    pub(crate) answers: BTreeMap<u16, Answers>,
    /// Spin commands without an answer when the run ended (still queued or spinning).
    pub(crate) unanswered: u64,
    /// The node's `rethink_stub_*` samples (histogram buckets left out) after the run, or why
    /// they could not be read.
    pub(crate) metrics: Result<Vec<String>, String>,
    /// Why the attacker's session ended early, if it did.
    pub(crate) failure: Option<String>,
}

/// The running attacker.
#[derive(Debug)]
pub(crate) struct Attacker {
    config: AttackConfig,
    task: JoinHandle<AttackReport>,
}

impl Attacker {
    /// Starts sending on `session` from now until the measured window ends (`clock`), and
    /// reading answers until `Phase::Shutdown`.
    pub(crate) fn spawn(
        session: Session,
        config: AttackConfig,
        clock: std::sync::Arc<Clock>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        Attacker {
            task: tokio::spawn(run(session, config.clone(), clock, phase)),
            config,
        }
    }

    /// Waits for the attacker (after `Phase::Shutdown`), then reads the node's stub metrics
    /// from `http_authority` (`host:port`).
    pub(crate) async fn finish(self, http_authority: &str) -> AttackReport {
        let mut report = match self.task.await {
            Ok(r) => r,
            Err(e) => AttackReport {
                config: self.config,
                sent: 0,
                answers: BTreeMap::new(),
                unanswered: 0,
                metrics: Err("not read".into()),
                failure: Some(format!("the attacker's task failed: {e}")),
            },
        };
        report.metrics = stub_metrics(http_authority).await;
        report
    }
}

async fn run(
    session: Session,
    config: AttackConfig,
    clock: std::sync::Arc<Clock>,
    mut phase: watch::Receiver<Phase>,
) -> AttackReport {
    let Session {
        ws,
        runtime_url,
        hyperty,
        mut last_seq,
    } = session;
    let (mut sink, mut stream) = ws.split();
    let mut report = AttackReport {
        config: config.clone(),
        sent: 0,
        answers: BTreeMap::new(),
        unanswered: 0,
        metrics: Err("not read".into()),
        failure: None,
    };
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let mut next = Instant::now();
    let mut next_id = SPIN_ID_BASE;
    let mut acked = last_seq;
    let mut ctl_id = 3;
    let mut sending = true;
    loop {
        let now_ns = clock.now_ns();
        if sending && now_ns >= clock.window_end_ns {
            sending = false;
        }
        tokio::select! {
            biased;
            changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                Ok(Phase::Run) => {}
                Ok(Phase::StopSending) => sending = false,
                Ok(Phase::Shutdown) | Err(_) => break,
            },
            frame = next_frame(&mut stream) => match frame {
                Ok(text) => {
                    record(&mut report, &text, &clock, &mut last_seq);
                    if last_seq > acked {
                        let ack = client::ack_frame(ctl_id, &runtime_url, last_seq);
                        ctl_id += 1;
                        if let Err(e) = sink.send(Message::text(ack)).await {
                            report.failure = Some(format!("ack failed: {e}"));
                            break;
                        }
                        acked = last_seq;
                    }
                }
                Err(why) => {
                    report.failure = Some(why);
                    break;
                }
            },
            () = tokio::time::sleep_until(next.into()), if sending => {
                for stub in &config.stubs {
                    let frame = spin_message(next_id, &hyperty, stub);
                    next_id += 1;
                    if let Err(e) = sink.feed(Message::text(frame)).await {
                        report.failure = Some(format!("send failed: {e}"));
                        break;
                    }
                    report.sent += 1;
                }
                if let Err(e) = sink.flush().await {
                    report.failure.get_or_insert_with(|| format!("send failed: {e}"));
                }
                if report.failure.is_some() {
                    break;
                }
                next += interval;
            }
        }
    }
    let answered: u64 = report.answers.values().map(|a| a.count).sum();
    report.unanswered = report.sent.saturating_sub(answered);
    let close = client::close_frame(ctl_id, &runtime_url);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        sink.send(Message::text(close)).await?;
        sink.close().await
    })
    .await;
    report
}

/// The next text frame, or why there is none.
async fn next_frame(stream: &mut SplitStream<WsStream>) -> Result<String, String> {
    loop {
        return match stream.next().await {
            None => Err("connection closed by the node".into()),
            Some(Err(e)) => Err(format!("receive failed: {e}")),
            Some(Ok(Message::Text(t))) => Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(Message::Close(f))) => Err(format!(
                "the node closed the session{}",
                f.map_or_else(String::new, |f| format!(": {} {}", f.code, f.reason))
            )),
            Some(Ok(_)) => continue,
        };
    }
}

/// Counts the answers to spin commands in frame `text`.
fn record(report: &mut AttackReport, text: &str, clock: &Clock, last_seq: &mut u64) {
    let at = clock.now_ns() as f64 / 1e9;
    let _ = client::for_each_message(text, |m| {
        *last_seq = (*last_seq).max(m.seq.unwrap_or(0));
        if let Event::Response {
            code,
            id: Some(id),
            description,
        } = m.event
            && id >= SPIN_ID_BASE
        {
            let a = report.answers.entry(code).or_insert_with(|| Answers {
                count: 0,
                first_secs: at,
                last_secs: at,
                description: description.map(|d| d.into_owned()),
            });
            a.count += 1;
            a.last_secs = at;
        }
    });
}

/// The node's `rethink_stub_*` samples, without histogram buckets.
async fn stub_metrics(authority: &str) -> Result<Vec<String>, String> {
    let mut conn = HttpConn::new(authority);
    let response = tokio::time::timeout(
        SCRAPE_TIMEOUT,
        conn.request(Method::GET, "/metrics", None, None),
    )
    .await
    .map_err(|_| format!("GET /metrics: no answer within {SCRAPE_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("GET /metrics: HTTP {}", response.status));
    }
    let text = String::from_utf8_lossy(&response.body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("rethink_stub_") && !l.contains("_bucket"))
        .map(str::to_owned)
        .collect())
}

/// The `host:port` of a `ws://host:port/...` URL.
pub(crate) fn http_authority(ws_url: &str) -> &str {
    let rest = ws_url.strip_prefix("ws://").unwrap_or(ws_url);
    rest.split('/').next().unwrap_or(rest)
}

/// Seconds since `epoch` of `at` (for tests and reports).
#[cfg(test)]
pub(crate) fn secs_since(epoch: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(epoch).as_secs_f64()
}

impl AttackReport {
    /// The report as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let answers: serde_json::Map<String, Value> = self
            .answers
            .iter()
            .map(|(code, a)| {
                (
                    code.to_string(),
                    json!({
                        "count": a.count,
                        "first_secs": crate::report::round2(a.first_secs),
                        "last_secs": crate::report::round2(a.last_secs),
                        "description": a.description,
                    }),
                )
            })
            .collect();
        json!({
            "stubs": self.config.stubs,
            "rate_per_stub": self.config.rate,
            "sent": self.sent,
            "answers": answers,
            "unanswered": self.unanswered,
            "stub_metrics": match &self.metrics {
                Ok(lines) => json!(lines),
                Err(e) => json!({"error": e}),
            },
            "failure": self.failure,
        })
    }
}

impl fmt::Display for AttackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  attack       {} spin commands to {} ({}/s each); {} unanswered at the end",
            self.sent,
            self.config.stubs.join(", "),
            self.config.rate,
            self.unanswered
        )?;
        for (code, a) in &self.answers {
            writeln!(
                f,
                "    answered   {code}: {} (from {:.2} s to {:.2} s) {:?}",
                a.count,
                a.first_secs,
                a.last_secs,
                a.description.as_deref().unwrap_or("")
            )?;
        }
        if let Some(why) = &self.failure {
            writeln!(f, "    failure    {why}")?;
        }
        match &self.metrics {
            Ok(lines) if lines.is_empty() => {
                writeln!(f, "    metrics    no rethink_stub_* samples")
            }
            Ok(lines) => lines
                .iter()
                .try_for_each(|l| writeln!(f, "    metrics    {l}")),
            Err(e) => writeln!(f, "    metrics    not read: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_command_has_no_limit() {
        let v: Value = serde_json::from_str(&spin_message(
            SPIN_ID_BASE,
            "hyperty://d/a",
            "hyperty://d/runaway",
        ))
        .expect("json");
        assert_eq!(v["body"], json!({"op": "spin"}));
        assert_eq!(v["to"], "hyperty://d/runaway");
        assert_eq!(v["id"], SPIN_ID_BASE);
    }

    #[test]
    fn answers_are_counted_by_code_with_times() {
        let epoch = Instant::now();
        let clock = Clock {
            epoch,
            window_start_ns: 0,
            window_end_ns: u64::MAX,
        };
        let mut report = AttackReport {
            config: AttackConfig {
                stubs: vec!["hyperty://d/r".into()],
                rate: 1.0,
            },
            sent: 3,
            answers: BTreeMap::new(),
            unanswered: 0,
            metrics: Ok(vec!["rethink_stub_restarts_total{stub=\"r\"} 2".into()]),
            failure: None,
        };
        let mut seq = 0;
        let id = SPIN_ID_BASE;
        record(
            &mut report,
            &format!(
                r#"[{{"seq":4,"id":{id},"type":"response","body":{{"code":504,"description":"stub r: deadline"}}}},{{"seq":5,"id":3,"type":"response","body":{{"code":200}}}}]"#
            ),
            &clock,
            &mut seq,
        );
        record(
            &mut report,
            &format!(
                r#"{{"seq":6,"id":{},"type":"response","body":{{"code":503}}}}"#,
                id + 1
            ),
            &clock,
            &mut seq,
        );
        assert_eq!(seq, 6);
        assert_eq!(
            report.answers.len(),
            2,
            "the control response is not counted"
        );
        let a = &report.answers[&504];
        assert_eq!(
            (a.count, a.description.as_deref()),
            (1, Some("stub r: deadline"))
        );
        assert!(a.first_secs <= a.last_secs && a.last_secs <= secs_since(epoch, Instant::now()));
        let text = report.to_string();
        assert!(text.contains("504: 1"), "{text}");
        assert!(text.contains("restarts_total"), "{text}");
        assert_eq!(report.to_json()["answers"]["503"]["count"], 1);
    }

    #[test]
    fn authority_of_a_ws_url() {
        assert_eq!(http_authority("ws://127.0.0.1:9000/ws"), "127.0.0.1:9000");
        assert_eq!(http_authority("ws://h:1"), "h:1");
    }
}
