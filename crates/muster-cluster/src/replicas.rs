//! Replication of the cluster's state: how many copies JetStream keeps of muster's
//! key-value buckets and of its journal stream (`num_replicas`), set with `--replicas`
//! (docs/distributed.md, "Replication").
//!
//! It owns the decision of each bucket's and stream's replica count when a node opens it,
//! and the report of what it found, made or changed. It must not read or write what the
//! buckets and the stream hold.
//!
//! The rule:
//!
//! - a bucket or stream that does not exist is created with the setting: `--replicas N`
//!   gives N; `auto` gives [`AUTO_REPLICAS`] when the server is part of a JetStream
//!   cluster that can place that many (the server is asked by creating with 3: a
//!   cluster of fewer than 3 JetStream servers refuses with `no suitable peers for
//!   placement`, a server outside a cluster with `replicas > 1 not supported`), else 1;
//! - one that exists with the count asked for is used as it is;
//! - one that exists with another count is **updated** to `--replicas N` (JetStream moves
//!   the copies while it serves) and the node says so, naming it with both counts;
//!   `auto` never changes what exists (it keeps the count and says so when it is below
//!   [`AUTO_REPLICAS`] on a clustered server), so a node restarting while a server is down
//!   does not scale anything down;
//! - a count the server cannot place (more replicas than JetStream servers, or any count
//!   above 1 outside a cluster) is refused: [`ClusterError::Replicas`], which the CLI
//!   reports with exit code 2.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use serde::Serialize;

use super::{ClusterConfig, ClusterError};

/// The replica count `auto` creates with on a JetStream cluster that can place it.
pub const AUTO_REPLICAS: usize = 3;

/// The largest replica count JetStream accepts.
pub const MAX_REPLICAS: usize = 5;

/// How many replicas muster's buckets and journal stream have: `--replicas auto|N`.
///
/// # Example
/// ```
/// use muster_cluster::replicas::Replicas;
///
/// assert_eq!("auto".parse::<Replicas>(), Ok(Replicas::Auto));
/// assert_eq!("3".parse::<Replicas>(), Ok(Replicas::Exactly(3)));
/// assert!("6".parse::<Replicas>().is_err());
/// assert_eq!(Replicas::Exactly(3).to_string(), "3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replicas {
    /// Creates with [`AUTO_REPLICAS`] when the JetStream cluster can place them, else 1;
    /// keeps the count of what exists.
    #[default]
    Auto,
    /// Exactly this many (1 to [`MAX_REPLICAS`]): created so, and what exists with another
    /// count is updated to it.
    Exactly(usize),
}

impl FromStr for Replicas {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Replicas::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(Replicas::Exactly(n)),
            _ => Err(format!(
                "`{s}` is not a replica count: give `auto` or a number from 1 to {MAX_REPLICAS}"
            )),
        }
    }
}

impl std::fmt::Display for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replicas::Auto => f.write_str("auto"),
            Replicas::Exactly(n) => write!(f, "{n}"),
        }
    }
}

/// One bucket or stream as a node found, made or changed it.
///
/// # Example
/// ```
/// use muster_cluster::replicas::Placed;
///
/// let p = Placed::bucket("muster_agents", 3, None);
/// assert_eq!(p.stream, "KV_muster_agents");
/// assert_eq!(p.what(), "bucket muster_agents (stream KV_muster_agents)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// `bucket` or `stream`.
    pub kind: &'static str,
    /// The bucket's or the stream's name.
    pub name: String,
    /// The JetStream stream behind it (`KV_<bucket>` for a bucket).
    pub stream: String,
    /// Its replica count as the server reports it now.
    pub replicas: usize,
    /// What this node did against the setting, when it did not simply create or use it:
    /// an update, or a count kept by `auto`, or `auto`'s fallback to 1.
    pub note: Option<String>,
}

impl Placed {
    /// Bucket `name` with `replicas` copies.
    pub fn bucket(name: &str, replicas: usize, note: Option<String>) -> Placed {
        Placed {
            kind: "bucket",
            name: name.to_string(),
            stream: format!("KV_{name}"),
            replicas,
            note,
        }
    }

    /// Stream `name` with `replicas` copies.
    pub fn stream(name: &str, replicas: usize, note: Option<String>) -> Placed {
        Placed {
            kind: "stream",
            name: name.to_string(),
            stream: name.to_string(),
            replicas,
            note,
        }
    }

