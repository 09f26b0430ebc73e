//! A real Redis Cluster for tests: `redis-server`s started with
//! `--cluster-enabled yes` on free ports, joined by `redis-cli --cluster
//! create` (3 primaries, and a replica each when asked), killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quern_common::throwaway_redis::{Launch, ThrowawayRedis};

/// A running cluster.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<ThrowawayRedis>,
    /// `redis-cli` flags to reach a TLS node (none for a plain cluster).
    cli_tls: Vec<String>,
}

impl TestCluster {
    /// Start 3 primaries, each with `replicas` replicas, and wait until the
    /// cluster serves every slot. Panics with a clear message on failure.
    pub fn start(replicas: usize) -> Self {
        Self::start_with(replicas, None)
    }

    /// [`TestCluster::start`], every node TLS-only (`--tls-port`, `--port 0`,
    /// `--tls-cluster yes`, `--tls-replication yes`) with the certificates of
    /// `certs`; clients must present a certificate signed by its CA.
    pub fn start_tls(replicas: usize, certs: &crate::tls::TestCerts) -> Self {
        Self::start_with(replicas, Some(certs))
    }

    fn start_with(replicas: usize, certs: Option<&crate::tls::TestCerts>) -> Self {
        let count = 3 * (1 + replicas);
        let cli_tls: Vec<String> = match certs {
            None => Vec::new(),
            Some(c) => vec![
                "--tls".into(),
                "--cacert".into(),
                c.ca().display().to_string(),
                "--cert".into(),
                c.client_cert().display().to_string(),
                "--key".into(),
                c.client_key().display().to_string(),
            ],
        };
        let nodes: Vec<ThrowawayRedis> = (0..count)
            .map(|_| {
                let mut launch = Launch::default().dir_prefix("quern-test-cluster-");
                if let Some(c) = certs {
                    // On the cluster bus and replication links a node is a
                    // client of the others: it presents a client certificate
                    // (the server one is for server authentication only).
                    launch = launch.tls(c.server(true)).args([
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-replication".into(),
                        "yes".into(),
                        "--tls-client-cert-file".into(),
                        c.client_cert().display().to_string(),
                        "--tls-client-key-file".into(),
                        c.client_key().display().to_string(),
                    ]);
                }
                launch
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        // Fast failover in fault tests.
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ])
                    .start()
                    .unwrap_or_else(|e| panic!("cannot start a cluster node: {e}"))
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(&cli_tls).arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = output_within(create.stdin(Stdio::null()), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create (install redis-tools): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, cli_tls };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster.wait_for_replicas(replicas, Duration::from_secs(30));
        cluster
    }

