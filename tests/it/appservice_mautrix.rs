//! A bot built on a published application-service library, mautrix-python (PyPI `mautrix`,
//! pinned in `tests/appservice/requirements.txt`), attached unchanged to the real node: the
//! node's alias query makes it create a portal room, a user joins through the alias, and the
//! bot answers the user's message as a user of its namespace. The bot is
//! `tests/appservice/mautrix_bot.py`; it prints what it did, one line each, which the test reads.
//!
//! The Python interpreter is `$APPSERVICE_PYTHON` (scripts/test points it at a virtual
//! environment with the requirements), else `python3`. Without the library the test fails and
//! says how to install it.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::appservice_support::{AS_TOKEN, HS_TOKEN, free_port, registration};
use super::support::DOMAIN;
use super::support::matrix::{
    V3, bodies, ok, post, register, send_text, urlencode, user_id, whole_history,
};
use super::support::node::TestNode;

/// How long the bot may take to start (a Python interpreter importing aiohttp) or to act.
const BOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn python() -> String {
    std::env::var("APPSERVICE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The running bot; killed when dropped.
struct Bot {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Bot {
    async fn start(node: &TestNode, port: u16, state: &Path) -> Bot {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import mautrix"])
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        assert!(
            probe.status.success(),
            "{python} cannot import mautrix: install tests/appservice/requirements.txt \
             (scripts/test does, into a virtual environment, and sets APPSERVICE_PYTHON): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("appservice/mautrix_bot.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args(["--node", &format!("http://{}", node.addr())])
            .args(["--domain", DOMAIN, "--port", &port.to_string()])
            .args(["--as-token", AS_TOKEN, "--hs-token", HS_TOKEN])
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the bot with {python}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut bot = Bot {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        };
        bot.expect("READY").await;
        bot
    }

    /// The words of the bot's next line, which must start with `what`.
    async fn expect(&mut self, what: &str) -> Vec<String> {
        let line = tokio::time::timeout(BOT_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the bot did not say `{what}` in time"))
            .expect("read the bot's output")
            .unwrap_or_else(|| panic!("the bot exited before saying `{what}`"));
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert_eq!(words.first().map(String::as_str), Some(what), "{line}");
        words
    }
}

#[tokio::test]
async fn a_mautrix_bot_creates_a_portal_on_an_alias_query_and_answers_as_its_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registrations = dir.path().join("registrations");
    std::fs::create_dir(&registrations).expect("mkdir");
    let port = free_port();
    std::fs::write(
        registrations.join("mbot.yaml"),
        registration(
            "mbot",
            Some(&format!("http://127.0.0.1:{port}")),
            AS_TOKEN,
            HS_TOKEN,
        ),
    )
    .expect("write registration");
    let node = TestNode::spawn_with(|c| c.appservices.dir = Some(registrations)).await;
    let mut bot = Bot::start(&node, port, &dir.path().join("mx-state.json")).await;

    // Joining an unknown alias of the bot's namespace: the node asks the bot, which creates the
    // portal room with that alias as its sender user; the join then proceeds.
    let alice = register(&node, "alice").await;
    let alias = format!("#mbot_portal:{DOMAIN}");
    let joined = ok(post(
        &node,
        &format!("{V3}/join/{}", urlencode(&alias)),
        &alice,
        &json!({}),
    )
    .await);
    let room = joined["room_id"].as_str().expect("room_id").to_owned();
    let portal = bot.expect("portal").await;
    assert_eq!(portal[1..], [alias.clone(), room.clone()]);

    // Alice's message reaches the bot in a transaction; it answers as @mbot_echo, a user of its
    // namespace that it registers and joins on demand (masquerading with ?user_id=).
    let sent = send_text(&node, &alice, &room, "t1", "hello bot").await;
    let echoed = bot.expect("echoed").await;
    assert_eq!(echoed[1..3], [room.clone(), sent]);
    let history = whole_history(&node, &alice, &room).await;
    let reply = history
        .iter()
        .find(|e| e["event_id"] == echoed[3].as_str())
        .unwrap_or_else(|| panic!("the bot's reply is not in the room: {history:?}"));
    assert_eq!(reply["sender"], user_id("mbot_echo"));
    assert_eq!(reply["content"]["body"], "echo: hello bot");
    assert_eq!(bodies(&history), ["hello bot", "echo: hello bot"]);
}
