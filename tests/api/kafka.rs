//! Apache Kafka clusters of a test's own, for the tests that kill, pause or restart a broker
//! (the others share the local stack's cluster). One helper starts one or more combined
//! broker+controller nodes from the jars `scripts/stack.sh up` fetched (`KAFKA_LIBS`), with the
//! stack's own settings (`scripts/kafka/broker.properties`, `jvm.options`, `log4j2.xml`), in a
//! directory of the test's own. A node binds its client port where the OS says (port 0) and the
//! helper reads the bound port from the node's log; a restarted node keeps that port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use tokio::process::{Child, Command};

/// The repository's `scripts/kafka` folder.
fn kafka_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

/// The Kafka jars (`KAFKA_LIBS`, set by `scripts/test.sh` and `scripts/stack.sh env`).
fn libs() -> String {
    let libs = std::env::var("KAFKA_LIBS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let cache = std::env::var("RECSYS_CACHE").unwrap_or(format!("{home}/.cache/recsys"));
        format!("{cache}/kafka/libs")
    });
    assert!(
        Path::new(&libs).join(".pom-sha256").exists(),
        "no Kafka jars in {libs}: run scripts/stack.sh up"
    );
    format!("{libs}/*")
}

/// The nodes' JVM options: `KAFKA_JVM_OPTS`, or `scripts/kafka/jvm.options`, with the JIT
/// stopped at C1: a test's cluster lives for seconds, too short for C2's compilations to pay
/// back the core they take from the tests running beside it.
fn jvm_options() -> Vec<String> {
    let mut options: Vec<String> = match std::env::var("KAFKA_JVM_OPTS") {
        Ok(options) => options.split_whitespace().map(String::from).collect(),
        Err(_) => std::fs::read_to_string(kafka_scripts().join("jvm.options"))
            .expect("scripts/kafka/jvm.options")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    };
    options.push("-XX:TieredStopAtLevel=1".into());
    options
}

/// One node of a [`KafkaCluster`].
struct Node {
    id: usize,
    /// The client port, once the node bound it.
    port: Option<u16>,
    controller_port: u16,
    child: Option<Child>,
    /// How many times the node was started (its log says "Kafka Server started" once per start).
    launches: usize,
}

/// A cluster of combined Kafka nodes of a test's own; every node is killed when it is dropped,
/// and its directory removed unless the test failed (the node logs stay for a look).
pub struct KafkaCluster {
    dir: PathBuf,
    cluster_id: String,
    nodes: Vec<Node>,
    /// When set, clients reach the nodes only over SASL_SSL with these credentials.
    secured: Option<Secured>,
}

/// A cluster whose only client (and inter-broker) listener is SASL_SSL: TLS with a certificate
/// of the test's own authority, SCRAM-SHA-512 with one user.
#[derive(Clone)]
pub struct Secured {
    /// PEM: the node's private key followed by its certificate.
    pub keystore: PathBuf,
    /// PEM: the authority that signed it.
    pub ca: PathBuf,
    pub username: String,
    pub password: String,
}

