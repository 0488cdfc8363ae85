//! README.md's examples, run as written: every ```` ```sh ```` block (and ```` ```python ````
//! block, with the hvac in `.venv` that scripts/test.sh installs), in the order the README gives
//! them, in one bash shell, against a `lessor dev` this test starts; then the server is
//! stopped (it revokes what it issued) and the ```` ```sh cleanup ```` block runs; then nothing the
//! examples made may be left on PostgreSQL or MariaDB.
//!
//! What the test changes, and why each is not a change to what the reader runs:
//! - the dev server listens on a free port rather than 8200 (a developer's own `lessor dev` may
//!   hold 8200), so `127.0.0.1:8200` in the examples is replaced by that address, nothing else;
//! - `cargo run -- ARGS` runs the `lessor` binary cargo built for this test, through a `cargo`
//!   shim first on PATH (running cargo inside a test would rebuild with other features); the
//!   shim refuses any other cargo command, so an example cannot depend on one;
//! - the environment starts without `VAULT_*`, `LESSOR_*` and `PG*` variables, so an example works
//!   only with what the README itself sets.
//!
//! ```` ```bash ```` blocks (the two commands and starting the dev server) are not run: they are
//! what a reader runs before the examples, and what this test does itself. ```` ```toml ````
//! blocks are configuration files: each must load as Lessor's configuration.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A fenced block of README.md: its info string, first line number and text.
#[derive(Debug)]
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (number, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: number + 1,
                    text: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.push(open.take().unwrap()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    blocks
}

/// Names the examples create on the databases; none may exist before the run (the test would
/// otherwise change a developer's own objects) and none may remain after it.
const PG_ROLES: &[&str] = &["app_owner", "reports", "lessor_admin", "app_readonly"];

fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-AtXq",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn mariadb(sql: &str) -> String {
    let output = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e", sql])
        .output()
        .expect("mariadb runs");
    assert!(
        output.status.success(),
        "mariadb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What the examples would leave: their fixed names, and users issued for the roles they issue
/// from (`app-ro`, `app-mysql-ro`; narrow patterns, since other tests issue for roles named
/// `app-<random>` at the same time).
fn made_by_examples() -> String {
    let roles = PG_ROLES
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let pg = psql(&format!(
        "SELECT 'postgres role ' || rolname FROM pg_roles WHERE rolname IN ({roles}) OR rolname LIKE 'v-app-ro-%' \
         UNION ALL SELECT 'postgres database ' || datname FROM pg_database WHERE datname = 'app'"
    ));
    let my = mariadb(
        "SELECT CONCAT('mariadb user ', user) FROM mysql.user WHERE user = 'lessor_admin' OR user LIKE 'v-app-mysql-ro-%' \
         UNION ALL SELECT CONCAT('mariadb database ', schema_name) FROM information_schema.schemata WHERE schema_name = 'app'",
    );
    [pg, my]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` in bash in `dir`, with the shim first on PATH and a clean environment.
fn run_bash(dir: &Path, shim_dir: &Path, script: &str) -> std::process::Output {
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .env("LESSOR_README_BIN", env!("CARGO_BIN_EXE_lessor"))
        .stdin(Stdio::null());
    for keep in ["LANG", "LC_ALL", "TERM"] {
        if let Ok(value) = std::env::var(keep) {
            command.env(keep, value);
        }
    }
    command.output().expect("bash runs")
}

/// `lessor dev`, killed on drop if the test did not stop it.
struct Dev(Option<Child>);

impl Dev {
    /// SIGTERM, as Ctrl-C would: the temporary store makes it revoke every lease it issued.
    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("lessor dev did not stop within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn the_readme_examples_run_as_written_and_clean_up() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let all = blocks(&readme);
    let examples: Vec<&Block> = all
        .iter()
        .filter(|b| b.info == "sh" || b.info == "python")
        .collect();
    let cleanup: Vec<&Block> = all.iter().filter(|b| b.info == "sh cleanup").collect();
    assert!(
        examples.len() >= 5,
        "README.md has {} sh examples",
        examples.len()
    );
    assert_eq!(cleanup.len(), 1, "README.md has one `sh cleanup` block");
    for block in &all {
        assert!(
            matches!(
                block.info.as_str(),
                "sh" | "sh cleanup" | "bash" | "python" | "toml" | ""
            ),
            "README.md line {}: a block marked `{}` is neither run nor known not to be",
            block.line,
            block.info
        );
    }

    let before = made_by_examples();
    assert!(
        before.is_empty(),
        "the README's examples would reuse what already exists; run README.md's `sh cleanup` block first:\n{before}"
    );

    let work = tempfile::tempdir().unwrap();
    let shim_dir = work.path().join("shim");
    std::fs::create_dir(&shim_dir).unwrap();
    let shim = shim_dir.join("cargo");
    std::fs::write(
        &shim,
        "#!/bin/sh\nif [ \"$1\" = run ] && [ \"$2\" = -- ]; then shift 2; exec \"$LESSOR_README_BIN\" \"$@\"; fi\n\
         echo \"tests/readme.rs: README examples may use cargo only as 'cargo run -- ARGS', not: cargo $*\" >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log_path = work.path().join("lessor.log");
    let mut dev = Dev(Some(
        Command::new(env!("CARGO_BIN_EXE_lessor"))
            .args(["dev", "--listen", &addr, "--root-token", "dev-root-token"])
            .env("LESSOR_DEV_POSTGRES_URL", postgres_url())
            .env("LESSOR_DEV_MYSQL_URL", mysql_url())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start lessor dev"),
    ));
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !matches!(
        http.get(format!("http://{addr}/v1/sys/health")).send().await,
        Ok(r) if r.status().is_success()
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lessor dev did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Python examples run with the hvac that scripts/test.sh installs into .venv.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs hvac there for the README's Python example",
        python.display()
    );
    let mut script = String::from("set -eo pipefail\n");
    for block in &examples {
        let text = block.text.replace("127.0.0.1:8200", &addr);
        script.push_str(&format!(">&2 echo '>>> README.md line {}'\n", block.line));
        if block.info == "python" {
            script.push_str(&format!(
                "'{}' - <<'README_PYTHON'\n{text}README_PYTHON\n",
                python.display()
            ));
        } else {
            script.push_str(&format!("{text}\n"));
        }
    }
    let ran = tokio::task::spawn_blocking({
        let dir = work.path().to_path_buf();
        let shim_dir = shim_dir.clone();
        move || run_bash(&dir, &shim_dir, &script)
    })
    .await
    .unwrap();

    dev.stop();
    let cleaned = run_bash(
        work.path(),
        &shim_dir,
        &format!("set -eo pipefail\n{}", cleanup[0].text),
    );
    let left = made_by_examples();

    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        ran.status.success(),
        "a README example failed ({}); the last lines of its output:\n{}\n--- stdout:\n{}\n--- lessor dev log:\n{}",
        ran.status,
        stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&ran.stdout).lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
        std::fs::read_to_string(&log_path).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
    );
    // Every block ran (set -e stops at the first failure, so the last marker proves the rest).
    let last = examples.last().unwrap().line;
    assert!(
        stderr.contains(&format!(">>> README.md line {last}")),
        "{stderr}"
    );
    assert!(
        cleaned.status.success(),
        "the README's cleanup block failed: {}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    assert!(
        left.is_empty(),
        "the README's examples and cleanup left these behind:\n{left}"
    );
    // What the examples claim, checked beyond their exit codes: the credentials they were given
    // read the table the README made.
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(stdout.matches("hello").count() >= 3, "{stdout}");
    // hvac's example printed the username and lease duration it was given.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("v-readonly-") && l.ends_with(" 3600")),
        "{stdout}"
    );
}

/// Every TOML example is a configuration Lessor accepts as it is written (unknown keys and bad
/// values are errors at load).
#[test]
fn the_readme_toml_examples_are_valid_configuration() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let tomls: Vec<Block> = blocks(&readme)
        .into_iter()
        .filter(|b| b.info == "toml")
        .collect();
    assert!(!tomls.is_empty());
    let dir = tempfile::tempdir().unwrap();
    for block in tomls {
        let file = dir.path().join(format!("line-{}.toml", block.line));
        std::fs::write(&file, &block.text).unwrap();
        if let Err(e) = lessor::config::load(Some(&file), &[], &Default::default()) {
            panic!("README.md line {}: {e}", block.line);
        }
    }
}