    /// `bucket NAME (stream KV_NAME)` or `stream NAME`, for messages.
    pub fn what(&self) -> String {
        describe(self.kind, &self.name, &self.stream)
    }
}

fn describe(kind: &str, name: &str, stream: &str) -> String {
    if name == stream {
        format!("{kind} {name}")
    } else {
        format!("{kind} {name} (stream {stream})")
    }
}

/// What a node reports at start: its setting and every bucket and stream it opened.
///
/// # Example
/// ```
/// use muster_cluster::replicas::{Placed, Replicas, Replication};
///
/// let r = Replication {
///     setting: Replicas::Auto,
///     placed: vec![
///         Placed::bucket("muster_agents", 3, None),
///         Placed::stream("MUSTER_JOURNAL", 3, None),
///     ],
/// };
/// assert_eq!(r.replicas(), 3);
/// assert_eq!(r.to_json()["replicas_of"]["MUSTER_JOURNAL"], 3);
/// assert!(r.text().starts_with("replicas: 3 (--replicas auto;"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replication {
    /// The `--replicas` setting.
    pub setting: Replicas,
    /// The buckets and streams, in the order they were opened.
    pub placed: Vec<Placed>,
}

impl Replication {
    /// The fewest replicas any of them has (what a loss of servers is measured against);
    /// 1 when there is none.
    pub fn replicas(&self) -> usize {
        self.placed.iter().map(|p| p.replicas).min().unwrap_or(1)
    }

    /// Appends `other`'s buckets and streams (another part of the same node).
    pub fn extend(&mut self, other: Replication) {
        self.placed.extend(other.placed);
    }

    /// The notes: updates, counts kept, fallbacks.
    pub fn notes(&self) -> Vec<String> {
        self.placed.iter().filter_map(|p| p.note.clone()).collect()
    }

    /// The start line's fields: `replicas` (the fewest), `replicas_setting`,
    /// `replicas_of` (each bucket and stream by name) and `replica_notes`.
    pub fn to_json(&self) -> serde_json::Value {
        let of: BTreeMap<&str, usize> = self
            .placed
            .iter()
            .map(|p| (p.name.as_str(), p.replicas))
            .collect();
        serde_json::json!({
            "replicas": self.replicas(),
            "replicas_setting": self.setting.to_string(),
            "replicas_of": of,
            "replica_notes": self.notes(),
        })
    }

    /// One line: `replicas: 3 (--replicas auto; bucket muster_agents 3, stream
    /// MUSTER_JOURNAL 3)`.
    pub fn text(&self) -> String {
        let each: Vec<String> = self
            .placed
            .iter()
            .map(|p| format!("{} {} {}", p.kind, p.name, p.replicas))
            .collect();
        format!(
            "replicas: {} (--replicas {}; {})",
            self.replicas(),
            self.setting,
            each.join(", ")
        )
    }
}

/// How one bucket or stream is to be opened.
enum Want {
    /// With this many replicas, and the note to report.
    Count(usize, Option<String>),
    /// `auto` on an object that does not exist yet.
    Auto,
}

/// Why an attempt did not work: the server refused the replica count (final), or
/// something that may pass (a leader election, a reconnect, a race with another node).
enum Failed {
    Refused(String),
    Transient(String),
}

/// Opens muster's buckets and streams of one node with the replica setting; keeps what
/// it did for the start line.
pub(crate) struct Placer<'a> {
    js: &'a jetstream::Context,
    config: &'a ClusterConfig,
    /// The server said (INFO `cluster`) that it is part of a cluster.
    clustered: bool,
    /// What `auto` creates with, once a creation has told (the count and why it is not
    /// [`AUTO_REPLICAS`]).
    auto: Option<(usize, Option<String>)>,
    placed: Vec<Placed>,
}

impl<'a> Placer<'a> {
    /// A placer for the node of `config` on `client`.
    pub(crate) fn new(
        js: &'a jetstream::Context,
        client: &async_nats::Client,
        config: &'a ClusterConfig,
    ) -> Self {
        let clustered = client.server_info().cluster.is_some_and(|c| !c.is_empty());
        Placer {
            js,
            config,
            clustered,
            auto: (!clustered).then_some((1, None)),
            placed: Vec::new(),
        }
    }

