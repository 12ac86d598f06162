//! The domain's one error type: every failure a use case can meet, with its context.
//!
//! Messages are written for the API's client (the edge shows them as they are); sources carry
//! the detail for the log. Only the edge (`app`) maps these to HTTP status codes.

use crate::types::Verb;

/// A boxed error from an adapter, kept as the source so logs show the whole chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kind of backend a [`Error::Backend`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A Kubernetes API server.
    Kubernetes,
    /// Voltron, the management cluster's gateway.
    Voltron,
    /// The OIDC identity provider (Dex).
    IdentityProvider,
    /// The node files backend (exec in entry pods, or local files).
    Files,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kubernetes => "Kubernetes API",
            Self::Voltron => "Voltron",
            Self::IdentityProvider => "identity provider",
            Self::Files => "file backend",
        })
    }
}

/// Everything that can go wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name from the request (path segment, header, query) is not valid.
    #[error("invalid {what} \"{value}\": must be {rule}")]
    InvalidName {
        /// What was being read.
        what: &'static str,
        /// The offending value, escaped and shortened.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },

    /// The caller could not be authenticated.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// Why, without the token.
        reason: String,
    },

    /// Impersonation groups or extras were sent without `Impersonate-User`.
    #[error("missing impersonation headers")]
    MissingImpersonationUser,

    /// The caller may not impersonate what it asked for.
    #[error("{user} is not allowed to impersonate {target}")]
    ImpersonationDenied {
        /// The authenticated caller.
        user: String,
        /// What it asked to impersonate, e.g. `user jane` or `group admins`.
        target: String,
    },

    /// The user may not act on the capture's files.
    #[error("{user} is not authorized to {verb} packetcaptures/files in namespace {namespace}")]
    Forbidden {
        /// The effective user.
        user: String,
        /// The verb checked.
        verb: Verb,
        /// The capture's namespace.
        namespace: String,
    },

    /// `X-Cluster-ID` names no ManagedCluster.
    #[error("managed cluster {id} not found")]
    ClusterNotFound {
        /// The id asked for.
        id: String,
    },

    /// The managed cluster exists but its tunnel is down.
    #[error("managed cluster {id} is not connected")]
    ClusterNotConnected {
        /// The id asked for.
        id: String,
    },

    /// No such PacketCapture.
    #[error("packetcapture {capture} not found")]
    CaptureNotFound {
        /// `{ns}/{name}`.
        capture: String,
    },

    /// A selected node is not a node of the capture.
    #[error("node {node} is not a node of packetcapture {capture}")]
    NodeNotInCapture {
        /// The node asked for.
        node: String,
        /// `{ns}/{name}`.
        capture: String,
    },

    /// The time window asked for is empty or reversed.
    #[error("the time window is empty: since ({since}) must be before until ({until})")]
    EmptyWindow {
        /// `since` as given.
        since: String,
        /// `until` as given.
        until: String,
    },

    /// A packet filter that is refused: too long, blank, or not a pcap-filter expression
    /// (the message is then libpcap's own).
    #[error("{message}")]
    BadFilter {
        /// What is wrong, in the compiler's words where it judged.
        message: String,
    },

    /// Following a running capture needs a file backend that can follow files.
    #[error("this service's file backend cannot follow a running capture")]
    CannotFollow,

    /// A file asked for is not one of the capture's files on that node (or is gone from it).
    #[error("file {file} of node {node} is not a file of packetcapture {capture}")]
    FileNotFound {
        /// The node.
        node: String,
        /// The file's name.
        file: String,
        /// `{ns}/{name}`.
        capture: String,
    },

    /// A capture file is not a pcap file, so it cannot be merged.
    #[error("file {file} on node {node} is not a pcap file: {reason}")]
    NotACapture {
        /// The node.
        node: String,
        /// The file's name.
        file: String,
        /// What was wrong.
        reason: String,
    },

    /// A merge of more streams than the service's whole budget can hold, even from the spool.
    #[error(
        "merging {streams} streams needs more memory than the {budget_mib} MiB the service holds for downloads; choose nodes with ?node= or a shorter window"
    )]
    TooManyStreams {
        /// Streams the selection holds.
        streams: usize,
        /// The memory held for downloads, in MiB.
        budget_mib: u64,
    },

    /// The service is at its limit of node streams or memory for downloads, and the request
    /// could not wait its turn (the queue was full, or it waited too long).
    #[error("the service is busy: {reason}; try again in {} s", retry_after.as_secs())]
    Busy {
        /// What the request waited for, or why it could not wait.
        reason: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },

    /// A merge of streams beyond the live window needs more spool than the download may use.
    #[error(
        "merging {streams} streams needs more than the {limit_mib} MiB of spool a download may use (SPOOL_LIMIT): choose nodes with ?node= or a shorter window"
    )]
    SpoolExhausted {
        /// Streams the merge reads.
        streams: usize,
        /// The spool limit, in MiB.
        limit_mib: u64,
    },

    /// Delete refused: some node has not finished capturing.
    #[error("capture state is not Finished")]
    CaptureNotFinished {
        /// The first node found not finished.
        node: String,
        /// Its state.
        state: String,
    },

    /// Delete refused: some node reports no state.
    #[error("capture state cannot be determined")]
    CaptureStateUnknown {
        /// The first node without a state.
        node: String,
    },

    /// The capture's status holds a value this service will not act on.
    #[error("packetcapture {capture} has an invalid status: {reason}")]
    InvalidStatus {
        /// `{ns}/{name}`.
        capture: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No running entry pod on a node, so its files cannot be reached.
    #[error("no running entry pod found on node {node}")]
    NoEntryPod {
        /// The node.
        node: String,
    },

    /// A backend failed: unreachable or overloaded (`transient`: connection refused, timeout,
    /// 503; worth retrying later), or it answered with a failure.
    #[error("{backend} {} {action}", if *.transient { "unavailable while trying to" } else { "failed to" })]
    Backend {
        /// Which backend.
        backend: Backend,
        /// What the service was doing, e.g. `get packetcapture dev/cap in cluster east`.
        action: String,
        /// True when the backend could not be reached or was overloaded.
        transient: bool,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },

    /// Reading or removing a node's files failed.
    #[error("{action} on node {node} failed")]
    NodeFiles {
        /// The node.
        node: String,
        /// What was done: `reading files`, `listing files`, `removing files`.
        action: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A node's tar stream ended before a well-formed end of archive.
    #[error("the archive from node {node} is incomplete: {reason}")]
    TruncatedArchive {
        /// The node.
        node: String,
        /// What was missing.
        reason: String,
    },

    /// A file could not be read whole (it shrank while read, or could not be opened): the
    /// download fails rather than carry a padded or missing file.
    #[error("file {file} on node {node} could not be read whole: {reason}")]
    FileUnreadable {
        /// The node.
        node: String,
        /// The file's name.
        file: String,
        /// What the node reported.
        reason: String,
    },

    /// A file of a finished capture is not what the download planned from the listing (its
    /// size or time changed, or it is gone): the zip's headers, already computed, would
    /// disagree with its bytes, so the download stops.
    #[error(
        "file {file} on node {node} changed since the download was planned ({reason}); download the capture again"
    )]
    FileChanged {
        /// The node.
        node: String,
        /// The file's name.
        file: String,
        /// What differs.
        reason: String,
    },

    /// A node sent nothing for longer than the idle timeout.
    #[error("node {node} sent nothing for {seconds} s; its read was abandoned")]
    NodeStalled {
        /// The node.
        node: String,
        /// The idle timeout, in seconds.
        seconds: u64,
    },

    /// The spool (the service's scratch files) failed.
    #[error("the download's spool failed to {action}")]
    Spool {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// Writing the zip failed (the zip writer or its deflate thread).
    #[error("writing the zip archive failed")]
    ZipWrite {
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The client went away while its download was being written (nobody is left to answer).
    #[error("the client went away during the download")]
    ClientGone,

    /// The status update kept conflicting with other writers.
    #[error("updating the status of packetcapture {capture} conflicted {tries} times; try again")]
    StatusConflict {
        /// `{ns}/{name}`.
        capture: String,
        /// How many tries were made.
        tries: u32,
    },

    /// A bug: an invariant of this service did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an adapter error as an unavailable backend (worth retrying later).
    pub fn unavailable(
        backend: Backend,
        action: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::backend(backend, action, source).transient()
    }

    /// Wraps an adapter error as a backend that answered with a failure.
    pub fn backend(
        backend: Backend,
        action: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Backend {
            backend,
            action: action.into(),
            transient: false,
            source: source.into(),
        }
    }

    /// The same backend failure, marked worth retrying later; other errors unchanged.
    fn transient(mut self) -> Self {
        if let Self::Backend { transient, .. } = &mut self {
            *transient = true;
        }
        self
    }

    /// The message and every source below it, joined by `: `, for logs.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Any error's message and every source below it, joined by `: `, for logs.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// Shorthand for results in the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;
