//! A headless Chromium driven over W3C WebDriver: Debian's `chromium-driver` (chromedriver)
//! started on a free 127.0.0.1 port, spoken to as JSON over reqwest (the commands a test
//! needs: open a page, find text, run a script, resize, take a screenshot). Stopped on drop.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Why browser tests cannot run here, or `None`. Under CI (or with
/// `KCIDEPLOY_REQUIRE_BROWSER`) a missing browser fails the test instead of skipping it.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = ["chromedriver", "chromium"]
        .into_iter()
        .filter(|b| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let reason = format!(
        "no {} (apt-get install chromium chromium-driver; scripts/test.sh does)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() || std::env::var_os("KCIDEPLOY_REQUIRE_BROWSER").is_some() {
        panic!("{reason}; required, since CI or KCIDEPLOY_REQUIRE_BROWSER is set");
    }
    Some(reason)
}

/// chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// A headless Chromium of `width`×`height`; `javascript: false` turns scripts off.
    pub fn start(width: u32, height: u32, javascript: bool) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            rt,
            client,
        };
        let start = Instant::now();
        while b.call("GET", "/status", None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let prefs = if javascript {
            json!({})
        } else {
            json!({ "profile.managed_default_content_settings.javascript": 2 })
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--disable-crash-reporter", "--no-first-run",
                         format!("--window-size={width},{height}")],
                "prefs": prefs
            }
        }}});
        let v = b.call("POST", "/session", Some(caps)).expect("new session");
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let req = match method {
                "POST" => self.client.post(&url).json(&body.unwrap_or(json!({}))),
                "DELETE" => self.client.delete(&url),
                _ => self.client.get(&url),
            };
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let ok = resp.status().is_success();
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            if ok {
                Ok(v["value"].clone())
            } else {
                Err(format!("{method} {path}: {}", v["value"]))
            }
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Run `script` (a function body; `return` gives the value).
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// What a person reads on the page.
    pub fn text(&self) -> String {
        self.eval("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of the first element matching `selector`, if any.
    pub fn text_of(&self, selector: &str) -> Option<String> {
        let v = self.eval(&format!(
            "var e=document.querySelector({}); return e ? e.innerText : null;",
            json!(selector)
        ));
        v.as_str().map(str::to_string)
    }

    /// Wait until `ok` holds for the page's text.
    pub fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&Browser) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; the page says:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Save a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot");
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Make the window as tall as the page (for a whole-page screenshot).
    pub fn fit_height(&self, width: u32) {
        let h = self
            .eval("return document.documentElement.scrollHeight;")
            .as_u64()
            .unwrap_or(900)
            .min(6000);
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": h + 120 })),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends the browser; then chromedriver.
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