    /// What was opened, for the start line.
    pub(crate) fn replication(self) -> Replication {
        Replication {
            setting: self.config.replicas,
            placed: self.placed,
        }
    }

    /// Opens (creating or updating) bucket `kv.bucket` with the replica setting. The rest
    /// of `kv` (history, TTL) is applied as given, as it always was.
    pub(crate) async fn bucket(
        &mut self,
        kv: jetstream::kv::Config,
    ) -> Result<jetstream::kv::Store, ClusterError> {
        let name = kv.bucket.clone();
        let stream = format!("KV_{name}");
        let deadline = tokio::time::Instant::now() + self.config.join_timeout;
        loop {
            let outcome = self.try_bucket(&kv, &name, &stream).await;
            if let Some(done) = self
                .settle(outcome, "bucket", &name, &stream, deadline)
                .await
            {
                return done;
            }
        }
    }

    async fn try_bucket(
        &self,
        kv: &jetstream::kv::Config,
        name: &str,
        stream: &str,
    ) -> Result<(jetstream::kv::Store, Placed), Failed> {
        let existing = self.existing(stream).await?;
        let open = |n: usize| {
            let mut kv = kv.clone();
            kv.num_replicas = n;
            async move {
                self.js
                    .create_or_update_key_value(kv)
                    .await
                    .map_err(|e| classify(&e))
            }
        };
        let (store, note) = match self.want("bucket", name, stream, existing.as_ref()) {
            Want::Count(n, note) => (open(n).await?, note),
            Want::Auto => {
                let (n, note) = self.auto_count();
                match open(n).await {
                    Ok(s) => (s, note),
                    Err(Failed::Refused(why)) if n > 1 => (open(1).await?, fall_back(&why)),
                    Err(e) => return Err(e),
                }
            }
        };
        let mut n = store.stream.cached_info().config.num_replicas.max(1);
        let had = existing.map(|s| s.cached_info().config.num_replicas.max(1));
        if had.is_some_and(|m| m != n) {
            n = self
                .settled(stream, n)
                .await?
                .cached_info()
                .config
                .num_replicas
                .max(1);
        }
        Ok((store, Placed::bucket(name, n, note)))
    }

    /// Opens (creating it when absent) stream `config.name` with the replica setting. An
    /// existing stream keeps its other settings; only its replica count may be updated.
    pub(crate) async fn stream(
        &mut self,
        config: jetstream::stream::Config,
    ) -> Result<jetstream::stream::Stream, ClusterError> {
        let name = config.name.clone();
        let deadline = tokio::time::Instant::now() + self.config.join_timeout;
        loop {
            let outcome = self.try_stream(&config).await;
            if let Some(done) = self.settle(outcome, "stream", &name, &name, deadline).await {
                return done;
            }
        }
    }

    async fn try_stream(
        &self,
        config: &jetstream::stream::Config,
    ) -> Result<(jetstream::stream::Stream, Placed), Failed> {
        let name = config.name.as_str();
        let existing = self.existing(name).await?;
        let create = |n: usize| {
            let mut c = config.clone();
            c.num_replicas = n;
            async move { self.js.create_stream(c).await.map_err(|e| classify(&e)) }
        };
        let (stream, note) = match (self.want("stream", name, name, existing.as_ref()), existing) {
            (Want::Count(n, note), Some(s)) => (self.scale(s, n).await?, note),
            (Want::Count(n, note), None) => (create(n).await?, note),
            (Want::Auto, _) => {
                let (n, note) = self.auto_count();
                match create(n).await {
                    Ok(s) => (s, note),
                    Err(Failed::Refused(why)) if n > 1 => (create(1).await?, fall_back(&why)),
                    Err(e) => return Err(e),
                }
            }
        };
        let n = stream.cached_info().config.num_replicas.max(1);
        Ok((stream, Placed::stream(name, n, note)))
    }

    /// A bucket a worker found (it creates none): used as it is, or, with `--replicas N`
    /// and another count, updated to N.
    pub(crate) async fn adjust(
        &mut self,
        store: jetstream::kv::Store,
    ) -> Result<jetstream::kv::Store, ClusterError> {
        let (name, stream) = (store.name.clone(), store.stream_name.clone());
        let deadline = tokio::time::Instant::now() + self.config.join_timeout;
        loop {
            let outcome = match self.try_adjust(&name, &stream).await {
                Ok(placed) => Ok((store.clone(), placed)),
                Err(e) => Err(e),
            };
            if let Some(done) = self
                .settle(outcome, "bucket", &name, &stream, deadline)
                .await
            {
                return done;
            }
        }
    }

