//! End-to-end support: a real control plane (tests/e2e/cluster.sh), slo-guard as a local
//! process, and kubectl with a recorded transcript.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// What every end-to-end test names, so `use slo_guard_testkit::e2e::*` is all it imports.
pub use crate::{AGENT, HPA_CONTROLLER, free_port, root, slo_guard_bin, text};

/// kubectl (or any tool) run with a control plane's environment (KUBECONFIG, PATH with
/// its tools), every kubectl run recorded in a transcript. A [`Cluster`] has one, and so
/// has each test's [`TestNs`] on a shared cluster.
pub struct Session {
    env: Vec<(String, String)>,
    namespace: String,
    transcript: String,
}

impl Session {
    /// The namespace the test acts in: `payments` (which 00-setup.yaml makes) on a
    /// [`Cluster`] of its own, the test's own namespace in a [`TestNs`].
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The admin kubeconfig cluster.sh wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(key, _)| key == "KUBECONFIG")
            .map(|(_, value)| PathBuf::from(value))
            .expect("cluster.sh printed KUBECONFIG")
    }

    /// `program` with the cluster's environment (KUBECONFIG, PATH with its tools).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs kubectl, recording the command line and what it printed.
    pub fn kubectl(&mut self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl with `stdin` as its input, recording it as [`Session::kubectl`] does.
    pub fn kubectl_with_stdin(&mut self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command("kubectl");
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .expect("kubectl runs (is the e2e bin dir on PATH?)");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("kubectl finishes");
        self.record(args, &output);
        output
    }

    /// `kubectl apply` of `manifest`; fails the test when kubectl does.
    pub fn apply(&mut self, manifest: &str) {
        let output = self.kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
        assert!(
            output.status.success(),
            "kubectl apply failed: {}",
            text(&output.stderr)
        );
    }

    /// `kubectl apply -f path`; fails the test when kubectl does.
    pub fn apply_file(&mut self, path: &Path) {
        let output = self.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
        assert!(
            output.status.success(),
            "kubectl apply -f {} failed: {}",
            path.display(),
            text(&output.stderr)
        );
    }

    /// Records a kubectl run made outside [`Session::kubectl`] (e.g. several at once from
    /// [`Session::command`]) in the transcript, as `kubectl` would.
    pub fn record(&mut self, args: &[&str], output: &Output) {
        let _ = writeln!(
            self.transcript,
            "$ kubectl {}\n{}{}[exit {}]\n",
            args.join(" "),
            text(&output.stdout),
            text(&output.stderr),
            output.status.code().unwrap_or(-1)
        );
    }

    /// Takes what the transcript holds so far, leaving it empty.
    fn take_transcript(&mut self) -> String {
        std::mem::take(&mut self.transcript)
    }
}

/// The control plane, stopped when dropped. It derefs to its [`Session`]: kubectl runs
/// through it are recorded in target/e2e-transcript-<name>.txt.
pub struct Cluster {
    name: &'static str,
    state: tempfile::TempDir,
    session: Session,
}

impl Cluster {
    /// `name` names the transcript file: target/e2e-transcript-<name>.txt.
    pub fn up(name: &'static str) -> Self {
        Self::up_with_env(name, &[])
    }

    /// Like [`Cluster::up`], with extra environment for tests/e2e/cluster.sh (its header
    /// lists the variables).
    pub fn up_with_env(name: &'static str, env: &[(&str, &str)]) -> Self {
        let state = tempfile::Builder::new()
            .prefix("slo-guard-e2e-")
            .tempdir()
            .expect("state dir");
        let output = Command::new("bash")
            .arg(root().join("tests/e2e/cluster.sh"))
            .arg("up")
            .envs(env.iter().copied())
            .env("SLO_GUARD_E2E_STATE", state.path())
            .stderr(Stdio::inherit())
            .output()
            .expect("cluster.sh runs");
        assert!(
            output.status.success(),
            "tests/e2e/cluster.sh up failed (build the tools with tests/e2e/build-tools.sh): {}",
            text(&output.stdout)
        );
        let env = text(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| {
                let value = value.trim_matches(|c| c == '"' || c == '\'');
                // cluster.sh prints PATH as "<bin>:$PATH" for a shell to expand.
                let value = value.replace("$PATH", &std::env::var("PATH").unwrap_or_default());
                (key.to_string(), value)
            })
            .collect::<Vec<_>>();
        assert!(
            env.iter().any(|(key, _)| key == "KUBECONFIG"),
            "cluster.sh printed no KUBECONFIG: {env:?}"
        );
        Self {
            name,
            state,
            session: Session {
                env,
                namespace: "payments".to_string(),
                transcript: String::new(),
            },
        }
    }

