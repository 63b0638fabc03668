//! `ops/deploy/deploy` on three hosts of the test's own: network namespaces on a bridge, on
//! addresses from 198.18.0.0/15 that the test gives them (hosts.sh), each with an sshd, all
//! sharing the test's PostgreSQL and SMTP sink. A load generator signs users up through all
//! three hosts while a release rolls out; then a release that never becomes ready is rolled
//! out and rolled back by the tool on the first host; then `rollback` puts every host on its
//! previous release. Needs root, iproute2 and openssh-server (.ci/run installs them); under
//! `CI=true` it fails rather than skip without them.

mod load;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use emailverify::domain::Keyring;
use sha2::Digest;

use crate::connections::which;
use crate::helpers::process::{Ran, run_within};
use crate::helpers::smtp::SinkOptions;
use crate::helpers::{Backend, SmtpSink, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_emailverify");
const HOSTS: usize = 3;

/// The hosts; dropping them kills everything in them and removes every namespace, link and
/// address they were given.
struct Hosts {
    tag: String,
    net: String,
    dir: tempfile::TempDir,
}

impl Hosts {
    fn up() -> Self {
        let n: u32 = rand::random();
        let (tag, net) = (
            format!("{:04x}", n & 0xffff),
            format!("198.18.{}", 1 + (n >> 16) % 254),
        );
        let hosts = Self {
            tag,
            net,
            dir: tempfile::tempdir().unwrap(),
        };
        let dir = hosts.dir.path().to_str().unwrap().to_owned();
        let up = std::process::Command::new("bash")
            .args([
                &script(),
                "up",
                &hosts.tag,
                &hosts.net,
                &dir,
                &HOSTS.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "hosts.sh up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        hosts
    }

    /// The address of host `i` (0-based) and of the test's side of the bridge.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.net, 11 + i)
    }
    fn gateway(&self) -> std::net::Ipv4Addr {
        format!("{}.1", self.net).parse().unwrap()
    }

    /// Host `i`'s folder (the hosts share this machine's file system).
    fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("h{}", i + 1))
    }

    /// `current` and `previous` of host `i`, as release ids.
    fn releases(&self, i: usize) -> (String, String) {
        let of = |link: &str| {
            std::fs::read_link(self.root(i).join(link))
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "none".into())
        };
        (of("current"), of("previous"))
    }

    /// The pid of host `i`'s service and the release its running binary came from; when it
    /// does not run, fails with the end of what it logged.
    fn running(&self, i: usize) -> (u32, String) {
        let pid: u32 = std::fs::read_to_string(self.root(i).join("emailverify.pid"))
            .expect("a pid file")
            .trim()
            .parse()
            .unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| {
            let log =
                std::fs::read_to_string(self.root(i).join("emailverify.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "h{}'s service (pid {pid}) does not run ({e}); the end of its log:\n{}",
                i + 1,
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        });
        let release = exe.parent().unwrap().file_name().unwrap().to_string_lossy();
        (pid, release.into_owned())
    }

    /// Runs the deploy tool against these hosts (at most five minutes).
    async fn deploy(&self, args: &[&str]) -> (Ran, Duration) {
        let started = Instant::now();
        let key = self.dir.path().join("id");
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(repo().join("ops/deploy/deploy"))
            .args(args)
            .args(["--inventory", self.dir.path().join("inventory").to_str().unwrap()])
            .env(
                "DEPLOY_SSH_OPTS",
                format!(
                    "-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                    key.display()
                ),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // Not `run`'s minute: under the whole suite's load a rolling deploy of three hosts
        // (each drained, switched, started and probed) can take longer.
        let ran = run_within(&mut cmd, Duration::from_secs(300)).await;
        (ran, started.elapsed())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let _ = std::process::Command::new("bash")
            .args([&script(), "down", &self.tag, &dir, &HOSTS.to_string()])
            .status();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn script() -> String {
    repo()
        .join("tests/api/deploy/hosts.sh")
        .display()
        .to_string()
}

/// What this test needs of the machine, or what is missing.
fn missing_tools() -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (network namespaces need it)".into());
    }
    let missing: Vec<&str> = ["ip", "ssh", "ssh-keygen", "sha256sum"]
        .into_iter()
        .filter(|p| which(p).is_none())
        .chain(Some("sshd").filter(|_| !Path::new("/usr/sbin/sshd").exists()))
        .collect();
    (!missing.is_empty()).then(|| format!("missing: {}", missing.join(", ")))
}

/// A release: the binary's bytes at `dir/name/emailverify`, and its id (as the tool names it).
fn release(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let path = dir.join(name).join("emailverify");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (path, id[..12].to_owned())
}

/// A host the relay turns away, and until when: its new database connections are closed at
/// once, as when PostgreSQL refuses them (no free slot, or restarting).
type Refuse = std::sync::Arc<std::sync::Mutex<Option<(std::net::IpAddr, Instant)>>>;

/// TCP from the hosts' network to the database server on this machine's loopback.
async fn relay_to(
    target: String,
    ip: std::net::Ipv4Addr,
    refuse: Refuse,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        // Ends when the test aborts it.
        while let Ok((mut inbound, from)) = listener.accept().await {
            let refused = *refuse.lock().unwrap();
            if refused.is_some_and(|(host, until)| host == from.ip() && Instant::now() < until) {
                continue; // dropped: closed before a byte
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, task)
}

fn says(ran: &Ran, what: &str) -> bool {
    ran.stderr.contains(what) || ran.stdout.contains(what)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_deploy_keeps_serving_stops_a_bad_release_at_its_first_host_and_rolls_back() {
    if let Some(why) = missing_tools() {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "CI=true but the deploy test cannot run: {why} (see .ci/run)"
        );
        eprintln!("SKIPPED deploy test: {why}");
        return;
    }
    if !crate::helpers::postgres_available().await {
        return;
    }
    let hosts = Hosts::up();
    let sink = SmtpSink::start_with(SinkOptions {
        ip: hosts.gateway(),
        ..SinkOptions::default()
    })
    .await;
    let db = fresh_database(Backend::Postgres).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let refuse = Refuse::default();
    let (port, relay) = relay_to(target, hosts.gateway(), refuse.clone()).await;
    url.set_host(Some(&hosts.gateway().to_string())).unwrap();
    url.set_port(Some(port)).unwrap();

    let key = Keyring::generate_key_base64();
    let mut inventory = String::new();
    for i in 0..HOSTS {
        let root = hosts.root(i);
        std::fs::create_dir_all(&root).unwrap();
        let addr = hosts.addr(i);
        let settings = [
            ("DATABASE_URL", url.as_str().to_owned()),
            ("EMAILVERIFY_GRPC_ADDR", format!("{addr}:50051")),
            ("EMAILVERIFY_HTTP_ADDR", format!("{addr}:8080")),
            ("EMAILVERIFY_PUBLIC_URL", format!("http://{addr}:8080")),
            ("EMAILVERIFY_MAIL_URL", sink.url()),
            ("EMAILVERIFY_TOKEN_KEYS", key.clone()),
            ("EMAILVERIFY_SHUTDOWN_TIMEOUT", "5s".into()),
            ("NO_COLOR", "1".into()),
        ];
        let env: String = settings
            .iter()
            .map(|(k, v)| format!("{k}='{v}'\n"))
            .collect();
        std::fs::write(root.join("emailverify.env"), env).unwrap();
        inventory += &format!(
            "h{} root@{addr} root={} manager=process\n",
            i + 1,
            root.display()
        );
    }
    std::fs::write(hosts.dir.path().join("inventory"), inventory).unwrap();

    let build = std::fs::read(BIN).unwrap();
    let (a, id_a) = release(hosts.dir.path(), "a", &build);
    // Release B: the same build with bytes appended (an ELF runs with them), so the tool
    // sees a release of its own.
    let (b, id_b) = release(
        hosts.dir.path(),
        "b",
        &[&build[..], b"\0release-b"].concat(),
    );
    // Release C: passes check-config and migrates (it is the same program), but its `serve`
    // hangs and never listens, as a release that cannot become ready does.
    let c_script = format!(
        "#!/bin/sh\ncase \"$1\" in serve) exec sleep 600 ;; *) exec {} \"$@\" ;; esac\n",
        a.display()
    );
    let (c, _) = release(hosts.dir.path(), "c", c_script.as_bytes());
    let ready = |i: usize| format!("http://{}:8080/readyz", hosts.addr(i));
    let http = reqwest::Client::new();

    // 1. The first release, to hosts that run nothing yet.
    let (ran, _) = hosts
        .deploy(&["rollout", "--release", a.to_str().unwrap()])
        .await;
    assert!(ran.status.success(), "first rollout: {}", ran.stderr);
    for i in 0..HOSTS {
        assert_eq!(hosts.releases(i), (id_a.clone(), "none".into()));
        assert_eq!(hosts.running(i).1, id_a);
    }

    // 2. Release B under load through all three hosts.
    let load = load::Load::start((0..HOSTS).map(|i| hosts.addr(i)).collect());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ran, took) = hosts
        .deploy(&[
            "rollout",
            "--release",
            b.to_str().unwrap(),
            "--ready-timeout",
            "30",
        ])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    assert!(ran.status.success(), "rollout under load: {}", ran.stderr);
    eprintln!(
        "DEPLOY FIGURES: release B on {HOSTS} hosts in {:.1} s under load; {} sign-ups: {} saw \
         UNAVAILABLE, {} had a call cut off with its connection (each then retried on another \
         host: OK), {} got any other answer\n{}",
        took.as_secs_f64(),
        report.ok,
        report.saw_unavailable,
        report.cut_off,
        report.failures.len(),
        ran.stderr
    );
    assert!(
        report.failures.is_empty(),
        "answers other than OK/UNAVAILABLE: {:?}",
        report.failures
    );
    assert!(report.ok > 0, "the load generator got answers");
    for i in 0..HOSTS {
        assert_eq!(hosts.releases(i), (id_b.clone(), id_a.clone()));
        assert_eq!(hosts.running(i).1, id_b);
    }
    // Every sign-up's mail arrived, once: one mail per user, none twice.
    let mut inbox = crate::helpers::Inbox::default();
    sink.receive(&mut inbox, report.ok, &db.url).await;
    sink.receive_stragglers(&mut inbox).await;
    let recipients: std::collections::HashSet<_> =
        inbox.mails.iter().map(|m| m.to.join(",")).collect();
    assert_eq!(inbox.duplicates(), 0, "a mail was delivered twice");
    assert_eq!(inbox.mails.len(), report.ok, "one mail per sign-up");
    assert_eq!(recipients.len(), report.ok, "no address got two mails");

    // 3. A release that never becomes ready: the first host goes back, the others are untouched.
    let before: Vec<_> = (0..HOSTS).map(|i| hosts.running(i).0).collect();
    let (ran, _) = hosts
        .deploy(&[
            "rollout",
            "--release",
            c.to_str().unwrap(),
            "--ready-timeout",
            "8",
        ])
        .await;
    assert!(
        !ran.status.success(),
        "a release that is never ready fails the rollout"
    );
    assert!(
        says(&ran, "FAILED on host h1"),
        "names the host: {}",
        ran.stderr
    );
    assert!(
        says(&ran, "not ready within 8s"),
        "says why: {}",
        ran.stderr
    );
    assert!(says(&ran, "rolled back: h1"), "{}", ran.stderr);
    assert_eq!(hosts.releases(0), (id_b.clone(), id_a.clone()));
    assert_eq!(hosts.running(0).1, id_b);
    for (i, pid) in before.iter().enumerate().skip(1) {
        assert_eq!(hosts.running(i).0, *pid, "h{} was not touched", i + 1);
        assert_eq!(hosts.releases(i), (id_b.clone(), id_a.clone()));
    }
    for i in 0..HOSTS {
        let status = http.get(ready(i)).send().await.unwrap().status();
        assert_eq!(status, 200, "h{} is ready after the failed rollout", i + 1);
    }

    // 4. `rollback`: every host back on its previous release. The database turns h1's
    // previous release away for its first 7 s (longer than the service's 5 s connect
    // timeout), so that start exits; the host starts it again, as systemd would, and the
    // rollback goes on. Without that h1 was left with no service (issue 24).
    let pid_file = hosts.root(0).join("emailverify.pid");
    let h1 = hosts.addr(0).parse().unwrap();
    let b_pid = hosts.running(0).0.to_string();
    let watch = {
        let refuse = refuse.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
                if !pid.trim().is_empty() && pid.trim() != b_pid {
                    *refuse.lock().unwrap() = Some((h1, Instant::now() + Duration::from_secs(7)));
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        })
    };
    let (ran, _) = hosts.deploy(&["rollback"]).await;
    assert!(watch.await.unwrap(), "h1 was started again");
    assert!(ran.status.success(), "rollback: {}", ran.stderr);
    assert!(
        says(&ran, "time(s) after it exited"),
        "h1's first start was refused and it was started again: {}",
        ran.stderr
    );
    for i in 0..HOSTS {
        assert_eq!(hosts.releases(i), (id_a.clone(), id_b.clone()));
        assert_eq!(hosts.running(i).1, id_a);
        assert_eq!(http.get(ready(i)).send().await.unwrap().status(), 200);
    }
    let (ran, _) = hosts.deploy(&["status"]).await;
    for i in 0..HOSTS {
        let line = format!("h{} current={id_a} previous={id_b} ready:", i + 1);
        assert!(
            ran.stdout.contains(&line),
            "status says {line}: {}",
            ran.stdout
        );
    }
    relay.abort();
}