    /// Wait until every live primary has `replicas` replicas online (synced
    /// and streaming), so that replica acknowledgements can be given.
    pub fn wait_for_replicas(&self, replicas: usize, limit: Duration) {
        if replicas == 0 {
            return;
        }
        let deadline = Instant::now() + limit;
        loop {
            let all_synced = self
                .nodes
                .iter()
                .filter(|n| self.is_live(n))
                .map(|n| self.node_cli(n.port(), &["INFO", "replication"]))
                .filter(|info| info.contains("role:master"))
                .all(|info| info.matches("state=online").count() >= replicas);
            if all_synced {
                return;
            }
            assert!(Instant::now() < deadline, "the replicas did not sync within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A URL of one node (quern finds the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// A URL listing every node as a seed.
    pub fn seeds_url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis://{}", hosts.join(","))
    }

    /// The ports of the nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(ThrowawayRedis::port).collect()
    }

    /// `redis-cli -p <port> <args>` on a node of this cluster (with the
    /// TLS flags it needs), its output.
    pub fn node_cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(&self.cli_tls)
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the node answers.
    fn is_live(&self, node: &ThrowawayRedis) -> bool {
        if self.cli_tls.is_empty() {
            quern_common::throwaway_redis::ping(node.addr())
        } else {
            self.node_cli(node.port(), &["PING"]).trim() == "PONG"
        }
    }

    /// `redis-cli -p <port> <args>` (plain text), its output.
    pub fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until every live node says `cluster_state:ok`.
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let all_ok = self
                .nodes
                .iter()
                .filter(|n| self.is_live(n))
                .all(|n| self.node_cli(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if all_ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the primary that serves `key`. Panics if none does.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.try_primary_of(key).unwrap_or_else(|| panic!("no primary serves {key:?}"))
    }

    /// The port of the live primary that serves `key`, as the first live
    /// node sees it; `None` while no primary does (during a failover).
    pub fn try_primary_of(&self, key: &str) -> Option<u16> {
        let live = self.nodes.iter().find(|n| self.is_live(n))?;
        let slot: u16 = self.node_cli(live.port(), &["CLUSTER", "KEYSLOT", key]).trim().parse().ok()?;
        let nodes = self.node_cli(live.port(), &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            for range in &fields[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    return Some(port);
                }
            }
        }
        None
    }

    /// Names (`<stem>0`, `<stem>1`, ...) whose slots fall on three different
    /// primaries: queues spread over every shard.
    pub fn names_on_every_shard(&self, stem: &str) -> Vec<String> {
        let mut by_primary = std::collections::BTreeMap::new();
        for i in 0..500 {
            let name = format!("{stem}{i}");
            by_primary.entry(self.primary_of(&name)).or_insert(name);
            if by_primary.len() == 3 {
                break;
            }
        }
        assert_eq!(by_primary.len(), 3, "names on three shards");
        by_primary.into_values().collect()
    }

    /// Kill -9 the node listening on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port() == port) {
            n.kill();
        }
    }

    /// Move the slot of `key` to the primary on `to`, keys and all, as a
    /// resharding does (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE`,
    /// `CLUSTER SETSLOT ... NODE` on every primary).
    pub fn move_slot(&self, key: &str, to: u16) {
        let from = self.primary_of(key);
        let slot = self.node_cli(from, &["CLUSTER", "KEYSLOT", key]).trim().to_owned();
        let id = |port: u16| self.node_cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let ok =
            |out: String, what: &str| assert!(out.trim() == "OK" || out.trim() == "NOKEY", "{what}: {out}");
        ok(self.node_cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]), "importing");
        ok(self.node_cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]), "migrating");
        loop {
            let keys = self.node_cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(self.node_cli(from, &args), "migrate");
        }
        let mut primaries = vec![to, from];
        for n in &self.nodes {
            let port = n.port();
            if !primaries.contains(&port)
                && self.is_live(n)
                && self.node_cli(port, &["ROLE"]).starts_with("master")
            {
                primaries.push(port);
            }
        }
        for port in primaries {
            ok(self.node_cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]), "setslot node");
        }
    }

    /// Start the node on `port` again (after [`TestCluster::kill`]), with
    /// its `nodes.conf`: it rejoins the cluster, as a replica if its slots
    /// were taken over meanwhile. Panics if it does not start.
    pub fn restart(&mut self, port: u16) {
        let n = self.nodes.iter_mut().find(|n| n.port() == port).expect("a node of this cluster");
        n.restart().unwrap_or_else(|e| panic!("cannot restart the cluster node on port {port}: {e}"));
    }

    /// The ports of the live replicas of the primary on `primary`, as a
    /// live node sees them.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let live = self.nodes.iter().find(|n| self.is_live(n)).expect("a live node");
        let nodes = self.node_cli(live.port(), &["CLUSTER", "NODES"]);
        let port_of =
            |addr: &str| -> u16 { addr.split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0) };
        let lines: Vec<Vec<&str>> =
            nodes.lines().map(|l| l.split(' ').collect::<Vec<_>>()).filter(|f| f.len() >= 8).collect();
        let Some(id) = lines.iter().find(|f| port_of(f[1]) == primary).map(|f| f[0]) else {
            return Vec::new();
        };
        lines
            .iter()
            .filter(|f| f[2].contains("slave") && !f[2].contains("fail") && f[3] == id)
            .map(|f| port_of(f[1]))
            .collect()
    }
}

/// Run `cmd` and collect its output; kill it after `limit` (`redis-cli
/// --cluster create` waits forever for nodes that cannot meet).
fn output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<std::process::Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(std::io::Error::other(format!(
                "still running after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output()
}