    /// The process id of one of the control plane's components (`etcd`,
    /// `kube-apiserver`), from the pid file cluster.sh wrote.
    pub fn pid(&self, component: &str) -> Option<u32> {
        std::fs::read_to_string(
            self.state
                .path()
                .join("pids")
                .join(format!("{component}.pid")),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
    }

    /// The file this cluster's transcript goes to.
    fn transcript_path(&self) -> PathBuf {
        transcript_path(self.name)
    }
}

/// `Deref` and `DerefMut` to the `session` field: kubectl through a [`Cluster`] or a
/// [`TestNs`] runs in its [`Session`].
macro_rules! deref_to_session {
    ($($owner:ty),*) => {$(
        impl std::ops::Deref for $owner {
            type Target = Session;

            fn deref(&self) -> &Session {
                &self.session
            }
        }

        impl std::ops::DerefMut for $owner {
            fn deref_mut(&mut self) -> &mut Session {
                &mut self.session
            }
        }
    )*};
}

deref_to_session!(Cluster, TestNs);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::write(self.transcript_path(), &self.session.transcript);
        let _ = Command::new("bash")
            .arg(root().join("tests/e2e/cluster.sh"))
            .arg("down")
            .env("SLO_GUARD_E2E_STATE", self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// slo-guard as a local process, killed when dropped.
pub struct SloGuard {
    child: Child,
    log: PathBuf,
    /// The operations port: /metrics, /healthz, /readyz over plain HTTP.
    pub metrics_port: u16,
}

impl SloGuard {
    /// Starts `slo-guard serve` on `port` with the certificates in `certs`, its log in
    /// `log`, and waits until it logs that it is ready.
    pub fn start(cluster: &Cluster, port: u16, certs: &Path, log: PathBuf) -> Self {
        Self::start_with_env(cluster, port, certs, log, &[])
    }

    /// Starts with extra environment variables (every flag has one), e.g. the Prometheus URL.
    pub fn start_with_env(
        cluster: &Cluster,
        port: u16,
        certs: &Path,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        let log_file = std::fs::File::create(&log).expect("log file");
        let metrics_port = free_port();
        let child = cluster
            .command(slo_guard_bin())
            .envs(env.iter().copied())
            .args([
                "serve",
                "--watch-configmaps",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("slo-guard starts");
        let guard = Self {
            child,
            log,
            metrics_port,
        };
        guard.wait_for_log("\"message\":\"ready\"", Duration::from_secs(60));
        guard
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its JSON log lines, parsed (lines that are not JSON are left out).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until its log contains `needle`; fails the test after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("slo-guard never logged {needle:?}:\n{}", self.log_text());
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `/metrics` text, from the operations port.
    pub fn metrics_text(&self) -> String {
        let output = Command::new("curl")
            .args(["-sS", "--noproxy", "*"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    }

    /// Kills it and waits for it to exit.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SloGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Deployment `name` in payments that carries an agent's decision context (decision id,
/// reason, confidence 0.9, action scale), with one container.
pub fn agent_deployment(name: &str, replicas: u32, decision_id: &str, reason: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: payments
  labels: {{app: {name}}}
  annotations:
    slo-guard.io/decision-id: "{decision_id}"
    slo-guard.io/reason: "{reason}"
    slo-guard.io/confidence: "0.9"
    slo-guard.io/action: scale
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - {{name: app, image: registry.example.com/payments/{name}:1.0.0}}
"#
    )
}

/// Both local webhook configurations (webhooks/local), pointed at 127.0.0.1:`port`.
pub fn webhooks(port: u16, ca_bundle: &str, failure_policy: &str) -> String {
    [
        "webhooks/local/validating-webhook.yaml",
        "webhooks/local/mutating-webhook.yaml",
    ]
    .iter()
    .map(|file| {
        std::fs::read_to_string(root().join(file))
            .expect("webhook template")
            .replace("${PORT}", &port.to_string())
            .replace("${CA_BUNDLE}", ca_bundle)
            .replace("${FAILURE_POLICY}", failure_policy)
    })
    .collect::<Vec<_>>()
    .join("\n---\n")
}

/// Fails unless kubectl failed with `expected` in its stderr; returns the stderr.
pub fn assert_denied(output: &Output, expected: &str) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a denial, kubectl succeeded: {}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
    stderr
}

/// Fails unless kubectl succeeded.
pub fn assert_allowed(output: &Output) {
    assert!(
        output.status.success(),
        "expected success, kubectl failed:\n{}",
        text(&output.stderr)
    );
}

/// A control plane with slo-guard running behind both webhook configurations.
pub struct Guarded {
    /// The control plane.
    pub cluster: Cluster,
    /// slo-guard, while it runs.
    pub guard: Option<SloGuard>,
    /// The port slo-guard serves the webhooks on.
    pub port: u16,
    /// The CA the webhook configurations trust, base64 PEM.
    pub ca_bundle: String,
    /// The folder with tls.crt and tls.key.
    pub certs: PathBuf,
    /// The test's scratch folder: certificates and slo-guard's logs.
    pub work: tempfile::TempDir,
}

impl Guarded {
    /// Starts the cluster, applies the test identities, makes certificates and starts
    /// slo-guard with failurePolicy Fail.
    pub fn start(name: &'static str) -> Self {
        Self::start_with_env(name, &[])
    }

    /// Like [`Guarded::start`], with extra environment for slo-guard.
    pub fn start_with_env(name: &'static str, env: &[(&str, &str)]) -> Self {
        let mut cluster = Cluster::up(name);
        let work = tempfile::tempdir().expect("work dir");
        cluster.apply_file(&root().join("tests/e2e/capture/manifests/00-setup.yaml"));
        let certs = work.path().join("certs");
        let ca_bundle = make_certs(&cluster, &certs);
        let port = free_port();
        let guard = SloGuard::start_with_env(
            &cluster,
            port,
            &certs,
            work.path().join("slo-guard-0.log"),
            env,
        );
        cluster.apply(&webhooks(port, &ca_bundle, "Fail"));
        Self {
            cluster,
            guard: Some(guard),
            port,
            ca_bundle,
            certs,
            work,
        }
    }

    /// Stops the running slo-guard and starts another process, on `port`, pointing the
    /// webhooks at it.
    pub fn restart_guard(&mut self, port: u16, log_name: &str) {
        if let Some(guard) = self.guard.take() {
            guard.stop();
        }
        let guard = SloGuard::start(
            &self.cluster,
            port,
            &self.certs,
            self.work.path().join(log_name),
        );
        self.port = port;
        let webhooks = webhooks(port, &self.ca_bundle, "Fail");
        self.cluster.apply(&webhooks);
        self.guard = Some(guard);
    }

    /// The running slo-guard.
    pub fn guard(&self) -> &SloGuard {
        self.guard.as_ref().expect("slo-guard is running")
    }
}

/// Retries `attempt` until it succeeds or `timeout` passes, then fails with the last
/// error: watches and caches settle within moments, never instantly.
pub fn retry_until(what: &str, timeout: Duration, mut attempt: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(()) => return,
            Err(last) if std::time::Instant::now() >= deadline => panic!("{what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A CA and a serving certificate for 127.0.0.1 in `dir`, made with `slo-guard certs`;
/// returns the caBundle it printed.
pub fn make_certs(cluster: &Cluster, dir: &Path) -> String {
    make_certs_for(cluster, dir, &[])
}

/// Like [`make_certs`], with extra DNS names in the serving certificate.
pub fn make_certs_for(cluster: &Cluster, dir: &Path, dns_names: &[&str]) -> String {
    let made = cluster
        .command(slo_guard_bin())
        .args(["certs", "--ip", "127.0.0.1"])
        .args(dns_names.iter().flat_map(|name| ["--dns", name]))
        .arg("--out-dir")
        .arg(dir)
        .output()
        .expect("slo-guard certs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    text(&made.stdout).trim().to_string()
}

/// One control plane and one slo-guard (behind both webhook configurations, failurePolicy
/// Fail) shared by every test of a test binary, so each named test pays for no start of
/// its own. Each test works in its own namespace ([`TestNs`]): policies govern the
/// workloads of their own namespace, so tests that run at once do not see each other.
///
/// Statics are never dropped, so nothing in this process can be relied on to stop the
/// cluster at exit: a panic hook does not run on success, `atexit` does not run when the
/// process is killed, and counting finished tests cannot tell the last one when a filter
/// picks some. Instead a reaper (a small `bash` started with the cluster) blocks reading
/// a pipe whose only writing end this process holds (std opens pipes close-on-exec, so
/// no other child inherits it). When this process ends, however it ends (returning from
/// `main`, `exit` after a failed test, a signal, SIGKILL), the kernel closes that end,
/// the reaper reads end of file, kills the slo-guard named in its pid file, runs
/// `cluster.sh down` (etcd and kube-apiserver) and removes the state and work folders.
/// It ignores SIGINT, SIGHUP and SIGTERM, so a Ctrl-C to the whole process group stops
/// the tests but not the clean-up.
struct Shared {
    /// Read-locked by every running [`TestNs::shared`], write-locked by a
    /// [`TestNs::exclusive`] (which may restart slo-guard).
    guarded: RwLock<Guarded>,
    /// Where the reaper finds the pid of the slo-guard to kill.
    pid_file: PathBuf,
    /// The reaper; its stdin is the pipe above, held open until this process exits.
    _reaper: Child,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The transcript files this process has written to: the first write to one replaces
/// what an earlier run left, later ones append.
static TRANSCRIPTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// target/e2e-transcript-`name`.txt.
fn transcript_path(name: &str) -> PathBuf {
    root().join(format!("target/e2e-transcript-{name}.txt"))
}

/// Adds `section` to the transcript file `path`: replacing what an earlier run left on
/// this process's first write to it, appending after. Like the rest of the transcript,
/// best effort (target/ may be elsewhere).
fn write_transcript(path: &Path, section: &str) {
    let mut started = TRANSCRIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let first = !started.iter().any(|known| known == path);
    if first {
        started.push(path.to_path_buf());
    }
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!first)
        .truncate(first)
        .open(path)
        .and_then(|mut file| file.write_all(section.as_bytes()));
}

/// What the reaper runs once the test process has exited (see [`Shared`]).
const REAPER: &str = r#"trap '' INT HUP TERM
cat >/dev/null
kill -KILL "$(cat "$REAPER_PID_FILE" 2>/dev/null)" 2>/dev/null
SLO_GUARD_E2E_STATE="$REAPER_STATE" bash "$REAPER_CLUSTER_SH" down >/dev/null 2>&1
rm -rf "$REAPER_STATE" "$REAPER_WORK"
"#;

impl Shared {
    /// The binary's shared cluster, started on first use; the transcript of its set-up
    /// goes to `name`'s (target/e2e-transcript-`name`.txt).
    fn get(name: &'static str) -> &'static Shared {
        SHARED.get_or_init(|| {
            // Were this to panic, `guarded` would drop while unwinding and stop all.
            let mut guarded = Guarded::start(name);
            let pid_file = guarded.work.path().join("slo-guard.pid");
            write_pid(&pid_file, guarded.guard());
            let reaper = Command::new("bash")
                .args(["-c", REAPER])
                .env("REAPER_PID_FILE", &pid_file)
                .env("REAPER_STATE", guarded.cluster.state.path())
                .env("REAPER_WORK", guarded.work.path())
                .env("REAPER_CLUSTER_SH", root().join("tests/e2e/cluster.sh"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the reaper starts");
            // The set-up's kubectl runs open the transcript; each test appends its own.
            let setup = guarded.cluster.take_transcript();
            write_transcript(&guarded.cluster.transcript_path(), &setup);
            Shared {
                guarded: RwLock::new(guarded),
                pid_file,
                _reaper: reaper,
            }
        })
    }
}

/// Writes `guard`'s pid where the reaper reads it.
fn write_pid(pid_file: &Path, guard: &SloGuard) {
    std::fs::write(pid_file, guard.pid().to_string()).expect("pid file");
}

/// How a [`TestNs`] holds the shared cluster.
enum Hold {
    /// Alongside other tests.
    Shared(RwLockReadGuard<'static, Guarded>),
    /// Alone: no other test runs meanwhile, so it may restart slo-guard.
    Exclusive(RwLockWriteGuard<'static, Guarded>),
}

/// One test's namespace on its binary's shared cluster (see [`Shared`]), in the manner of
/// linkerd2's policy-test `with_temp_ns`: the namespace is made for the test with the
/// grants tests/e2e/capture/manifests/00-setup.yaml gives in `payments` (the agent's Role,
/// the SRE Role, the policy editors' Role and their bindings), so a test written against
/// `payments` runs unchanged in it. It derefs to its own [`Session`], whose transcript is
/// appended to target/e2e-transcript-<transcript>.txt when it drops (also when the test
/// fails). There is one shared cluster per test binary, whatever the transcript names:
/// tests grouped under several names share it too. The namespace is left behind: this control plane has no namespace controller
/// to finish deleting one, and the cluster goes when the binary exits.
pub struct TestNs {
    /// The namespace's name.
    pub name: String,
    session: Session,
    transcript: PathBuf,
    hold: Hold,
}

impl TestNs {
    /// Namespace `namespace` on the binary's shared cluster, while other tests run
    /// alongside; its kubectl runs go to target/e2e-transcript-`transcript`.txt. Starts
    /// the cluster on first use.
    pub fn shared(transcript: &'static str, namespace: &str) -> Self {
        let guarded = &Shared::get(transcript).guarded;
        let hold = guarded.read().unwrap_or_else(PoisonError::into_inner);
        Self::make(transcript, namespace, Hold::Shared(hold))
    }

    /// Like [`TestNs::shared`], but no other test of the binary runs until this one ends:
    /// for a test that restarts slo-guard ([`TestNs::restart_guard`]).
    pub fn exclusive(transcript: &'static str, namespace: &str) -> Self {
        let guarded = &Shared::get(transcript).guarded;
        let hold = guarded.write().unwrap_or_else(PoisonError::into_inner);
        Self::make(transcript, namespace, Hold::Exclusive(hold))
    }

    fn make(transcript: &str, namespace: &str, hold: Hold) -> Self {
        // Two tests in one namespace would see each other's policies and workloads.
        static TAKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            !taken.iter().any(|name| name == namespace),
            "namespace {namespace} is another test's: give each test its own"
        );
        taken.push(namespace.to_string());
        drop(taken);
        let cluster = &Self::guarded_of(&hold).cluster;
        let mut test = Self {
            name: namespace.to_string(),
            session: Session {
                env: cluster.session.env.clone(),
                namespace: namespace.to_string(),
                transcript: String::new(),
            },
            transcript: transcript_path(transcript),
            hold,
        };
        test.apply(&namespace_setup(namespace));
        test
    }

    fn guarded_of(hold: &Hold) -> &Guarded {
        match hold {
            Hold::Shared(guarded) => guarded,
            Hold::Exclusive(guarded) => guarded,
        }
    }

    /// The shared slo-guard, while it runs.
    pub fn guard(&self) -> &SloGuard {
        Self::guarded_of(&self.hold).guard()
    }

    /// The port the shared slo-guard serves the webhooks on.
    pub fn port(&self) -> u16 {
        Self::guarded_of(&self.hold).port
    }

    /// Waits until slo-guard has loaded each policy ConfigMap of `names` in this namespace.
    pub fn wait_for_policies(&self, names: &[&str]) {
        for name in names {
            self.guard().wait_for_log(
                &format!("\"configmap\":\"{}/{name}\"", self.name),
                Duration::from_secs(20),
            );
        }
    }

    /// Stops the shared slo-guard and starts another on `port`, pointing the webhooks at
    /// it, as [`Guarded::restart_guard`]; the reaper then stops the new one at exit. Only
    /// for a test made with [`TestNs::exclusive`]: the others would see the webhooks fail.
    pub fn restart_guard(&mut self, port: u16, log_name: &str) {
        let Hold::Exclusive(guarded) = &mut self.hold else {
            panic!("restart_guard needs TestNs::exclusive: other tests share this slo-guard");
        };
        guarded.restart_guard(port, log_name);
        let shared = SHARED.get().expect("the shared cluster is up");
        write_pid(&shared.pid_file, guarded.guard());
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let section = format!(
            "### namespace {}\n\n{}",
            self.name,
            self.session.take_transcript()
        );
        write_transcript(&self.transcript, &section);
    }
}

/// The documents of tests/e2e/capture/manifests/00-setup.yaml that make and grant in
/// `payments` (the Namespace, the Roles and RoleBindings), made for `namespace` instead.
fn namespace_setup(namespace: &str) -> String {
    let setup = std::fs::read_to_string(root().join("tests/e2e/capture/manifests/00-setup.yaml"))
        .expect("00-setup.yaml");
    let documents: Vec<String> = setup
        .split("\n---\n")
        .filter(|document| {
            document.contains("namespace: payments")
                || (document.contains("kind: Namespace") && document.contains("  name: payments\n"))
        })
        .map(|document| {
            document
                .replace("namespace: payments", &format!("namespace: {namespace}"))
                .replace("  name: payments\n", &format!("  name: {namespace}\n"))
        })
        .collect();
    assert!(
        documents.len() > 1,
        "00-setup.yaml no longer makes payments and its grants"
    );
    documents.join("\n---\n")
}