    async fn try_adjust(&self, name: &str, stream: &str) -> Result<Placed, Failed> {
        let Some(s) = self.existing(stream).await? else {
            return Err(Failed::Transient(format!(
                "the {} is gone",
                describe("bucket", name, stream)
            )));
        };
        let (n, note) = match self.want("bucket", name, stream, Some(&s)) {
            Want::Count(n, note) => (n, note),
            Want::Auto => (s.cached_info().config.num_replicas.max(1), None),
        };
        let s = self.scale(s, n).await?;
        let n = s.cached_info().config.num_replicas.max(1);
        Ok(Placed::bucket(name, n, note))
    }

    /// `s` with `n` replicas: updated when it has another count (its other settings are
    /// kept).
    async fn scale(
        &self,
        s: jetstream::stream::Stream,
        n: usize,
    ) -> Result<jetstream::stream::Stream, Failed> {
        if s.cached_info().config.num_replicas.max(1) == n {
            return Ok(s);
        }
        let mut c = s.cached_info().config.clone();
        c.num_replicas = n;
        let name = c.name.clone();
        self.js.update_stream(c).await.map_err(|e| classify(&e))?;
        self.settled(&name, n).await
    }

    /// Stream `name` once its `n` copies have moved (a new group is formed and elects its
    /// leader): it takes writes again once it has a leader and its peers are current.
    /// Waits at most the join timeout (then goes on, with a warning).
    async fn settled(&self, name: &str, n: usize) -> Result<jetstream::stream::Stream, Failed> {
        let deadline = tokio::time::Instant::now() + self.config.join_timeout;
        loop {
            if let Some(s) = self.existing(name).await.ok().flatten() {
                let settled = s.cached_info().cluster.as_ref().is_none_or(|c| {
                    c.leader.is_some()
                        && c.replicas.len() + 1 == n
                        && c.replicas.iter().all(|r| r.current)
                });
                if settled || tokio::time::Instant::now() >= deadline {
                    if !settled {
                        tracing::warn!(stream = %name, "its replicas did not settle within the join timeout");
                    }
                    return Ok(s);
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Err(Failed::Transient(format!("stream {name} is gone")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends a retry loop: the value when the attempt worked (its report kept), the error
    /// when the server refused the count or the join timeout passed, None (after 250 ms)
    /// to try again.
    async fn settle<T>(
        &mut self,
        outcome: Result<(T, Placed), Failed>,
        kind: &str,
        name: &str,
        stream: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Result<T, ClusterError>> {
        match outcome {
            Ok((value, placed)) => {
                if self.config.replicas == Replicas::Auto
                    && self.auto.is_none()
                    && let Some(note) = placed.note.as_deref().filter(|n| n.starts_with(AUTO_NOTE))
                {
                    // `auto` fell back: the node's other new buckets and streams get 1
                    // at once, with the same reason.
                    self.auto = Some((placed.replicas, Some(note.to_string())));
                }
                self.placed.push(placed);
                Some(Ok(value))
            }
            Err(Failed::Refused(why)) => Some(Err(ClusterError::Replicas(format!(
                "the {} cannot have {} at {}: {why}",
                describe(kind, name, stream),
                match self.config.replicas {
                    Replicas::Auto => "a single replica".to_string(),
                    Replicas::Exactly(n) => format!("{n} {} (--replicas {n})", plural(n)),
                },
                self.config.url
            )))),
            Err(Failed::Transient(why)) if tokio::time::Instant::now() >= deadline => {
                Some(Err(ClusterError::Nats(format!(
                    "cannot open the {} at {} within {:?}: {why}",
                    describe(kind, name, stream),
                    self.config.url,
                    self.config.join_timeout
                ))))
            }
            Err(Failed::Transient(why)) => {
                tracing::debug!(%name, %why, "opening it again in 250 ms");
                tokio::time::sleep(Duration::from_millis(250)).await;
                None
            }
        }
    }

    /// The stream named `stream`, or None when the server has none.
    async fn existing(&self, stream: &str) -> Result<Option<jetstream::stream::Stream>, Failed> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        match self.js.get_stream(stream).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(Failed::Transient(e.to_string())),
            },
        }
    }

    /// The count to open `name` with, given what exists.
    fn want(
        &self,
        kind: &str,
        name: &str,
        stream: &str,
        existing: Option<&jetstream::stream::Stream>,
    ) -> Want {
        let have = existing.map(|s| s.cached_info().config.num_replicas.max(1));
        let what = describe(kind, name, stream);
        match (self.config.replicas, have) {
            (Replicas::Exactly(n), Some(m)) if m != n => Want::Count(
                n,
                Some(format!(
                    "the {what} had {m} {}, {n} wanted (--replicas {n}): updated to {n}",
                    plural(m)
                )),
            ),
            (Replicas::Exactly(n), _) => Want::Count(n, None),
            (Replicas::Auto, Some(m)) => Want::Count(
                m,
                (self.clustered && m < AUTO_REPLICAS).then(|| {
                    format!(
                        "the {what} has {m} {} on a clustered server: kept (--replicas auto \
                         never changes what exists; --replicas {AUTO_REPLICAS} updates it)",
                        plural(m)
                    )
                }),
            ),
            (Replicas::Auto, None) => Want::Auto,
        }
    }

    /// What `auto` tries first for something new.
    fn auto_count(&self) -> (usize, Option<String>) {
        self.auto.clone().unwrap_or((AUTO_REPLICAS, None))
    }
}

/// How a note on `auto`'s fallback begins.
const AUTO_NOTE: &str = "auto:";

/// The note of a bucket or stream created with 1 replica because the server refused
/// [`AUTO_REPLICAS`].
fn fall_back(why: &str) -> Option<String> {
    Some(format!(
        "{AUTO_NOTE} the server cannot place {AUTO_REPLICAS} replicas ({why}); created with 1"
    ))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "replica" } else { "replicas" }
}

/// Whether the server refused a replica count (no retry helps), and why.
fn classify(err: &(dyn std::error::Error + 'static)) -> Failed {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let code = if let Some(c) = e.downcast_ref::<CreateStreamError>() {
            match c.kind() {
                CreateStreamErrorKind::JetStream(j) => Some(j.error_code()),
                _ => None,
            }
        } else {
            e.downcast_ref::<jetstream::Error>().map(|j| j.error_code())
        };
        match code {
            Some(ErrorCode::CLUSTER_NO_PEERS) | Some(ErrorCode::INSUFFICIENT_RESOURCES) => {
                return Failed::Refused(format!(
                    "{err}; a JetStream cluster needs at least as many servers as replicas"
                ));
            }
            Some(ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED) => {
                return Failed::Refused(format!(
                    "{err}; the server is not part of a JetStream cluster"
                ));
            }
            _ => {}
        }
        cur = e.source();
    }
    Failed::Transient(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_auto_and_one_to_five_and_refuses_the_rest_by_name() {
        assert_eq!("AUTO".parse::<Replicas>(), Ok(Replicas::Auto));
        for n in 1..=5 {
            assert_eq!(n.to_string().parse::<Replicas>(), Ok(Replicas::Exactly(n)));
        }
        for bad in ["0", "6", "-1", "three", ""] {
            let e = bad.parse::<Replicas>().expect_err(bad);
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn the_report_names_each_bucket_and_stream_with_its_count_and_the_fewest_counts() {
        let r = Replication {
            setting: Replicas::Exactly(3),
            placed: vec![
                Placed::bucket("muster_agents", 3, None),
                Placed::stream("MUSTER_JOURNAL", 1, Some("kept".into())),
            ],
        };
        assert_eq!(r.replicas(), 1);
        let j = r.to_json();
        assert_eq!(j["replicas"], 1);
        assert_eq!(j["replicas_setting"], "3");
        assert_eq!(j["replicas_of"]["muster_agents"], 3);
        assert_eq!(j["replica_notes"], serde_json::json!(["kept"]));
        assert_eq!(
            r.text(),
            "replicas: 1 (--replicas 3; bucket muster_agents 3, stream MUSTER_JOURNAL 1)"
        );
        assert_eq!(Replication::default().replicas(), 1);
    }
}
