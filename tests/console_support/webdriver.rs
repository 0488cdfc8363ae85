//! A small W3C WebDriver client over reqwest, driving Debian's headless `chromium` through
//! `chromedriver`: only the commands the console tests use (navigate, find, click, type, read
//! text, run a script, cookies, window size, screenshots).
//!
//! `chromedriver` runs in a process group of its own, so the browser it starts goes with it when
//! the driver is dropped: a failing test leaves no browser behind. Both get a `TMPDIR` of their
//! own, removed with the driver: Chromium killed that way leaves its temporary directories
//! (`org.chromium.Chromium.*`) behind otherwise. A missing `chromedriver` is a
//! failure with the command that installs it, never a hang.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver puts element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    /// The driver's and the browser's `TMPDIR`; dropped after the driver is stopped (`Drop`).
    _temporary: tempfile::TempDir,
}

fn find_program(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let candidate = std::path::Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate.display().to_string());
            }
        }
    }
    None
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics with how to install them
    /// when they are missing.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// As [`Browser::start`], for a server whose certificate comes from a test CA the browser
    /// does not know (`acceptInsecureCerts`): the page is still served over TLS, which is what
    /// a test of TLS-only behaviour (a `Secure` cookie) needs.
    pub async fn start_accepting_test_certificates() -> Self {
        Self::launch(true).await
    }

    async fn launch(accept_test_certificates: bool) -> Self {
        let driver_path = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed, so the console's browser tests cannot run; \
                 install it with `apt-get install -y chromium chromium-driver` (scripts/test.sh does)"
            )
        });
        let browser_path = find_program(&["chromium", "chromium-browser"]).unwrap_or_else(|| {
            panic!("chromium is not installed; install it with `apt-get install -y chromium chromium-driver`")
        });
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let temporary = tempfile::tempdir().expect("a temporary directory for the browser");
        let mut command = Command::new(&driver_path);
        command
            .arg(format!("--port={port}"))
            .env("TMPDIR", temporary.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_path}: {e}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            http,
            session: String::new(),
            driver,
            _temporary: temporary,
        };
        let started = Instant::now();
        loop {
            let ready = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()));
            if ready.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on port {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": accept_test_certificates,
            "goog:chromeOptions": {
                "binary": browser_path,
                // Root in a container has no user namespaces for the sandbox.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=en-US"],
            },
        } } });
        let answer: Value = browser
            .http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver: new session")
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver could not start chromium: {answer}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .unwrap_or(Value::Null);
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css` now, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT].as_str().map(|id| Element {
            browser: self,
            id: id.to_owned(),
        })
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_owned(),
            })
            .collect()
    }

    /// Waits up to 10 s for an element matching `css`.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let last = self
                    .post("/element", json!({ "using": "css selector", "value": css }))
                    .await;
                panic!(
                    "no element matches {css:?} at {} (webdriver: {last}); the page is:\n{}",
                    self.current_url().await,
                    self.text_of_page().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the page.
    pub async fn text_of_page(&self) -> String {
        match self.try_find("body").await {
            Some(body) => body.text().await,
            None => String::new(),
        }
    }

    /// Waits up to 10 s for the page text to contain `text`.
    pub async fn wait_for_text(&self, text: &str) {
        let started = Instant::now();
        loop {
            let page = self.text_of_page().await;
            if page.contains(text) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the page at {} never showed {text:?}; it shows:\n{page}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The browser's cookies for the current page, as WebDriver reports them (with `httpOnly`,
    /// `sameSite`, `secure`, `expiry`).
    pub async fn cookies(&self) -> Vec<Value> {
        self.get("/cookie")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `script` (a function body; `return` gives the value) in the page and answers its
    /// value. WebDriver runs it outside the page's Content-Security-Policy, which still forbids
    /// the page's own inline scripts.
    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let encoded = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        // The whole group: chromedriver and any browser it left.
        if let Some(pid) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
    }
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    pub async fn click(&self) {
        self.browser
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await;
    }

    pub async fn clear(&self) {
        self.browser
            .post(&format!("/element/{}/clear", self.id), json!({}))
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser
            .post(
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    /// The element's attribute `name` as WebDriver reports it (`"true"` for a boolean one that
    /// is set), `None` when absent.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .get(&format!("/element/{}/attribute/{name}", self.id))
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// The element's DOM property `name` as text (a field's current `value`).
    pub async fn property(&self, name: &str) -> String {
        match self
            .browser
            .get(&format!("/element/{}/property/{name}", self.id))
            .await
        {
            Value::String(text) => text,
            other => other.to_string(),
        }
    }

    pub async fn text(&self) -> String {
        self.browser
            .get(&format!("/element/{}/text", self.id))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}
