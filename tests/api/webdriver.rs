//! A headless Chromium driven through WebDriver, for tests that use a page the way a person
//! does: click, type, wait for what the page shows.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a port it picks itself (`--port=0`, the
//! port read from its first lines) and opens one session of headless Chromium with an empty
//! profile, no first-run pages and no background networking, so the only requests the browser
//! makes are the test's. [`Browser::client`] is the `fantoccini` client; [`Browser::text`] and
//! [`Browser::wait_for`] read the page with a deadline instead of a fixed sleep. Call
//! [`Browser::close`] at the end; a test that panics first still stops them: chromedriver
//! runs in a process group of its own with the Chromium it starts, and dropping the
//! [`Browser`] kills the whole group (killing chromedriver alone would leave Chromium
//! running).
//!
//! Needs `chromedriver` (`CHROMEDRIVER_BIN`, or on `PATH`) and Chromium (`CHROMIUM_BIN`, or
//! `chromium` on `PATH`); `scripts/test.sh` installs both.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use uuid::Uuid;

use crate::helpers::*;

/// How long a page may take to show what a test waits for.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(20);

/// One chromedriver and the Chromium session it drives.
pub struct Browser {
    client: Client,
    /// chromedriver, leader of the process group its Chromium joins.
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // The group's id is the leader's pid; `-pid` names the group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280×900).
    pub async fn start() -> Browser {
        let driver_bin = tool("CHROMEDRIVER_BIN", "chromedriver");
        let mut driver = tokio::process::Command::new(&driver_bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {driver_bin}: {e} (CHROMEDRIVER_BIN, or chromedriver on PATH; \
                     scripts/test.sh installs it)"
                )
            });
        let stdout = driver
            .stdout
            .take()
            .expect("chromedriver's stdout is piped");
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.expect("chromedriver's output") {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    // Keep draining its output so that chromedriver never blocks on a full pipe.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return port;
                }
            }
            panic!("chromedriver exited before reporting its port")
        })
        .await
        .expect("chromedriver reports its port within 30 s");

        let profile =
            std::env::temp_dir().join(format!("recsys-webdriver-{}", Uuid::new_v4().simple()));
        let chromium = executable(&tool("CHROMIUM_BIN", "chromium"));
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver opens a Chromium session");
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// The WebDriver client of the session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The text of the first element matching `css`, or `None` when there is none (yet).
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits until the text of the element matching `css` satisfies `check`, and returns it.
    pub async fn wait_for(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        eventually(PAGE_DEADLINE, what, || async {
            self.text(css).await.filter(|text| check(text))
        })
        .await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no input {css}: {e}"));
        input.clear().await.expect("the input clears");
        input.send_keys(text).await.expect("the input takes keys");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns what
    /// it returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("the script failed: {e}\n{script}"))
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }

    /// Ends the session (Chromium exits); dropping `self` then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// `name` as a path: itself when it names a file, else the first match on `PATH`
/// (chromedriver wants the browser's path, not a command name).
fn executable(name: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| name.to_string())
}
