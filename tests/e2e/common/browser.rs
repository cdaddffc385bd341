//! Debian's Chromium, headless, driven through chromedriver (WebDriver) by
//! fantoccini: the browser side of the browser tests and the side-by-side
//! benchmark. Nothing is downloaded: both binaries come from Debian's packages
//! (`chromium`, `chromium-driver`), installed by `scripts/install-deps.sh`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What the browser answers when a page asks for the camera and microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// Allowed without a prompt (these machines have no devices, so a page
    /// that asks gets "not found" and must fall back).
    Granted,
    /// Refused, as by a person who clicks "Block".
    Refused,
    /// Allowed, with Chromium's fake camera, microphone and screen (its
    /// whole "screen" chosen at once): for sharing a screen from the page.
    FakeCapture,
}

/// One headless Chromium with one page, and the chromedriver that drives it.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh Chromium through it,
    /// which grants the page the camera and microphone when it asks.
    pub fn launch(name: &str) -> Browser {
        Browser::launch_with(name, Devices::Granted)
    }

    /// [`Browser::launch`], choosing what the browser answers a page that asks for devices.
    pub fn launch_with(name: &str, devices: Devices) -> Browser {
        Browser::launch_with_env(name, devices, Vec::<(&str, &str)>::new())
    }

    /// [`Browser::launch_with`], with `env` added to the environment of
    /// chromedriver and so of Chromium (which sound server it plays to, say).
    pub fn launch_with_env<K, V>(
        name: &str,
        devices: Devices,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Browser
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        if let Err(missing) = installed() {
            panic!("{missing}");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = super::fresh_temp_path(&format!("chromium-{name}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": chromium_args(&profile, devices) }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = runtime.block_on(async {
            let started = Instant::now();
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match fantoccini::ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => break client,
                    Err(err) if started.elapsed() < Duration::from_secs(30) => {
                        let _ = err;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(err) => panic!("no Chromium session through chromedriver: {err}"),
                }
            }
        });
        Browser {
            runtime,
            client: Some(client),
            driver,
            profile,
        }
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("the browser is open")
    }

    pub fn open(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|err| panic!("Chromium could not open {url}: {err}"));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    /// Clicks the element with id `element_id` as a person would (a user
    /// gesture, which `getDisplayMedia` needs).
    pub fn click(&self, element_id: &str) {
        self.runtime
            .block_on(async {
                let element = self
                    .client()
                    .find(fantoccini::Locator::Id(element_id))
                    .await?;
                element.click().await
            })
            .unwrap_or_else(|err| panic!("cannot click #{element_id}: {err}"));
    }

    pub fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|err| panic!("the page could not run {script:?}: {err}"))
    }

    /// The page's call state (`waiting`, `in-call`, `refused`, ...).
    pub fn state(&self) -> String {
        self.eval("return window.duet ? window.duet.state() : 'loading';")
            .as_str()
            .unwrap_or("loading")
            .to_owned()
    }

    /// The page's figures, shaped as the native `--stats-json` report.
    pub fn report(&self) -> Value {
        self.eval("return window.duet ? window.duet.report() : null;")
    }

    pub fn text(&self, element_id: &str) -> String {
        self.eval(&format!(
            "const e = document.getElementById('{element_id}'); return e ? e.innerText : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A PNG of the page as it is on screen.
    pub fn screenshot(&self) -> Vec<u8> {
        self.runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot of the page")
    }

    /// Polls `ok` on the page's report until it holds; panics with the last report after `limit`.
    pub fn wait_for_report(&self, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let report = self.report();
            if ok(&report) {
                return report;
            }
            assert!(
                started.elapsed() < limit,
                "the page never got there within {limit:?}; state {}, status {:?}, report {report:#}",
                self.state(),
                self.text("status")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls the page's state until it is `state`.
    pub fn wait_for_state(&self, state: &str, limit: Duration) {
        let started = Instant::now();
        while self.state() != state {
            assert!(
                started.elapsed() < limit,
                "the page never reached {state:?} within {limit:?}: it is {:?}, status {:?}",
                self.state(),
                self.text("status")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Process ids of Chromium (every descendant of its driver), for CPU and memory.
    pub fn process_ids(&self) -> Vec<u32> {
        descendants(self.driver.id())
    }
}

/// Whether Chromium and chromedriver are here; what to do when they are not.
pub fn installed() -> Result<(), String> {
    match [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .find(|binary| !std::path::Path::new(binary).exists())
    {
        Some(binary) => Err(format!(
            "{binary} is missing: run ./scripts/install-deps.sh (Debian's chromium and chromium-driver)"
        )),
        None => Ok(()),
    }
}

/// Every process below `root`, from the parent ids in /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The command name may hold spaces and parentheses: fields resume after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        index += 1;
    }
    found.remove(0);
    found
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Chromium as the platform notes start it here, plus what a call test needs:
/// no network of its own, sound without a click, real host candidates (not
/// mDNS names) so the native peer can reach it on loopback, and no throttling
/// of a page nobody looks at.
fn chromium_args(profile: &std::path::Path, devices: Devices) -> Vec<String> {
    let permission: &[&str] = match devices {
        Devices::Granted => &["--use-fake-ui-for-media-stream"],
        Devices::FakeCapture => &[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--auto-select-desktop-capture-source=Entire screen",
        ],
        // Chromium answers "not found" before asking when there is no device
        // at all: give it its fake camera and microphone, then refuse them.
        Devices::Refused => &[
            "--use-fake-device-for-media-stream",
            "--deny-permission-prompts",
        ],
    };
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--allow-loopback-in-peer-connection",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--window-size=1280,720",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain(permission.iter().map(|a| (*a).to_owned()))
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}