impl Secured {
    /// The librdkafka properties a client needs to reach such a cluster.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
            ("sasl.username", self.username.clone()),
            ("sasl.password", self.password.clone()),
            ("ssl.ca.location", self.ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// How long a cluster may take to start.
const START_DEADLINE: Duration = Duration::from_secs(90);

impl KafkaCluster {
    /// Starts `count` nodes (one quorum) and waits until the cluster's metadata lists every
    /// broker. The quorum ports are chosen before the start; if another process takes one in
    /// between, the cluster starts again on new ones.
    pub async fn start(count: usize) -> Self {
        Self::start_with(count, None).await
    }

    /// Starts one node whose clients must use SASL_SSL with `secured`'s credentials.
    pub async fn start_secured(secured: Secured) -> Self {
        Self::start_with(1, Some(secured)).await
    }

    async fn start_with(count: usize, secured: Option<Secured>) -> Self {
        for attempt in 1..=3 {
            let mut cluster = Self::new(count);
            cluster.secured = secured.clone();
            cluster.format().await;
            for node in 0..count {
                cluster.launch(node);
            }
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(e) if e.contains("Address already in use") && attempt < 3 => {
                    eprintln!("kafka cluster: a port was taken ({e}); starting again");
                }
                Err(e) => panic!("kafka cluster in {}: {e}", cluster.dir.display()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn new(count: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("recsys-kafka-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = (1..=count)
            .map(|id| Node {
                id,
                port: None,
                controller_port: crate::helpers::free_port(),
                child: None,
                launches: 0,
            })
            .collect();
        // As Kafka's own `Uuid.randomUuid` does, an id starting with `-` is drawn again: the
        // storage tool would read it as an option (`-t -…`: "expected one argument").
        let cluster_id = std::iter::repeat_with(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        })
        .find(|id| !id.starts_with('-'))
        .expect("an id not starting with '-' comes within a few draws");
        Self {
            dir,
            cluster_id,
            nodes,
            secured: None,
        }
    }

    /// The bootstrap list: every node's client address.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port.expect("the node started")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process id of `node` (0-based).
    pub fn pid(&self, node: usize) -> u32 {
        self.nodes[node]
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the node runs")
    }

    /// Kills `node` with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self, node: usize) {
        let mut child = self.nodes[node].child.take().expect("the node runs");
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
    }

    /// Starts `node` again on its storage and its client port; waits until the cluster lists
    /// every broker again.
    pub async fn restart(&mut self, node: usize) {
        assert!(self.nodes[node].child.is_none(), "the node runs");
        self.launch(node);
        if let Err(e) = self.wait_ready().await {
            panic!("kafka cluster in {}: {e}", self.dir.display());
        }
    }

    fn config_path(&self, node: usize) -> PathBuf {
        self.dir
            .join(format!("node{}.properties", self.nodes[node].id))
    }

    fn log_path(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{}.log", self.nodes[node].id))
    }

    /// Writes `node`'s configuration: the stack's shared settings and the node's own.
    fn write_config(&self, node: usize) {
        let shared = std::fs::read_to_string(kafka_scripts().join("broker.properties"))
            .expect("scripts/kafka/broker.properties");
        let me = &self.nodes[node];
        let voters: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect();
        let replicas = self.nodes.len().min(3);
        let own = format!(
            "\nnode.id={id}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             controller.quorum.voters={voters}\n\
             log.dirs={dir}\n\
             offsets.topic.replication.factor={replicas}\n\
             transaction.state.log.replication.factor={replicas}\n\
             transaction.state.log.min.isr={isr}\n",
            id = me.id,
            port = me.port.unwrap_or(0),
            controller = me.controller_port,
            voters = voters.join(","),
            dir = self.dir.join(format!("data{}", me.id)).display(),
            isr = replicas.min(2),
        );
        let secured = match &self.secured {
            None => String::new(),
            Some(s) => {
                let jaas = format!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required \
                     username=\"{}\" password=\"{}\";",
                    s.username, s.password
                );
                format!(
                    "listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                     inter.broker.listener.name=SASL_SSL\n\
                     listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT\n\
                     sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                     sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
                     listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}\n\
                     ssl.keystore.type=PEM\n\
                     ssl.keystore.location={keystore}\n\
                     ssl.truststore.type=PEM\n\
                     ssl.truststore.location={ca}\n",
                    port = me.port.unwrap_or(0),
                    controller = me.controller_port,
                    keystore = s.keystore.display(),
                    ca = s.ca.display(),
                )
            }
        };
        std::fs::write(self.config_path(node), shared + &own + &secured).unwrap();
    }

    /// Formats every node's storage under the cluster id, the formatters in parallel.
    async fn format(&self) {
        let mut formatters = Vec::new();
        for node in 0..self.nodes.len() {
            self.write_config(node);
            formatters.push(
                Command::new("java")
                    .args([
                        "-XX:TieredStopAtLevel=1",
                        "-XX:+UseSerialGC",
                        "-cp",
                        &libs(),
                    ])
                    .args(["kafka.tools.StorageTool", "format", "-t", &self.cluster_id])
                    .arg("-c")
                    .arg(self.config_path(node))
                    .args(self.secured.iter().flat_map(|s| {
                        [
                            "--add-scram".to_string(),
                            format!(
                                "SCRAM-SHA-512=[name={},password={}]",
                                s.username, s.password
                            ),
                        ]
                    }))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output(),
            );
        }
        for output in futures_util::future::join_all(formatters).await {
            let output = output.expect("java runs");
            assert!(
                output.status.success(),
                "StorageTool format: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts `node`'s JVM, logging to its log file (appended to across restarts).
    fn launch(&mut self, node: usize) {
        self.write_config(node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .unwrap();
        let child = Command::new("java")
            .args(jvm_options())
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                kafka_scripts().join("log4j2.xml").display()
            ))
            .args(["-cp", &libs(), "kafka.Kafka"])
            .arg(self.config_path(node))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("java starts");
        self.nodes[node].child = Some(child);
        self.nodes[node].launches += 1;
    }

    /// Waits until every running node logged its start and its client port, and the metadata
    /// lists every broker; `Err` with the log's last lines when a node exits or time runs out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + START_DEADLINE;
        loop {
            let mut started = true;
            for node in 0..self.nodes.len() {
                if self.nodes[node].child.is_none() {
                    continue;
                }
                let log = std::fs::read_to_string(self.log_path(node)).unwrap_or_default();
                if let Some(status) = self.nodes[node]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    self.nodes[node].child = None;
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(format!(
                        "node {} exited ({status}):\n{}",
                        self.nodes[node].id,
                        tail.join("\n")
                    ));
                }
                if self.nodes[node].port.is_none() {
                    self.nodes[node].port = bound_port(&log, self.nodes[node].controller_port);
                }
                started &= self.nodes[node].port.is_some()
                    && log.matches("Kafka Server started").count() >= self.nodes[node].launches;
            }
            if started && self.lists_every_broker().await {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "not ready within {START_DEADLINE:?} (logs in {})",
                    self.dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the cluster's metadata lists a broker for every node.
    async fn lists_every_broker(&self) -> bool {
        let bootstrap = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| n.port)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let expected = self.nodes.len();
        let properties = self
            .secured
            .as_ref()
            .map(Secured::client_properties)
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let mut config = ClientConfig::new();
            config.set("bootstrap.servers", &bootstrap);
            for (k, v) in &properties {
                config.set(k, v);
            }
            let client: BaseConsumer = config.create().expect("metadata client");
            client
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| m.brokers().len() == expected)
        })
        .await
        .unwrap()
    }
}

/// The client port a node logged (`Awaiting socket connections on 127.0.0.1:PORT.`): the one
/// that is not its quorum port.
fn bound_port(log: &str, controller_port: u16) -> Option<u16> {
    log.lines()
        .filter_map(|l| l.split("Awaiting socket connections on 127.0.0.1:").nth(1))
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .find(|&port| port != controller_port)
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        if std::thread::panicking() {
            eprintln!("kafka cluster logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One member of a consumer group, as the group's coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member id the coordinator gave it (new at every join of a dynamic member).
    pub id: String,
    /// The partitions it was assigned, as `(topic, partition)`.
    pub partitions: Vec<(String, i32)>,
}

/// A consumer group as its coordinator describes it.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead`.
    pub state: String,
    pub members: Vec<Member>,
}

impl Group {
    /// Every partition some member holds.
    pub fn owned(&self) -> std::collections::BTreeSet<(String, i32)> {
        self.members
            .iter()
            .flat_map(|m| m.partitions.iter().cloned())
            .collect()
    }

    /// Whether the group is stable with `members` members that hold every one of `partitions`
    /// (and nothing else) between them, each partition once.
    pub fn covers(&self, members: usize, partitions: &[(String, i32)]) -> bool {
        let held: usize = self.members.iter().map(|m| m.partitions.len()).sum();
        let owned = self.owned();
        self.state == "Stable"
            && self.members.len() == members
            && held == partitions.len()
            && owned.len() == partitions.len()
            && partitions.iter().all(|p| owned.contains(p))
    }
}

/// Describes `group` as its coordinator sees it (`None` while no coordinator answers).
pub async fn describe_group(brokers: &str, group: &str) -> Option<Group> {
    let (brokers, group) = (brokers.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("group client");
        let list = client
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .ok()?;
        let info = list.groups().iter().find(|g| g.name() == group)?;
        Some(Group {
            state: info.state().to_string(),
            members: info
                .members()
                .iter()
                .map(|m| Member {
                    id: m.id().to_string(),
                    partitions: m.assignment().map(parse_assignment).unwrap_or_default(),
                })
                .collect(),
        })
    })
    .await
    .unwrap()
}

/// The partitions of a consumer-protocol assignment: a version (int16), then per topic its name
/// (int16 length, bytes) and partitions (int32 count, int32 each), then user data.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = bytes.split_first_chunk::<N>()?;
        *bytes = rest;
        Some(*head)
    }
    let mut cursor = bytes;
    let mut out = Vec::new();
    let parsed = (|| {
        take::<2>(&mut cursor)?;
        let topics = i32::from_be_bytes(take::<4>(&mut cursor)?);
        for _ in 0..topics.max(0) {
            let len = usize::try_from(i16::from_be_bytes(take::<2>(&mut cursor)?)).ok()?;
            let name = String::from_utf8(cursor.get(..len)?.to_vec()).ok()?;
            cursor = &cursor[len..];
            let count = i32::from_be_bytes(take::<4>(&mut cursor)?);
            for _ in 0..count.max(0) {
                out.push((name.clone(), i32::from_be_bytes(take::<4>(&mut cursor)?)));
            }
        }
        Some(())
    })();
    assert!(parsed.is_some(), "malformed assignment: {bytes:?}");
    out
}

/// Every `(topic, partition)` of `topics`, each with `partitions` partitions.
pub fn all_partitions(topics: &[String], partitions: i32) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.clone(), p)))
        .collect()
}
