//! A Redis Sentinel set-up for the failover tests: one master, one replica
//! (`--replicaof`; or more) and three sentinels (quorum 2, a master is down after 1 s
//! without answers, a failover may take 5 s), all throwaway processes on free
//! ports of 127.0.0.1, each in a temporary directory, killed on drop (and by
//! their watchdogs when the test process dies).

use std::time::{Duration, Instant};

use quern_common::throwaway_redis::{Launch, ThrowawayRedis};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "quern-master";
/// How long a master may not answer before a sentinel deems it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// Two data servers and three sentinels watching them.
#[derive(Debug)]
pub struct SentinelSet {
    /// The data servers; which one is master changes with failovers.
    servers: Vec<ThrowawayRedis>,
    sentinels: Vec<ThrowawayRedis>,
    /// The data servers' password (`requirepass`), if any; the sentinels have none.
    password: Option<String>,
}

fn start(launch: Launch) -> ThrowawayRedis {
    match launch.start() {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

impl SentinelSet {
    /// Start everything and wait until the sentinels see the replica and
    /// each other (a failover needs both). Blocking: call it from
    /// `tokio::task::block_in_place` inside a runtime.
    pub fn start() -> Self {
        Self::start_with_replicas(1)
    }

    /// [`SentinelSet::start`] with `replicas` replicas (with two, the new
    /// master of a failover still has a replica, so writes that wait for one
    /// go on).
    pub fn start_with_replicas(replicas: usize) -> Self {
        Self::launch(replicas, None)
    }

    /// [`SentinelSet::start`] with data servers that require `password`
    /// (`requirepass`, `masterauth`; the sentinels use it too, `sentinel
    /// auth-pass`), and sentinels without one.
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(1, Some(password))
    }

    fn launch(replicas: usize, password: Option<&str>) -> Self {
        let master = start(Launch::default().dir_prefix("quern-test-master-"));
        let mut servers = vec![master];
        for _ in 0..replicas {
            servers.push(start(Launch::default().dir_prefix("quern-test-replica-")));
        }
        let master_port = servers[0].port();
        // Passwords are set once the servers answer PING (the harness's
        // readiness probe), then the replicas follow the master.
        for s in &servers {
            let mut conn =
                redis::Client::open(s.url()).and_then(|c| c.get_connection()).expect("a data server");
            if let Some(pw) = password {
                let _: () =
                    redis::cmd("CONFIG").arg("SET").arg("masterauth").arg(pw).query(&mut conn).unwrap();
                let _: () =
                    redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(pw).query(&mut conn).unwrap();
                let _: () = redis::cmd("AUTH").arg(pw).query(&mut conn).unwrap();
            }
            if s.port() != master_port {
                let _: () =
                    redis::cmd("REPLICAOF").arg("127.0.0.1").arg(master_port).query(&mut conn).unwrap();
            }
        }
        let auth = password.map(|pw| format!("sentinel auth-pass {MASTER_NAME} {pw}\n")).unwrap_or_default();
        let config = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
            port = master_port,
            down = DOWN_AFTER.as_millis()
        );
        let sentinels = (0..3)
            .map(|_| start(Launch::default().dir_prefix("quern-test-sentinel-").sentinel(config.clone())))
            .collect();
        let set = Self { servers, sentinels, password: password.map(str::to_owned) };
        set.wait_until_ready(replicas, Duration::from_secs(30));
        set
    }

    /// `redis://[:password@]127.0.0.1:<port>` of the data server on `port`.
    pub fn data_url(&self, port: u16) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}"),
            None => Self::server_url(port),
        }
    }

    /// `redis+sentinel://127.0.0.1:<a>,127.0.0.1:<b>,127.0.0.1:<c>/quern-master`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port())).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port()).collect()
    }

    /// `redis://127.0.0.1:<port>` of the data server on `port`.
    pub fn server_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    fn sentinel(&self) -> redis::Connection {
        for s in &self.sentinels {
            if let Ok(conn) = redis::Client::open(s.url()).and_then(|c| c.get_connection()) {
                return conn;
            }
        }
        panic!("no sentinel answers");
    }

    /// The port of the master the (first answering) sentinel names now.
    pub fn master_port(&self) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut self.sentinel())
            .expect("the sentinels name a master");
        port
    }

    fn wait_until_ready(&self, replicas: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let Ok(mut conn) = redis::Client::open(s.url()).and_then(|c| c.get_connection()) else {
                    return false;
                };
                let seen: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER_NAME)
                    .query(&mut conn)
                    .unwrap_or_default();
                let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER_NAME)
                    .query(&mut conn)
                    .unwrap_or_default();
                seen.len() == replicas && others.len() == 2
            });
            if ready && self.replicas_in_sync() == replicas {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not see the replica and each other within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn replicas_in_sync(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| {
                redis::Client::open(self.data_url(s.port()))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("INFO").arg("replication").query::<String>(&mut c))
                    .is_ok_and(|info| info.contains("master_link_status:up"))
            })
            .count()
    }

    /// `SENTINEL FAILOVER`: the replica is promoted, the master demoted.
    pub fn failover(&self) {
        let _: () =
            redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME).query(&mut self.sentinel()).unwrap();
    }

    /// `kill -9` the master the sentinels name now; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        let server = self.servers.iter_mut().find(|s| s.port() == port).expect("the master is one of ours");
        server.kill();
        port
    }

    /// Wait until the sentinels name a master other than the one on `old`
    /// and it answers as master; returns its port.
    pub fn wait_for_new_master(&self, old: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let port = self.master_port();
            if port != old && role_at(&self.data_url(port)).as_deref() == Some("master") {
                return port;
            }
            assert!(Instant::now() < deadline, "no new master within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the master on `port` has a replica in sync again (after a
    /// `SENTINEL FAILOVER` the old master follows the new one).
    pub fn wait_for_replica_of(&self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let synced = redis::Client::open(self.data_url(port))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("INFO").arg("replication").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("state=online"));
            if synced {
                return;
            }
            assert!(Instant::now() < deadline, "no replica of 127.0.0.1:{port} within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What `ROLE` answers on the server on `port`: `master`, `slave`, or `None`
/// when it does not answer.
pub fn role_of(port: u16) -> Option<String> {
    role_at(&SentinelSet::server_url(port))
}

/// What `ROLE` answers on the server at `url`.
fn role_at(url: &str) -> Option<String> {
    let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
    match role.first()? {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
